#include "tls/session_cache.hpp"

#include <algorithm>
#include <cstring>

namespace cbagate::tls {

namespace {

std::string_view id_of(const SSL_SESSION* s) {
  unsigned int len = 0;
  const unsigned char* p = SSL_SESSION_get_id(s, &len);
  return std::string_view(reinterpret_cast<const char*>(p), len);
}

bool expired(const SSL_SESSION* s, std::time_t now) {
  return now >= SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s);
}

}  // namespace

session_cache::session_cache(std::size_t capacity) : capacity_(std::max<std::size_t>(capacity, 1)) {}

session_cache::~session_cache() {
  for (entry& e : lru_) SSL_SESSION_free(e.session);
}

bool session_cache::make_key(std::string_view id, key& out) noexcept {
  if (id.empty() || id.size() > out.bytes.size()) return false;
  std::memcpy(out.bytes.data(), id.data(), id.size());
  out.len = id.size();
  return true;
}

void session_cache::drop(std::list<entry>::iterator it) {
  by_id_.erase(it->k);
  SSL_SESSION_free(it->session);
  lru_.erase(it);
}

void session_cache::insert(SSL_SESSION* s, identity_ptr id) {
  key k;
  if (!make_key(id_of(s), k)) {
    SSL_SESSION_free(s);
    return;
  }
  std::lock_guard lock(mu_);
  if (auto old = by_id_.find(k); old != by_id_.end()) drop(old->second);
  lru_.push_front(entry{k, s, std::move(id)});
  by_id_.emplace(k, lru_.begin());
  while (lru_.size() > capacity_) drop(std::prev(lru_.end()));
}

session_cache::found session_cache::find(std::string_view id, std::time_t now) {
  key k;
  if (!make_key(id, k)) return {};
  std::lock_guard lock(mu_);
  const auto hit = by_id_.find(k);
  if (hit == by_id_.end()) return {};
  const auto it = hit->second;
  if (expired(it->session, now)) {
    drop(it);
    return {};
  }
  lru_.splice(lru_.begin(), lru_, it);
  // The reference is taken under the lock: another thread may evict the entry right after.
  SSL_SESSION_up_ref(it->session);
  return {it->session, it->identity};
}

void session_cache::remove(std::string_view id) {
  key k;
  if (!make_key(id, k)) return;
  std::lock_guard lock(mu_);
  if (const auto hit = by_id_.find(k); hit != by_id_.end()) drop(hit->second);
}

std::size_t session_cache::size() const {
  std::lock_guard lock(mu_);
  return lru_.size();
}

}  // namespace cbagate::tls
