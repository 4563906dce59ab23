#include "tls/address_limiter.hpp"

#include <algorithm>
#include <cstring>

namespace cbagate::tls {
namespace {

std::array<std::uint8_t, 17> key_of(const net_address& raw) {
  const net_address a = raw.unmapped();
  std::array<std::uint8_t, 17> k{};
  k[0] = static_cast<std::uint8_t>(a.fam);
  std::memcpy(k.data() + 1, a.bytes.data(), 16);
  return k;
}

}  // namespace

std::size_t address_limiter::key_hash::operator()(const std::array<std::uint8_t, 17>& k) const noexcept {
  // FNV-1a: the key is not secret, and a flood from one /64 lands in few shards anyway; the
  // table is still bounded by the addresses that are actually connecting.
  std::size_t h = 1469598103934665603ull;
  for (const std::uint8_t b : k) h = (h ^ b) * 1099511628211ull;
  return h;
}

address_limiter::slot& address_limiter::slot::operator=(slot&& o) noexcept {
  if (this != &o) {
    release();
    owner_ = o.owner_;
    key_ = o.key_;
    o.owner_ = nullptr;
  }
  return *this;
}

void address_limiter::slot::release() noexcept {
  if (owner_ != nullptr) owner_->close(key_);
  owner_ = nullptr;
}

address_limiter::address_limiter(clock::duration log_interval) : log_interval_(log_interval) {}

address_limiter::shard& address_limiter::shard_of(const std::array<std::uint8_t, 17>& key) {
  return shards_[key_hash{}(key) % shard_count];
}

address_limiter::admission address_limiter::admit(const net_address& from, const limits& l,
                                                  clock::time_point now) {
  admission out;
  if (l.max_connections == 0 && l.handshakes_per_second == 0) return out;
  const auto key = key_of(from);
  shard& s = shard_of(key);
  std::lock_guard lock(s.mu);
  const double burst = l.handshakes_per_second;
  // Amortized: a sweep when the shard has doubled since the last one.
  if (s.map.size() >= s.sweep_at) {
    sweep(s, now, burst > 0 ? 1.0 : 0.0);
    s.sweep_at = std::max<std::size_t>(64, 2 * s.map.size());
  }
  auto [it, fresh] = s.map.try_emplace(key);
  entry& e = it->second;
  if (fresh) {
    e.tokens = burst;
    e.refilled = now;
  }
  auto refuse = [&](verdict v) {
    out.result = v;
    if (!e.has_logged || now - e.logged >= log_interval_) {
      e.has_logged = true;
      e.logged = now;
      out.log = true;
    }
    return std::move(out);
  };
  if (l.max_connections != 0 && e.connections >= l.max_connections)
    return refuse(verdict::too_many_connections);
  if (l.handshakes_per_second != 0) {
    const double elapsed = std::chrono::duration<double>(now - e.refilled).count();
    e.tokens = std::min(burst, e.tokens + std::max(0.0, elapsed) * l.handshakes_per_second);
    e.refilled = now;
    if (e.tokens < 1.0) return refuse(verdict::too_many_handshakes);
    e.tokens -= 1.0;
  }
  // The connection is counted whatever the limits (a reload may set max_connections while it
  // is open); the slot gives it back.
  ++e.connections;
  out.held.owner_ = this;
  out.held.key_ = key;
  return out;
}

bool address_limiter::should_log(const net_address& from, clock::time_point now) {
  const auto key = key_of(from);
  shard& s = shard_of(key);
  std::lock_guard lock(s.mu);
  if (s.map.size() >= s.sweep_at) {
    sweep(s, now, 1.0);
    s.sweep_at = std::max<std::size_t>(64, 2 * s.map.size());
  }
  auto [it, fresh] = s.map.try_emplace(key);
  entry& e = it->second;
  if (fresh) e.refilled = now;
  if (e.has_logged && now - e.logged < log_interval_) return false;
  e.has_logged = true;
  e.logged = now;
  return true;
}

void address_limiter::close(const std::array<std::uint8_t, 17>& key) noexcept {
  shard& s = shard_of(key);
  std::lock_guard lock(s.mu);
  const auto it = s.map.find(key);
  if (it == s.map.end()) return;
  if (it->second.connections > 0) --it->second.connections;
}

void address_limiter::sweep(shard& s, clock::time_point now, double burst_seconds) {
  // An entry is forgotten when it holds no connection, its bucket has refilled (one second at
  // most) and it is not inside a log interval: forgetting it then changes no decision.
  std::erase_if(s.map, [&](const auto& kv) {
    const entry& e = kv.second;
    if (e.connections != 0) return false;
    if (burst_seconds > 0 && now - e.refilled < std::chrono::seconds(1)) return false;
    if (e.has_logged && now - e.logged < log_interval_) return false;
    return true;
  });
}

std::size_t address_limiter::tracked() const {
  std::size_t n = 0;
  for (const shard& s : shards_) {
    std::lock_guard lock(s.mu);
    n += s.map.size();
  }
  return n;
}

}  // namespace cbagate::tls
