#include "tls/session_cache.hpp"

#include <doctest/doctest.h>

#include <ctime>
#include <memory>
#include <string>

using cbagate::tls::session_cache;

namespace {

// A session with id `id`, created at `created`, resumable for `timeout` seconds.
SSL_SESSION* session(const std::string& id, std::time_t created = std::time(nullptr), long timeout = 300) {
  SSL_SESSION* s = SSL_SESSION_new();
  REQUIRE(s != nullptr);
  REQUIRE(SSL_SESSION_set1_id(s, reinterpret_cast<const unsigned char*>(id.data()),
                              static_cast<unsigned>(id.size())) == 1);
  SSL_SESSION_set_time(s, static_cast<long>(created));
  SSL_SESSION_set_timeout(s, timeout);
  return s;
}

bool holds(session_cache& c, const std::string& id, std::time_t now = std::time(nullptr)) {
  SSL_SESSION* s = c.find(id, now).session;
  if (s == nullptr) return false;
  SSL_SESSION_free(s);
  return true;
}

}  // namespace

TEST_CASE("session_cache: a kept session is found by its id, with its identity and a reference") {
  session_cache c(4);
  SSL_SESSION* kept = session("device-a");
  SSL_SESSION_up_ref(kept);  // ours, to look at it after the cache dropped its own
  auto alice = std::make_shared<cbagate::identity::client_identity>();
  alice->upn = "alice@lab.test";
  c.insert(kept, alice);
  auto hit = c.find("device-a", std::time(nullptr));
  SSL_SESSION* found = hit.session;
  CHECK(found == kept);
  CHECK(hit.identity.get() == alice.get());  // the same object, not a copy
  c.remove("device-a");
  CHECK(c.size() == 0);
  CHECK_FALSE(holds(c, "device-a"));
  // Still valid: the reference find() gave out keeps it alive after the cache dropped it.
  unsigned int len = 0;
  CHECK(std::string(reinterpret_cast<const char*>(SSL_SESSION_get_id(found, &len)), 8) == "device-a");
  SSL_SESSION_free(found);
  SSL_SESSION_free(kept);
  CHECK_FALSE(holds(c, "device-b"));
}

TEST_CASE("session_cache: the least recently used session makes room") {
  session_cache c(2);
  c.insert(session("a"), nullptr);
  c.insert(session("b"), nullptr);
  CHECK(holds(c, "a"));  // a is now the most recently used
  c.insert(session("c"), nullptr);
  CHECK(c.size() == 2);
  CHECK(holds(c, "a"));
  CHECK_FALSE(holds(c, "b"));
  CHECK(holds(c, "c"));
}

TEST_CASE("session_cache: a session past its timeout is not found and is dropped") {
  session_cache c(4);
  const std::time_t t0 = 1'000'000;
  c.insert(session("old", t0, 60), nullptr);
  CHECK(holds(c, "old", t0 + 59));
  CHECK_FALSE(holds(c, "old", t0 + 60));
  CHECK(c.size() == 0);
}

TEST_CASE("session_cache: a session kept again under the same id replaces the first") {
  session_cache c(4);
  SSL_SESSION* first = session("same");
  SSL_SESSION* second = session("same");
  c.insert(first, nullptr);
  c.insert(second, nullptr);
  CHECK(c.size() == 1);
  SSL_SESSION* found = c.find("same", std::time(nullptr)).session;
  CHECK(found == second);
  SSL_SESSION_free(found);
}
