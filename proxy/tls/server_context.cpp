#include "tls/server_context.hpp"

#include "tls/inspect.hpp"
#include "tls/session_cache.hpp"
#include "tls/ticket_identity.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iterator>
#include <sstream>

#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ocsp.h>
#include <openssl/x509v3.h>

namespace cbagate::tls {
namespace {

std::string openssl_reason() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    std::array<char, 256> buf{};
    ERR_error_string_n(e, buf.data(), buf.size());
    if (!out.empty()) out += "; ";
    out += buf.data();
  }
  return out.empty() ? std::string("no OpenSSL reason") : out;
}

// One ex_data index for the per-connection identity slot. OpenSSL indexes are process-wide by
// design; this is allocated once and never changes.
int identity_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// The owning server_context of every SSL_CTX it builds (the ticket key callback has no arg).
int owner_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

using identity_slot = std::shared_ptr<const identity::client_identity>;

identity_slot* slot_of(SSL* ssl) {
  return static_cast<identity_slot*>(SSL_get_ex_data(ssl, identity_index()));
}

int x509_error_for(identity::rejection r) {
  using identity::rejection;
  switch (r) {
    case rejection::revoked: return X509_V_ERR_CERT_REVOKED;
    case rejection::expired: return X509_V_ERR_CERT_HAS_EXPIRED;
    case rejection::not_yet_valid: return X509_V_ERR_CERT_NOT_YET_VALID;
    case rejection::untrusted: return X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY;
    case rejection::wrong_eku: return X509_V_ERR_INVALID_PURPOSE;
    default: return X509_V_ERR_APPLICATION_VERIFICATION;
  }
}

bool name_matches(std::string_view pattern, std::string_view name) {
  auto iequal = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  };
  if (pattern.starts_with("*.")) {
    // A wildcard covers exactly one label (RFC 6125 6.4.3).
    auto dot = name.find('.');
    return dot != std::string_view::npos && dot > 0 && iequal(pattern.substr(1), name.substr(dot));
  }
  return iequal(pattern, name);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

// The OpenSSL callbacks; a struct so they may see server_context's private members.
struct callbacks {
  // Replaces X509_verify_cert for the client chain: our verifier decides, once per handshake.
  static int verify_chain(X509_STORE_CTX* xctx, void* arg) {
    auto* self = static_cast<server_context*>(arg);
    auto* ssl = static_cast<SSL*>(
        X509_STORE_CTX_get_ex_data(xctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
    identity_slot* slot = ssl ? slot_of(ssl) : nullptr;
    X509* leaf = X509_STORE_CTX_get0_cert(xctx);
    STACK_OF(X509)* sent = X509_STORE_CTX_get0_untrusted(xctx);
    identity_slot id;
    chain_key key{};
    const bool cacheable = self->verified_ && leaf != nullptr && self->verified_->key_of(leaf, sent, key);
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    if (cacheable) id = self->verified_->find(key, now);
    if (!id) {
      identity::chain_validity validity;
      id = std::make_shared<const identity::client_identity>(
          self->verifier_->verify(leaf, sent, {}, &validity));
      if (cacheable && id->ok()) self->verified_->insert(key, id, validity.not_before, validity.not_after);
    }
    if (id->ok() && self->require_cert_ && self->revoked_at_handshake_ &&
        self->revoked_at_handshake_(*id)) {
      // "require": a certificate known to be revoked never completes the handshake (as when
      // OpenSSL checked the CRLs); its requests would be refused with 403.13 anyway. A copy:
      // the cached identity is shared.
      auto revoked = std::make_shared<identity::client_identity>(*id);
      revoked->reason = identity::rejection::revoked;
      revoked->detail = "certificate revoked (revocation check at the handshake)";
      revoked->upn.clear();
      revoked->chain.clear();
      id = std::move(revoked);
    }
    const bool ok = id->ok();
    const auto reason = id->reason;
    if (slot) *slot = std::move(id);
    if (ok || !self->require_cert_) return 1;  // "request": the route decides later
    X509_STORE_CTX_set_error(xctx, x509_error_for(reason));
    return 0;
  }

  static int select_certificate(SSL* ssl, int* /*alert*/, void* arg) {
    auto* self = static_cast<server_context*>(arg);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (!name) return SSL_TLSEXT_ERR_OK;
    for (const auto& entry : self->sni_) {
      for (const auto& pattern : entry.names) {
        if (name_matches(pattern, name)) {
          SSL_set_SSL_CTX(ssl, entry.ctx.get());
          return SSL_TLSEXT_ERR_OK;
        }
      }
    }
    return SSL_TLSEXT_ERR_OK;  // unknown names get the default certificate
  }

  static int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen,
                         const unsigned char* in, unsigned int inlen, void*) {
    static constexpr unsigned char ours[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, ours, sizeof ours, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
      return SSL_TLSEXT_ERR_NOACK;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }

  static int ticket_generate(SSL* ssl, void*) {
    const identity_slot* slot = slot_of(ssl);
    SSL_SESSION* session = SSL_get0_session(ssl);
    if (!slot || !session) return 0;
    // An empty slot: the client presented no certificate (the verify callback never ran).
    static const identity::client_identity no_certificate = identity::verifier::no_certificate();
    const std::string data = detail::encode_ticket_identity(*slot ? **slot : no_certificate);
    return SSL_SESSION_set1_ticket_appdata(session, data.data(), data.size());
  }

  // Seals and opens tickets with the store's keys (RFC 5077 4 layout: key name, IV, AES-256-CBC,
  // HMAC-SHA256). enc: 1 = sealed with the current key. Open: 1 = the current key, 2 = an older
  // one (OpenSSL then issues a fresh ticket under the current key), 0 = unknown key (a full
  // handshake: another cluster's, rotated out, or expired).
  static int seal_ticket(SSL* ssl, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher,
                        EVP_MAC_CTX* mac, int enc) {
    auto* self = static_cast<server_context*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), owner_index()));
    if (self == nullptr || !self->ticket_keys_) return enc ? -1 : 0;
    const auto now = std::chrono::steady_clock::now();
    ticket_key key;
    int result = 1;
    if (enc) {
      if (!self->ticket_keys_->encryption_key(key, now)) return -1;
      if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) return -1;
      std::memcpy(name, key.name.data(), key.name.size());
    } else {
      std::array<std::uint8_t, 16> wanted{};
      std::memcpy(wanted.data(), name, wanted.size());
      const auto found = self->ticket_keys_->decryption_key(wanted, key, now);
      if (found == ticket_key_store::lookup::unknown) return 0;
      if (found == ticket_key_store::lookup::older) result = 2;
    }
    char digest[] = "SHA256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac.data(), key.hmac.size()),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
    int ok = EVP_MAC_CTX_set_params(mac, params);
    if (ok == 1)
      ok = enc ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv)
               : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv);
    OPENSSL_cleanse(&key, sizeof key);
    if (ok != 1) return enc ? -1 : 0;
    return result;
  }

  // status_request (RFC 6066 8): staple the certificate's current OCSP response, if any. `arg`
  // is the staple_slot of the SSL_CTX in use (after SNI selection).
  static int staple_status(SSL* ssl, void* arg) {
    const auto* slot = static_cast<const server_context::staple_slot*>(arg);
    std::shared_ptr<const std::string> der;
    {
      std::lock_guard lock(slot->mu);
      der = slot->der;
    }
    if (!der || der->empty()) return SSL_TLSEXT_ERR_NOACK;
    auto* copy = static_cast<unsigned char*>(OPENSSL_malloc(der->size()));
    if (!copy) return SSL_TLSEXT_ERR_NOACK;
    std::memcpy(copy, der->data(), der->size());
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
    if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(der->size())) != 1) {
#pragma GCC diagnostic pop
      OPENSSL_free(copy);
      return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;  // OpenSSL owns `copy` now
  }

  // tls.session_cache: sessions stay in this process's memory (session_cache.hpp). A new session
  // is kept once its handshake decided the identity, with that identity (the shared object the
  // connection holds). The certificates the client sent beside its own are freed first, as
  // release_handshake_state does for a ticket's session: from now on the session is shared and
  // no thread writes to it again.
  static int keep_session(SSL* ssl, SSL_SESSION* session) {
    auto* self = owner_of(ssl);
    const identity_slot* slot = slot_of(ssl);
    if (self == nullptr || !self->sessions_ || slot == nullptr) return 0;
    if (SSL_get0_session(ssl) == session) {
      if (STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl)) {
        while (sk_X509_num(sent) > 0) X509_free(sk_X509_pop(sent));
      }
    }
    self->sessions_->insert(session, *slot);
    return 1;  // the cache holds OpenSSL's reference now
  }

  // A device offers a session id (TLS 1.2) or a stateful ticket (TLS 1.3): the kept session, if
  // still valid and decided under this trust policy (the session id context, compared here
  // rather than left to OpenSSL), resumes with the identity of its full handshake.
  static SSL_SESSION* find_session(SSL* ssl, const unsigned char* id, int len, int* copy) {
    *copy = 0;  // find() took a reference for OpenSSL
    auto* self = owner_of(ssl);
    identity_slot* slot = slot_of(ssl);
    if (self == nullptr || !self->sessions_ || slot == nullptr || len <= 0) return nullptr;
    auto kept = self->sessions_->find(
        std::string_view(reinterpret_cast<const char*>(id), static_cast<std::size_t>(len)),
        std::time(nullptr));
    if (kept.session == nullptr) return nullptr;
    unsigned int ctx_len = 0;
    const unsigned char* ctx = SSL_SESSION_get0_id_context(kept.session, &ctx_len);
    if (ctx_len != self->sid_ctx_.size() || std::memcmp(ctx, self->sid_ctx_.data(), ctx_len) != 0) {
      SSL_SESSION_free(kept.session);
      return nullptr;  // another trust policy: a full handshake
    }
    *slot = std::move(kept.identity);
    // No new TLS 1.3 ticket for a resumed session: the device keeps offering the one it has
    // until the session expires (as with a self-contained ticket), and the cache is not filled
    // with copies of one session.
    SSL_set_num_tickets(ssl, 0);
    return kept.session;
  }

  static void forget_session(SSL_CTX* ctx, SSL_SESSION* session) {
    auto* self = static_cast<server_context*>(SSL_CTX_get_ex_data(ctx, owner_index()));
    if (self == nullptr || !self->sessions_) return;
    unsigned int len = 0;
    const unsigned char* id = SSL_SESSION_get_id(session, &len);
    self->sessions_->remove(std::string_view(reinterpret_cast<const char*>(id), len));
  }

  static server_context* owner_of(SSL* ssl) {
    return static_cast<server_context*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), owner_index()));
  }

  static SSL_TICKET_RETURN ticket_decrypt(SSL* ssl, SSL_SESSION* session, const unsigned char*,
                                          size_t, SSL_TICKET_STATUS status, void*) {
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
      return SSL_TICKET_RETURN_IGNORE_RENEW;
    identity_slot* slot = slot_of(ssl);
    void* data = nullptr;
    size_t len = 0;
    identity::client_identity restored;
    if (!slot || !SSL_SESSION_get0_ticket_appdata(session, &data, &len) ||
        !detail::decode_ticket_identity(data, len, restored))
      return SSL_TICKET_RETURN_IGNORE_RENEW;  // full handshake: never resume without identity
    *slot = std::make_shared<const identity::client_identity>(std::move(restored));
    return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
  }
};

namespace {

std::string subject_of(X509* cert) {
  std::array<char, 256> buf{};
  X509_NAME_oneline(X509_get_subject_name(cert), buf.data(), static_cast<int>(buf.size()));
  return buf.data();
}

std::string der_of(X509* cert) {
  unsigned char* out = nullptr;
  const int n = i2d_X509(cert, &out);
  if (n <= 0) return {};
  std::string der(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
  OPENSSL_free(out);
  return der;
}

std::string first_http_ocsp_url(X509* cert) {
  std::string url;
  STACK_OF(OPENSSL_STRING)* urls = X509_get1_ocsp(cert);
  for (int i = 0; urls && i < sk_OPENSSL_STRING_num(urls); ++i) {
    const std::string_view u = sk_OPENSSL_STRING_value(urls, i);
    if (u.starts_with("http://")) {
      url = u;
      break;
    }
  }
  X509_email_free(urls);
  return url;
}

// The issuer of `leaf` among the extra chain certificates of `ctx` (its chain file).
X509* issuer_in_chain(SSL_CTX* ctx, X509* leaf) {
  STACK_OF(X509)* chain = nullptr;
  if (SSL_CTX_get0_chain_certs(ctx, &chain) != 1 || !chain) return nullptr;
  for (int i = 0; i < sk_X509_num(chain); ++i) {
    X509* ca = sk_X509_value(chain, i);
    if (X509_check_issued(ca, leaf) == X509_V_OK) return ca;
  }
  return nullptr;
}

// tls.ocsp_stapling = "file": the file must be a successful OCSPResponse about tls.certificate
// (when its issuer is in the chain file, the CertID is matched) that has not expired.
bool check_ocsp_file(const std::string& der, SSL_CTX* ctx, const std::string& path,
                     std::string& error) {
  using response_ptr = std::unique_ptr<OCSP_RESPONSE, ossl::deleter<OCSP_RESPONSE_free>>;
  using basic_ptr = std::unique_ptr<OCSP_BASICRESP, ossl::deleter<OCSP_BASICRESP_free>>;
  using certid_ptr = std::unique_ptr<OCSP_CERTID, ossl::deleter<OCSP_CERTID_free>>;
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  response_ptr resp{d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size()))};
  const std::string where = "tls: tls.ocsp_response " + path + ": ";
  if (!resp || p != reinterpret_cast<const unsigned char*>(der.data()) + der.size()) {
    error = where + "not a DER OCSP response";
    return false;
  }
  if (OCSP_response_status(resp.get()) != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
    error = where + "response status " +
            OCSP_response_status_str(OCSP_response_status(resp.get()));
    return false;
  }
  basic_ptr basic{OCSP_response_get1_basic(resp.get())};
  if (!basic) {
    error = where + "no basic response";
    return false;
  }
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  X509* issuer = leaf ? issuer_in_chain(ctx, leaf) : nullptr;
  if (!issuer) return true;  // nothing to match the CertID against
  certid_ptr id{OCSP_cert_to_id(nullptr, leaf, issuer)};
  int status = -1;
  ASN1_GENERALIZEDTIME* next = nullptr;
  if (!id || OCSP_resp_find_status(basic.get(), id.get(), &status, nullptr, nullptr, nullptr,
                                   &next) != 1) {
    error = where + "has no status for tls.certificate " + subject_of(leaf);
    return false;
  }
  if (status != V_OCSP_CERTSTATUS_GOOD) {
    error = where + "says tls.certificate is " + OCSP_cert_status_str(status);
    return false;
  }
  if (next && X509_cmp_current_time(next) < 0) {
    error = where + "expired (past its nextUpdate); fetch a new one";
    return false;
  }
  return true;
}

ossl::ssl_ctx_ptr build_ctx(const config::snapshot& cfg, const std::string& cert,
                            const std::string& key, server_context* owner, bool require_cert,
                            const std::array<unsigned char, 32>& sid_ctx,
                            server_context::staple_slot* staple, std::string& error) {
  ossl::ssl_ctx_ptr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    error = "tls: SSL_CTX_new failed: " + openssl_reason();
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  const int min_version = cfg.tls.min_version == "1.3" ? TLS1_3_VERSION : TLS1_2_VERSION;
  SSL_CTX_set_min_proto_version(c, min_version);
  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                             SSL_OP_CIPHER_SERVER_PREFERENCE);
  // OpenSSL 3 refuses client-initiated renegotiation unless SSL_OP_ALLOW_CLIENT_RENEGOTIATION.
  // Idle keep-alive connections (ActiveSync devices) give their read/write buffers back.
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);

  if (!cfg.tls.ciphers.empty() && SSL_CTX_set_cipher_list(c, cfg.tls.ciphers.c_str()) != 1) {
    error = "tls: tls.ciphers '" + cfg.tls.ciphers + "' rejected: " + openssl_reason();
    return nullptr;
  }
  if (!cfg.tls.ciphersuites.empty() &&
      SSL_CTX_set_ciphersuites(c, cfg.tls.ciphersuites.c_str()) != 1) {
    error = "tls: tls.ciphersuites '" + cfg.tls.ciphersuites + "' rejected: " + openssl_reason();
    return nullptr;
  }
  if (!cfg.tls.groups.empty() && SSL_CTX_set1_groups_list(c, cfg.tls.groups.c_str()) != 1) {
    error = "tls: tls.groups '" + cfg.tls.groups + "' rejected: " + openssl_reason();
    return nullptr;
  }
  // PEM or DER, never a passphrase prompt (tls/inspect.hpp): the same reading as --check-config.
  std::string why;
  auto certs = load_certificates(cert, why);
  if (certs.empty()) {
    error = "tls: certificate " + why;
    return nullptr;
  }
  if (SSL_CTX_use_certificate(c, certs.front().get()) != 1) {
    error = "tls: cannot use certificate " + cert + ": " + openssl_reason();
    return nullptr;
  }
  for (std::size_t i = 1; i < certs.size(); ++i) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
    const long added = SSL_CTX_add1_chain_cert(c, certs[i].get());
#pragma GCC diagnostic pop
    if (added != 1) {
      error = "tls: cannot add chain certificate " + std::to_string(i + 1) + " of " + cert + ": " +
              openssl_reason();
      return nullptr;
    }
  }
  auto pkey = load_private_key(key, why);
  if (!pkey) {
    error = "tls: private key " + why;
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey(c, pkey.get()) != 1 || SSL_CTX_check_private_key(c) != 1) {
    error = "tls: private key " + key + " does not match certificate " + cert + ": " +
            openssl_reason();
    return nullptr;
  }

  // Always send the CertificateRequest, naming the accepted roots so clients pick the right
  // certificate; the verification itself is ours (verify_chain).
  // PEM or DER, as the verifier reads tls.client_ca (tls/inspect.hpp).
  auto anchors = load_certificates(cfg.tls.client_ca, why);
  STACK_OF(X509_NAME)* names = anchors.empty() ? nullptr : sk_X509_NAME_new_null();
  for (const auto& a : anchors) {
    X509_NAME* n = names ? X509_NAME_dup(X509_get_subject_name(a.get())) : nullptr;
    if (n == nullptr || sk_X509_NAME_push(names, n) == 0) {
      X509_NAME_free(n);
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      names = nullptr;
      break;
    }
  }
  if (names == nullptr) {
    error = "tls: cannot read client CA names from " +
            (anchors.empty() ? why : cfg.tls.client_ca + ": " + openssl_reason());
    return nullptr;
  }
  SSL_CTX_set_client_CA_list(c, names);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | (require_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                     nullptr);
  SSL_CTX_set_cert_verify_callback(c, &callbacks::verify_chain, owner);
  SSL_CTX_set_session_id_context(c, sid_ctx.data(), static_cast<unsigned>(sid_ctx.size()));
  SSL_CTX_set_alpn_select_cb(c, &callbacks::select_alpn, nullptr);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
  SSL_CTX_set_tlsext_servername_callback(c, &callbacks::select_certificate);
  SSL_CTX_set_tlsext_servername_arg(c, owner);
#pragma GCC diagnostic pop

  if (cfg.tls.stapling != config::ocsp_stapling::off) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
    SSL_CTX_set_tlsext_status_cb(c, &callbacks::staple_status);
    SSL_CTX_set_tlsext_status_arg(c, staple);
#pragma GCC diagnostic pop
  }

  // The owner: for handshake() (its certificate memo) and the session and ticket callbacks.
  SSL_CTX_set_ex_data(c, owner_index(), owner);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (owner->keeps_sessions()) {
    // tls.session_cache: sessions stay in the process (session_cache.hpp); the device gets a
    // reference to its session (a TLS 1.3 stateful ticket, a TLS 1.2 session id), no ticket keys.
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c, 1);
    SSL_CTX_set_timeout(c, static_cast<long>(cfg.tls.session_timeout.count()));
    SSL_CTX_sess_set_new_cb(c, &callbacks::keep_session);
    SSL_CTX_sess_set_get_cb(c, &callbacks::find_session);
    SSL_CTX_sess_set_remove_cb(c, &callbacks::forget_session);
  } else if (cfg.tls.session_tickets) {
    // Self-contained tickets (tls.ticket_keys, or tls.session_cache = 0): no server-side cache;
    // each ticket carries the identity.
    SSL_CTX_set_num_tickets(c, 1);  // one ticket per handshake: OpenSSL's default of 2 costs time
    SSL_CTX_set_timeout(c, static_cast<long>(cfg.tls.session_timeout.count()));
    SSL_CTX_set_session_ticket_cb(c, &callbacks::ticket_generate, &callbacks::ticket_decrypt,
                                  owner);
    if (SSL_CTX_set_tlsext_ticket_key_evp_cb(c, &callbacks::seal_ticket) != 1) {
      error = "tls: cannot install the session-ticket key callback: " + openssl_reason();
      return nullptr;
    }
  } else {
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(c, 0);
  }
  return ctx;
}

}  // namespace

std::unique_ptr<server_context> server_context::make(
    const config::snapshot& cfg, std::shared_ptr<const identity::verifier> verifier,
    std::string& error, std::shared_ptr<ticket_key_store> ticket_keys,
    std::shared_ptr<session_cache> sessions) {
  std::unique_ptr<server_context> self(new server_context());
  self->verifier_ = std::move(verifier);
  if (cfg.tls.session_tickets && cfg.tls.ticket_keys.empty() && cfg.tls.session_cache > 0) {
    self->sessions_ = sessions ? std::move(sessions) : std::make_shared<session_cache>(cfg.tls.session_cache);
  }
  if (!ticket_keys) {
    ticket_keys = std::make_shared<ticket_key_store>();
    ticket_keys->use_local_keys(
        std::chrono::ceil<std::chrono::seconds>(cfg.tls.ticket_key_rotation),
        std::chrono::ceil<std::chrono::seconds>(cfg.tls.session_timeout),
        std::chrono::steady_clock::now());
  }
  self->ticket_keys_ = std::move(ticket_keys);
  self->require_cert_ = cfg.tls.client_cert == config::client_cert_mode::require;
  // With CRLs inside the verification, an outcome depends on more than the chain and the time.
  if (!self->verifier_->checks_crls()) self->verified_ = std::make_unique<chain_cache>();

  // The session id context binds tickets to this trust policy: a ticket minted under other
  // client CAs or another upn policy never resumes here.
  std::string material = read_file(cfg.tls.client_ca) + '\0' + read_file(cfg.tls.client_intermediates);
  material += self->require_cert_ ? "require" : "request";
  material += cfg.auth.upn_from_san ? "+san" : "";
  material += cfg.auth.upn_from_subject ? "+subject" : "";
  material += cfg.auth.upn_from_directory ? "+directory" : "";  // an empty UPN means "ask"
  // Tickets outlive reloads (the ticket keys are process-wide, or shared by instances): every
  // setting that decides an identity is part of the context, so a ticket decided under another
  // policy never resumes. Revocation is not: it is checked again at every request.
  material += "+depth=" + std::to_string(cfg.tls.verify_depth);
  material += "+upnmax=" + std::to_string(cfg.auth.max_upn_length);
  // The trust limits of [auth] too (issue 12): a session accepted before a limit was added
  // must not resume past it.
  material += '\0' + read_file(cfg.auth.issuing_cas) + '\0';
  for (const std::string& s : cfg.auth.upn_suffixes) material += s + '\0';
  material += '\0';
  for (const std::string& t : cfg.auth.certificate_templates) material += t + '\0';
  std::array<unsigned char, 32> sid_ctx{};
  unsigned int sid_len = 0;
  EVP_Digest(material.data(), material.size(), sid_ctx.data(), &sid_len, EVP_sha256(), nullptr);
  self->sid_ctx_ = sid_ctx;

  for (std::size_t i = 0; i <= cfg.tls.sni.size(); ++i)
    self->staples_.push_back(std::make_unique<staple_slot>());
  self->default_ctx_ = build_ctx(cfg, cfg.tls.certificate, cfg.tls.private_key, self.get(),
                                 self->require_cert_, sid_ctx, self->staples_[0].get(), error);
  if (!self->default_ctx_) return nullptr;
  for (std::size_t i = 0; i < cfg.tls.sni.size(); ++i) {
    const auto& sni = cfg.tls.sni[i];
    auto ctx = build_ctx(cfg, sni.certificate, sni.private_key, self.get(), self->require_cert_,
                         sid_ctx, self->staples_[i + 1].get(), error);
    if (!ctx) return nullptr;
    self->sni_.push_back({sni.server_names, std::move(ctx)});
  }
  if (cfg.tls.stapling == config::ocsp_stapling::file) {
    auto der = std::make_shared<const std::string>(read_file(cfg.tls.ocsp_response));
    if (!check_ocsp_file(*der, self->default_ctx_.get(), cfg.tls.ocsp_response, error))
      return nullptr;
    self->set_staple(0, std::move(der));
  }
  return self;
}

std::vector<server_context::staple_source> server_context::staple_sources(
    std::vector<std::string>& skipped) const {
  std::vector<staple_source> out;
  for (std::size_t i = 0; i < staples_.size(); ++i) {
    SSL_CTX* ctx = i == 0 ? default_ctx_.get() : sni_[i - 1].ctx.get();
    X509* leaf = SSL_CTX_get0_certificate(ctx);
    if (!leaf) continue;
    staple_source src;
    src.index = i;
    src.name = subject_of(leaf);
    src.ocsp_url = first_http_ocsp_url(leaf);
    X509* issuer = issuer_in_chain(ctx, leaf);
    if (src.ocsp_url.empty()) {
      skipped.push_back(src.name + ": no http:// OCSP URL in its AIA");
      continue;
    }
    if (!issuer) {
      skipped.push_back(src.name + ": its issuer is not in its chain file");
      continue;
    }
    src.leaf_der = der_of(leaf);
    src.issuer_der = der_of(issuer);
    out.push_back(std::move(src));
  }
  return out;
}

void server_context::set_staple(std::size_t index, std::shared_ptr<const std::string> der) const {
  if (index >= staples_.size()) return;
  std::lock_guard lock(staples_[index]->mu);
  staples_[index]->der = std::move(der);
}

std::shared_ptr<const std::string> server_context::staple_for_test(std::size_t index) const {
  if (index >= staples_.size()) return nullptr;
  std::lock_guard lock(staples_[index]->mu);
  return staples_[index]->der;
}

server_context::~server_context() = default;

SSL* server_context::new_connection(std::shared_ptr<const identity::client_identity>* slot) const {
  SSL* ssl = SSL_new(default_ctx_.get());
  if (!ssl) return nullptr;
  SSL_set_ex_data(ssl, identity_index(), slot);
  return ssl;
}

int server_context::handshake(SSL* ssl) noexcept {
  server_context* self = callbacks::owner_of(ssl);
  certificate_memo::scope scope(self != nullptr ? &self->certificates_ : nullptr);
  return SSL_do_handshake(ssl);
}

void server_context::release_handshake_state(SSL* ssl) noexcept {
  // On a server the peer chain holds the certificates sent after the client's own; the stack
  // belongs to the session, which frees what is left in it.
  if (STACK_OF(X509)* sent = SSL_get_peer_cert_chain(ssl)) {
    while (sk_X509_num(sent) > 0) X509_free(sk_X509_pop(sent));
  }
  // A ticket's session drops the identity encoded for its ticket (sent by now); a session kept
  // in the process (tls.session_cache) has none and is shared: it is not written to.
  const bool kept = (SSL_CTX_get_session_cache_mode(SSL_get_SSL_CTX(ssl)) & SSL_SESS_CACHE_SERVER) != 0;
  if (SSL_SESSION* session = SSL_get0_session(ssl); session != nullptr && !kept)
    SSL_SESSION_set1_ticket_appdata(session, nullptr, 0);
}

void server_context::settle_identity(SSL* ssl,
                                     std::shared_ptr<const identity::client_identity>& slot) noexcept {
  if (SSL_session_reused(ssl) != 1 && SSL_get0_peer_certificate(ssl) == nullptr) slot.reset();
}

std::string_view server_context::server_name(SSL* ssl) noexcept {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  return name ? std::string_view(name) : std::string_view();
}

std::string_view server_context::version(SSL* ssl) noexcept { return SSL_get_version(ssl); }

}  // namespace cbagate::tls
