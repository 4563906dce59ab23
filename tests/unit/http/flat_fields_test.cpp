#include "http/flat_fields.hpp"

#include <string>
#include <utility>
#include <vector>

#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>
#include <doctest/doctest.h>

namespace {

namespace bhttp = boost::beast::http;
using cbagate::http::flat_fields;
using field_list = std::vector<std::pair<std::string, std::string>>;

template <class Fields>
field_list dump(const Fields& f) {
  field_list out;
  for (const auto& e : f) out.emplace_back(std::string(e.name_string()), std::string(e.value()));
  return out;
}

// The same inserts into Beast's fields and ours.
template <class Fields>
Fields make(const field_list& in) {
  Fields f;
  for (const auto& [n, v] : in) f.insert(n, v);
  return f;
}

}  // namespace

TEST_CASE("flat_fields: order is kept, duplicates go after their last copy, as Beast keeps them") {
  const field_list in{{"Host", "a"},      {"X-One", "1"},   {"Cookie", "c1"}, {"x-one", "2"},
                      {"Accept", "*/*"},  {"COOKIE", "c2"}, {"X-Two", "t"},   {"X-ONE", " 3 "},
                      {"Host", "b"}};
  const auto ours = make<flat_fields>(in);
  const auto beast = make<bhttp::fields>(in);
  CHECK(dump(ours) == dump(beast));
  CHECK(dump(ours) == field_list{{"Host", "a"},
                                 {"Host", "b"},
                                 {"X-One", "1"},
                                 {"x-one", "2"},
                                 {"X-ONE", "3"},
                                 {"Cookie", "c1"},
                                 {"COOKIE", "c2"},
                                 {"Accept", "*/*"},
                                 {"X-Two", "t"}});
  CHECK(ours.size() == 9);
}

TEST_CASE("flat_fields: lookups by enum, and by name case-insensitively for unknown names") {
  flat_fields f;
  f.insert("Content-Length", "5");
  f.insert("X-Client-UPN", "alice@corp");
  f.insert("x-client-upn", "mallory@corp");
  f.insert("X-Other", "o");
  CHECK(f.find(bhttp::field::content_length)->value() == "5");
  CHECK(f.find("content-LENGTH")->name() == bhttp::field::content_length);
  CHECK(f.count("X-CLIENT-UPN") == 2);
  CHECK(f.count(bhttp::field::host) == 0);
  CHECK(f["X-CLIENT-upn"] == "alice@corp");
  CHECK(f["missing"].empty());
  CHECK(f.find("X-Client-UP") == f.end());
  const auto [first, last] = f.equal_range("x-client-UPN");
  CHECK(last - first == 2);
  CHECK(first->value() == "alice@corp");
  CHECK(f.erase("X-CLIENT-UPN") == 2);
  CHECK(dump(f) == field_list{{"Content-Length", "5"}, {"X-Other", "o"}});
}

TEST_CASE("flat_fields: set replaces every copy and appends; values are trimmed") {
  flat_fields f;
  f.insert("A", "1");
  f.insert("X-Forwarded-For", "evil");
  f.insert("B", "2");
  f.insert("x-forwarded-for", "evil2");
  f.set("X-Forwarded-For", " \t192.0.2.1 ");
  CHECK(dump(f) == field_list{{"A", "1"}, {"B", "2"}, {"X-Forwarded-For", "192.0.2.1"}});
  f.set(bhttp::field::host, "h");
  f.set(bhttp::field::host, f[bhttp::field::host]);  // its own value
  CHECK(f[bhttp::field::host] == "h");
  CHECK(f.count(bhttp::field::host) == 1);
}

TEST_CASE("flat_fields: erase during iteration, as sanitize does") {
  flat_fields f;
  for (int i = 0; i < 40; ++i) f.insert("X-" + std::to_string(i % 7), std::to_string(i));
  bhttp::fields b;
  for (int i = 0; i < 40; ++i) b.insert("X-" + std::to_string(i % 7), std::to_string(i));
  const auto drop = [](const auto& e) { return e.value().size() == 1 || e.name_string() == "X-3"; };
  for (auto it = f.begin(); it != f.end();) it = drop(*it) ? f.erase(it) : std::next(it);
  for (auto it = b.begin(); it != b.end();) it = drop(*it) ? b.erase(it) : std::next(it);
  CHECK(dump(f) == dump(b));
  CHECK(!f.empty());
}

TEST_CASE("flat_fields: reuse across messages keeps the storage and forgets the fields") {
  flat_fields f;
  f.reserve(4096, 32);
  std::string big(3000, 'v');
  f.insert("X-Big", big);
  const char* storage = f.begin()->name_string().data();
  f.clear();
  CHECK(f.empty());
  CHECK(f.find("X-Big") == f.end());
  f.insert("X-Next", "n");
  CHECK(f.begin()->name_string().data() == storage);  // the same bytes, no new allocation
  // Views stay valid while the storage grows (the session holds Host's value across set()).
  const std::string_view next = f["X-Next"];
  for (int i = 0; i < 200; ++i) f.insert("X-Grow-" + std::to_string(i), std::string(100, 'g'));
  f.set("X-Next-Copy", next);
  CHECK(next == "n");
  CHECK(f["X-Next-Copy"] == "n");
  CHECK(f.size() == 202);
  flat_fields copy = f;
  CHECK(dump(copy) == dump(f));
  flat_fields moved = std::move(copy);
  CHECK(dump(moved) == dump(f));
  // The moved-from one is empty and usable.
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move)
  CHECK(copy.capacity() == 0);
  copy.insert("X-After-Move", "ok");
  CHECK(copy["x-after-move"] == "ok");
  moved = std::move(copy);
  CHECK(dump(moved) == field_list{{"X-After-Move", "ok"}});
}

TEST_CASE("flat_fields: Beast's message helpers read it as they read basic_fields") {
  bhttp::request<bhttp::empty_body, flat_fields> ours;
  bhttp::request<bhttp::empty_body> beast;
  for (auto* v : {"close", "keep-alive", "Upgrade, close", "foo", ""}) {
    for (unsigned version : {10U, 11U}) {
      ours.version(version);
      beast.version(version);
      ours.set(bhttp::field::connection, v);
      beast.set(bhttp::field::connection, v);
      CHECK(ours.keep_alive() == beast.keep_alive());
      ours.keep_alive(!ours.keep_alive());
      beast.keep_alive(!beast.keep_alive());
      CHECK(dump(ours) == dump(beast));
    }
  }
  for (auto* te : {"chunked", "gzip, chunked", "chunked, gzip", "identity", ""}) {
    ours.set(bhttp::field::transfer_encoding, te);
    beast.set(bhttp::field::transfer_encoding, te);
    CHECK(ours.chunked() == beast.chunked());
    ours.chunked(true);
    beast.chunked(true);
    CHECK(dump(ours) == dump(beast));
    ours.chunked(false);
    beast.chunked(false);
    CHECK(dump(ours) == dump(beast));
    ours.content_length(42);
    beast.content_length(42);
    CHECK(dump(ours) == dump(beast));
    CHECK(ours.has_content_length() == beast.has_content_length());
  }
  ours.method_string("RPC_IN_DATA");
  beast.method_string("RPC_IN_DATA");
  CHECK(ours.method_string() == beast.method_string());
  ours.method(bhttp::verb::get);
  beast.method(bhttp::verb::get);
  CHECK(ours.method_string() == "GET");
  ours.target("/owa/");
  CHECK(ours.target() == "/owa/");
}
