#pragma once
// The TLS server side: one SSL_CTX per certificate (the default plus one per [[tls.sni]] entry),
// all sharing one client-certificate policy. Built once per configuration snapshot; immutable and
// shared by every I/O thread afterwards (SSL_CTX is safe for concurrent SSL_new).
#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "common/openssl_ptr.hpp"
#include "config/snapshot.hpp"
#include "identity/client_identity.hpp"
#include "identity/verifier.hpp"
#include "tls/certificate_memo.hpp"
#include "tls/chain_cache.hpp"
#include "tls/session_cache.hpp"
#include "tls/ticket_keys.hpp"

namespace cbagate::tls {

/**
 * Server TLS material and policy.
 *
 * - TLS 1.2 and 1.3 only (tls.min_version may raise the floor), no renegotiation, no compression,
 *   ALPN "http/1.1" only; tls.ciphers, tls.ciphersuites and tls.groups (defaults: Mozilla's
 *   "intermediate" profile, ECDHE + AEAD only).
 * - OCSP stapling (tls.ocsp_stapling): a client's status_request is answered with the
 *   certificate's current staple (set_staple; "file": tls.ocsp_response, checked at build
 *   time), or without one when there is none.
 * - The CertificateRequest is always sent (with the client CA names); chain verification runs
 *   once per full handshake through identity::verifier and its outcome lands in the
 *   connection's identity slot (new_connection). With tls.client_cert = "require" a missing
 *   or rejected certificate fails the handshake; with "request" the routes decide.
 * - Accepted verifications are remembered (chain_cache, keyed by the presented chain's bytes,
 *   10,000 chains) while the whole verified chain stays within its validity period, so a
 *   device reconnecting with the same chain skips the verification. Rejections are always
 *   recomputed; the cache lives and dies with this server_context (a reload starts empty).
 *   Not used when the verifier checks CRLs itself. The handshake revocation check runs on
 *   every handshake.
 * - The certificates clients send are decoded once per distinct DER (certificate_memo, 4,096
 *   certificates): a reconnecting device's leaf and the intermediate every device of a CA
 *   sends are served decoded while handshake() runs. Only the parsing is saved; verification
 *   is as above.
 * - Resumption (tls.session_tickets): a resumed session has exactly the identity of the full
 *   handshake that created it. By default the sessions stay in the process, each with the
 *   identity its handshake decided (tls.session_cache, session_cache.hpp), and the device holds
 *   a reference; with tls.ticket_keys (or tls.session_cache = 0) self-contained tickets carry
 *   the session and the identity (as ticket app data), sealed with the keys of a
 *   ticket_key_store (AES-256-CBC + HMAC-SHA256): a
 *   shared key file lets a device resume on any instance behind a balancer. The session id
 *   context is derived from the trust material, so a session decided under other client CAs
 *   never resumes. With tickets off there is no resumption at all.
 */
class server_context {
 public:
  /**
   * Builds every SSL_CTX from the snapshot. Errors name the file and OpenSSL's reason.
   * @param verifier shared verifier for client chains (kept alive by the contexts).
   * @param ticket_keys the process-wide session-ticket keys (ticket_keys.hpp), shared by every
   *        configuration so a reload keeps tickets valid; null = a store of this context alone
   *        with process-local keys rotated every tls.ticket_key_rotation.
   * @param sessions the process-wide session cache (session_cache.hpp), used when
   *        tls.session_tickets is on, tls.ticket_keys empty and tls.session_cache > 0; null = a
   *        cache of this context alone.
   */
  static std::unique_ptr<server_context> make(const config::snapshot& cfg,
                                              std::shared_ptr<const identity::verifier> verifier,
                                              std::string& error,
                                              std::shared_ptr<ticket_key_store> ticket_keys = nullptr,
                                              std::shared_ptr<session_cache> sessions = nullptr);

  server_context(const server_context&) = delete;
  server_context& operator=(const server_context&) = delete;
  ~server_context();

  /**
   * A new server-side SSL object for one accepted connection, with `slot` attached as the place
   * where the handshake stores the client's identity (immutable, and shared with the chain
   * cache and the other connections of the same chain); it stays empty when the client
   * presents no certificate. `slot` must outlive the SSL object's handshake. Returns nullptr on
   * allocation failure.
   */
  SSL* new_connection(std::shared_ptr<const identity::client_identity>* slot) const;

  /**
   * SSL_do_handshake for a connection made by new_connection (of any server_context), with
   * that context's certificate_memo serving the certificates the client sends. Same result and
   * errors as SSL_do_handshake.
   */
  static int handshake(SSL* ssl) noexcept;

  /**
   * After a successful handshake: frees what only the handshake needed, so that a kept-alive
   * connection (an ActiveSync device between requests, a held Ping) holds less (issue 14):
   * - the certificates the client sent beside its own (SSL_get_peer_cert_chain; parsed, each
   *   with its public key): the chain was verified once, and what revocation and directory
   *   mapping need of it is in the connection's client_identity;
   * - the identity encoded into the session's ticket app data: the ticket has been sent.
   * OpenSSL keeps the client's own certificate in the session (no API removes it). Resumption
   * is unaffected: each ticket already carries its copy of the identity. Call once, after the
   * handshake completed and before the first request.
   */
  static void release_handshake_state(SSL* ssl) noexcept;

  /**
   * After a successful handshake, before the identity in `slot` is used: it stands only when
   * this handshake verified it (the client presented a certificate: the verify callback wrote
   * it) or resumed the session it was restored from. The session lookups restore an identity as
   * soon as a client offers a session id or ticket, which travel in the clear, and OpenSSL may
   * still decline that session without an alert (a cipher suite of another hash, an extended
   * master secret mismatch) and run a full handshake: without this, a client with no
   * certificate on a "request" listener would keep the identity of the session it named.
   */
  static void settle_identity(SSL* ssl, std::shared_ptr<const identity::client_identity>& slot) noexcept;

  /** After the handshake: the SNI the client sent ("" if none). */
  static std::string_view server_name(SSL* ssl) noexcept;

  /** After the handshake: "TLSv1.3" etc. */
  static std::string_view version(SSL* ssl) noexcept;

  const identity::verifier& verifier() const noexcept { return *verifier_; }

  /** True when resumable sessions stay in the process (tls.session_cache, session_cache.hpp). */
  bool keeps_sessions() const noexcept { return sessions_ != nullptr; }

  /**
   * With tls.client_cert = "require": a certificate whose chain verified is still refused in
   * the handshake (alert certificate_revoked) when `revoked` says so. The predicate must not
   * block (the handshake never waits for revocation: a status that needs a download is decided
   * per request, like every status on "request" listeners). Set once, before the first
   * connection. Not called in "request" mode, where the routes decide per request.
   */
  void set_handshake_revocation_check(std::function<bool(const identity::client_identity&)> revoked) {
    revoked_at_handshake_ = std::move(revoked);
  }

  /** A server certificate that tls.ocsp_stapling = "auto" can keep a response for. */
  struct staple_source {
    std::size_t index = 0;   ///< 0 = tls.certificate, i = tls.sni[i - 1]
    std::string leaf_der;    ///< the certificate
    std::string issuer_der;  ///< its issuer, found in the same chain file
    std::string ocsp_url;    ///< the first http:// OCSP URL of its AIA
    std::string name;        ///< its subject, for logs
  };

  /**
   * With tls.ocsp_stapling = "auto": every certificate (default first, then [[tls.sni]]) that
   * has an http:// OCSP URL in its AIA and its issuer in its chain file. Each other certificate
   * adds a line to `skipped` ("<subject>: no OCSP URL in its AIA"): it is served without a
   * staple.
   */
  std::vector<staple_source> staple_sources(std::vector<std::string>& skipped) const;

  /**
   * Sets the DER OCSPResponse stapled for certificate `index` (see staple_source), nullptr =
   * none. Thread-safe (handshakes on I/O threads read it; the revocation fetch thread sets it).
   */
  void set_staple(std::size_t index, std::shared_ptr<const std::string> der) const;

  /** The staple of certificate `index` now (tests). Thread-safe. */
  std::shared_ptr<const std::string> staple_for_test(std::size_t index) const;

  struct sni_entry {
    std::vector<std::string> names;
    ossl::ssl_ctx_ptr ctx;
  };

  /** One certificate's current OCSP response; read by the status_request callback. */
  struct staple_slot {
    mutable std::mutex mu;
    std::shared_ptr<const std::string> der;
  };

 private:
  server_context() = default;

  std::shared_ptr<const identity::verifier> verifier_;
  bool require_cert_ = false;
  std::function<bool(const identity::client_identity&)> revoked_at_handshake_;
  std::unique_ptr<chain_cache> verified_;  // null when the verifier checks CRLs
  certificate_memo certificates_;  // client certificates decoded, by their DER
  ossl::ssl_ctx_ptr default_ctx_;
  std::vector<sni_entry> sni_;
  std::shared_ptr<ticket_key_store> ticket_keys_;
  std::shared_ptr<session_cache> sessions_;  // tls.session_cache; null: self-contained tickets
  std::array<unsigned char, 32> sid_ctx_{};  // the session id context of every SSL_CTX
  std::vector<std::unique_ptr<staple_slot>> staples_;  // [0] default, [i] sni_[i - 1]

  friend struct callbacks;
};

}  // namespace cbagate::tls
