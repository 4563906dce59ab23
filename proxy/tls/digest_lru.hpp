#pragma once
// A bounded map keyed by a SHA-256 digest, least recently used first out: the chain cache's
// verified identities and the certificate memo's decoded certificates. Eight shards, each with
// its own mutex, recency list and index, so I/O threads rarely wait on one another.
#include <algorithm>
#include <array>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace cbagate::tls {

template <class Value>
class digest_lru {
 public:
  using key = std::array<unsigned char, 32>;

  /** At most `capacity` entries in all (at least one per shard). */
  explicit digest_lru(std::size_t capacity)
      : per_shard_(std::max<std::size_t>(1, capacity / shard_count)) {}

  /**
   * Calls `use(Value&)` under the shard's lock when `k` is there; when it returns true the
   * entry becomes the most recently used and find returns true.
   */
  template <class Use>
  bool find(const key& k, Use&& use) {
    shard& s = shard_of(k);
    std::lock_guard lock(s.mu);
    auto it = s.index.find(k);
    if (it == s.index.end() || !use(it->second->value)) return false;
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return true;
  }

  /**
   * Adds `v` under `k` as the most recently used. When `k` is there already, `replace` puts `v`
   * in its place, else the first stays. Returns what left the map (the evicted least recently
   * used value, the replaced one, or `v` itself when it was not taken), so that the caller
   * destroys it outside the lock.
   */
  std::optional<Value> put(const key& k, Value v, bool replace) {
    std::optional<Value> out;
    shard& s = shard_of(k);
    std::lock_guard lock(s.mu);
    if (auto it = s.index.find(k); it != s.index.end()) {
      if (!replace) {
        out.emplace(std::move(v));
        return out;
      }
      out.emplace(std::exchange(it->second->value, std::move(v)));
      s.lru.splice(s.lru.begin(), s.lru, it->second);
      return out;
    }
    if (s.lru.size() >= per_shard_) {
      out.emplace(std::move(s.lru.back().value));
      s.index.erase(s.lru.back().k);
      s.lru.pop_back();
    }
    s.lru.push_front(entry{k, std::move(v)});
    s.index.emplace(k, s.lru.begin());
    return out;
  }

  /** Entries held. */
  std::size_t size() const {
    std::size_t n = 0;
    for (const shard& s : shards_) {
      std::lock_guard lock(s.mu);
      n += s.lru.size();
    }
    return n;
  }

 private:
  struct entry {
    key k;
    Value value;
  };
  struct key_hash {
    std::size_t operator()(const key& k) const noexcept {
      std::size_t h = 0;  // a digest: its first bytes are as good a hash as any
      for (std::size_t i = 0; i < sizeof h; ++i) h = (h << 8) | k[i];
      return h;
    }
  };
  struct shard {
    mutable std::mutex mu;
    std::list<entry> lru;  // front = most recently used
    std::unordered_map<key, typename std::list<entry>::iterator, key_hash> index;
  };
  static constexpr std::size_t shard_count = 8;

  shard& shard_of(const key& k) { return shards_[k[31] % shard_count]; }

  std::size_t per_shard_;
  std::array<shard, shard_count> shards_;
};

}  // namespace cbagate::tls
