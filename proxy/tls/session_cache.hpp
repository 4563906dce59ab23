#pragma once
// Resumable TLS sessions kept in this process's memory (tls.session_cache, issue 14).
//
// A self-contained ticket carries the whole session, the client's certificate included: OpenSSL
// 3.0 parses that certificate again each time it makes a ticket (the "fresh copy" of
// construct_stateless_ticket) and each time it opens one, and a parse costs about as much as an
// ECDSA verification (its public-key decoder lookup: 1.5 M of the 4.0 M instructions of a
// resumed handshake, callgrind). Sessions kept here are never serialized: the device holds only
// a reference (a TLS 1.3 stateful ticket, a TLS 1.2 session id) and resumes the very
// SSL_SESSION of its full handshake, with the identity that handshake verified (the same
// shared object the connection held: nothing is encoded or copied).
//
// One cache per process, shared by every configuration (a reload keeps sessions; the session id
// context still refuses one decided under another trust policy), bounded (the least recently
// used session makes room) and expiring with each session's own timeout. Thread-safe: handshakes
// on every I/O thread insert and look up.
#include <array>
#include <cstddef>
#include <ctime>
#include <list>
#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include <openssl/ssl.h>

#include "identity/client_identity.hpp"

namespace cbagate::tls {

class session_cache {
 public:
  using identity_ptr = std::shared_ptr<const identity::client_identity>;

  /** At most `capacity` sessions (at least 1). */
  explicit session_cache(std::size_t capacity);
  ~session_cache();
  session_cache(const session_cache&) = delete;
  session_cache& operator=(const session_cache&) = delete;

  /** Keeps `s` (takes over the caller's reference) under its session id, with the identity its
   *  handshake decided (null: the client presented no certificate). A session already kept
   *  under that id is replaced; beyond the capacity the least recently used goes. */
  void insert(SSL_SESSION* s, identity_ptr id);

  struct found {
    SSL_SESSION* session = nullptr;  ///< with a reference for the caller; null = not kept
    identity_ptr identity;
  };
  /** The session kept under `id`, or none: not kept, or expired at `now` (then dropped). */
  found find(std::string_view id, std::time_t now);

  /** Drops the session kept under `id`, if any. */
  void remove(std::string_view id);

  std::size_t size() const;
  std::size_t capacity() const noexcept { return capacity_; }

 private:
  struct key {
    std::array<unsigned char, SSL_MAX_SSL_SESSION_ID_LENGTH> bytes{};
    std::size_t len = 0;
    bool operator==(const key& o) const noexcept {
      return len == o.len && std::equal(bytes.begin(), bytes.begin() + len, o.bytes.begin());
    }
  };
  struct key_hash {
    std::size_t operator()(const key& k) const noexcept {
      return std::hash<std::string_view>{}(
          std::string_view(reinterpret_cast<const char*>(k.bytes.data()), k.len));
    }
  };
  struct entry {
    key k;
    SSL_SESSION* session;
    identity_ptr identity;
  };
  static bool make_key(std::string_view id, key& out) noexcept;
  void drop(std::list<entry>::iterator it);  // with mu_ held

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::list<entry> lru_;  // most recently used first
  std::unordered_map<key, std::list<entry>::iterator, key_hash> by_id_;
};

}  // namespace cbagate::tls
