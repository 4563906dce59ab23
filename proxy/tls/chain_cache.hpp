#pragma once
// Verified client chains, remembered: the same device reconnects many times a day, and the
// chain verification (path building, signatures, the UPN, the revocation refs) is a quarter of
// a full handshake. Owned by a server_context, so a reload (new trust material) starts empty.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/openssl_ptr.hpp"
#include "identity/client_identity.hpp"
#include "tls/digest_lru.hpp"

namespace cbagate::tls {

/** Adds the DER of `x` to `md`. X509 keeps the encoding it was decoded from, so i2d_X509
 *  re-emits the received bytes. False when encoding or digesting failed. */
bool digest_cert(EVP_MD_CTX* md, X509* x);

/** SHA-256 over the DER of a presented chain (leaf, then the certificates the peer sent). */
using chain_key = std::array<unsigned char, 32>;

/**
 * A bounded, thread-safe cache of ACCEPTED chain verifications.
 *
 * - Keyed by chain_key: the exact bytes the client presented, so another chain for the same
 *   leaf (other intermediates) is another entry.
 * - An entry holds the verifier's identity (chain refs included; shared with the connections
 *   that presented the chain, never copied) and the span in which every
 *   certificate of the verified chain, anchor included, was within its validity period; a
 *   lookup outside that span is a miss (the chain is verified again and fails on its own).
 * - Only accepted identities go in: a rejection is always recomputed.
 * - Least recently used eviction per shard; `capacity` entries in all. Lookups and inserts
 *   take one shard mutex (the shard is chosen by the key), never held across OpenSSL calls.
 */
class chain_cache {
 public:
  explicit chain_cache(std::size_t capacity = 10000);
  chain_cache(const chain_cache&) = delete;
  chain_cache& operator=(const chain_cache&) = delete;
  ~chain_cache();

  /** The key of a presented chain. `sent` may be null or contain the leaf. False on failure
   *  (then the caller verifies without the cache). */
  bool key_of(X509* leaf, STACK_OF(X509) * sent, chain_key& out) const;

  /** The cached identity when `key` is cached and `now` (unix seconds) lies within the entry's
   *  validity span, else null. Shared, not copied: the connections of one device and the cache
   *  hold one identity (issue 14: memory per kept-alive connection). */
  std::shared_ptr<const identity::client_identity> find(const chain_key& key, std::int64_t now);

  /** Remembers an accepted identity (ignored when null, !id->ok() or not_before > not_after).
   *  The identity must not change afterwards. */
  void insert(const chain_key& key, std::shared_ptr<const identity::client_identity> id,
              std::int64_t not_before, std::int64_t not_after);

  std::size_t size() const;

 private:
  struct entry {
    std::int64_t not_before;
    std::int64_t not_after;
    std::shared_ptr<const identity::client_identity> id;
  };
  digest_lru<entry> entries_;
  EVP_MD* sha256_ = nullptr;  // fetched once: an implicit fetch per handshake costs lookups
};

}  // namespace cbagate::tls
