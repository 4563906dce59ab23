#pragma once
// Client certificates decoded once, served again for the same bytes (issue 14).
//
// OpenSSL 3.0 decodes every certificate a client sends in every full handshake, and the public
// key inside it goes through the provider decoder framework (OSSL_DECODER_CTX_new_for_pkey
// walks every decoder of every provider): about 1.2 M instructions per certificate, a quarter
// of a full mTLS handshake with a GET (callgrind), more than the ECDSA verification of the
// client's CertificateVerify. OpenSSL 3.2 caches that lookup; Debian 12's 3.0 does not, and
// libssl has no hook before it decodes. A reconnecting device sends the same leaf each time,
// and every device of a CA sends the same intermediate.
//
// While a server handshake of ours runs on a thread (certificate_memo::scope, taken by
// server_context::handshake), libssl's calls of d2i_X509 come here (the function is
// interposed: defined in this process, it is found before libcrypto's). DER bytes already
// decoded give the same decoded X509 again, with a reference for the caller; new bytes are
// decoded as libcrypto does (ASN1_item_d2i with the X509 template, which is all d2i_X509 is)
// and remembered. Outside a scope d2i_X509 is exactly libcrypto's. A decode never writes into
// an object the caller hands in (d2i's historical "reuse"): the result is a fresh or a
// remembered object, in the default library context (our SSL_CTXs are made in it).
//
// A decoded certificate is immutable after decoding for everything that reads it: OpenSSL
// shares X509 objects between threads the same way in every X509_STORE (the extension cache is
// filled once under the object's lock), and libssl already keeps a session's peer certificate
// by reference. Verification is not remembered here: the chain is verified (or found in
// tls::chain_cache) exactly as before; only the parsing is saved.
#include <atomic>
#include <cstddef>
#include <cstdint>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/openssl_ptr.hpp"
#include "tls/digest_lru.hpp"

namespace cbagate::tls {

/**
 * A bounded, thread-safe memo of decoded certificates keyed by the SHA-256 of their exact DER
 * bytes. Least recently used eviction per shard; `capacity` certificates in all. Lookups and
 * inserts take one shard mutex, never held across a decode.
 */
class certificate_memo {
 public:
  static constexpr std::size_t default_capacity = 4096;

  explicit certificate_memo(std::size_t capacity = default_capacity);
  certificate_memo(const certificate_memo&) = delete;
  certificate_memo& operator=(const certificate_memo&) = delete;
  ~certificate_memo();

  /**
   * While alive, d2i_X509 called on this thread goes through `memo` (null: libcrypto's own
   * decoding). Scopes nest; each restores the previous one. Cheap: one thread-local pointer.
   */
  class scope {
   public:
    explicit scope(certificate_memo* memo) noexcept;
    ~scope();
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    certificate_memo* previous_;
  };

  /**
   * d2i_X509 through the memo, with d2i_X509's contract: decodes one certificate from at most
   * `len` bytes at `*in`; on success advances `*in` past it and returns it (also in `*a` when
   * `a` is not null, freeing what `*a` held), with one reference for the caller; on failure
   * returns null, as libcrypto does.
   */
  X509* decode(X509** a, const unsigned char** in, long len);

  /** Certificates held. */
  std::size_t size() const;
  /** Decodes answered from the memo (for tests). */
  std::uint64_t hits() const noexcept { return hits_.load(std::memory_order_relaxed); }

 private:
  using key = digest_lru<ossl::x509_ptr>::key;
  X509* find(const key& k);                 // with a reference for the caller, or null
  void insert(const key& k, X509* cert);    // takes a reference of its own

  digest_lru<ossl::x509_ptr> certs_;
  EVP_MD* sha256_ = nullptr;  // fetched once: an implicit fetch per digest costs lookups
  std::atomic<std::uint64_t> hits_{0};
};

}  // namespace cbagate::tls
