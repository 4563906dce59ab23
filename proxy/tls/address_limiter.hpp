#pragma once
// Limits per client address (server.max_connections_per_address, .max_handshakes_per_address):
// decided right after accept (and after the PROXY header), before any TLS work, so a client
// that opens connections in a loop costs a hash lookup each, not a handshake. Behind a balancer
// the address is the PROXY header's, else every client would share the balancer's.
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "tls/proxy_protocol.hpp"

namespace cbagate::tls {

/**
 * Open connections and new connections per second, per address. Thread-safe (the I/O threads
 * accept connections from one address on different threads): the table is split in shards,
 * each with its own mutex. Memory is bounded by the addresses active within the last second or
 * holding a connection (idle entries are swept as the table is used).
 */
class address_limiter {
 public:
  using clock = std::chrono::steady_clock;

  struct limits {
    std::uint32_t max_connections = 0;        ///< open at once; 0 = no limit
    std::uint32_t handshakes_per_second = 0;  ///< new connections per second (burst as many); 0 = none
  };

  enum class verdict : std::uint8_t { admitted, too_many_connections, too_many_handshakes };

  /** While alive, counts one open connection of its address. Move-only; empty when not counted. */
  class slot {
   public:
    slot() = default;
    slot(slot&& o) noexcept : owner_(o.owner_), key_(o.key_) { o.owner_ = nullptr; }
    slot& operator=(slot&& o) noexcept;
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot() { release(); }
    void release() noexcept;

   private:
    friend class address_limiter;
    address_limiter* owner_ = nullptr;
    std::array<std::uint8_t, 17> key_{};
  };

  struct admission {
    verdict result = verdict::admitted;
    bool log = false;  ///< the first refusal of this address in the log interval: log it
    slot held;         ///< admitted with max_connections: the open connection's count
  };

  /** @param log_interval one log line per address per this interval (no log flood). */
  explicit address_limiter(clock::duration log_interval = std::chrono::minutes(1));

  /** Decides one new connection from `from` (v4-mapped IPv6 counts as IPv4). No limit set:
   *  admitted at once, nothing tracked. */
  admission admit(const net_address& from, const limits& l, clock::time_point now);

  /** The log throttle alone: true for the first call per address in the log interval (for
   *  refusals decided elsewhere, e.g. a peer outside server.proxy_protocol_from). */
  bool should_log(const net_address& from, clock::time_point now);

  /** Addresses tracked now (tests, metrics). */
  std::size_t tracked() const;

 private:
  struct entry {
    std::uint32_t connections = 0;
    double tokens = 0;
    clock::time_point refilled{};
    clock::time_point logged{};
    bool has_logged = false;
  };
  struct key_hash {
    std::size_t operator()(const std::array<std::uint8_t, 17>& k) const noexcept;
  };
  struct shard {
    mutable std::mutex mu;
    std::unordered_map<std::array<std::uint8_t, 17>, entry, key_hash> map;
    std::size_t sweep_at = 64;
  };
  static constexpr std::size_t shard_count = 16;

  shard& shard_of(const std::array<std::uint8_t, 17>& key);
  void close(const std::array<std::uint8_t, 17>& key) noexcept;
  void sweep(shard& s, clock::time_point now, double burst_seconds);

  clock::duration log_interval_;
  std::array<shard, shard_count> shards_;
};

}  // namespace cbagate::tls
