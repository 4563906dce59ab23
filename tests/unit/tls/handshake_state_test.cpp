// server_context::release_handshake_state (issue 14): after the handshake a connection keeps
// neither the certificates the client sent beside its own nor the identity copy in the ticket
// app data, and the connection and resumption work as before. In memory: an OpenSSL client and
// server over a BIO pair.
#include "tls/server_context.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <string_view>

#include <openssl/ssl.h>

#include "test_certs.hpp"

namespace t = cbagate::identity::test;
namespace ossl = cbagate::ossl;
using cbagate::tls::server_context;

namespace {

using ssl_ptr = std::unique_ptr<SSL, ossl::deleter<SSL_free>>;
using session_ptr = std::unique_ptr<SSL_SESSION, ossl::deleter<SSL_SESSION_free>>;

constexpr std::string_view app_data = "identity of the full handshake";

struct pki {
  ossl::evp_pkey_ptr root_key = t::make_key(), ca_key = t::make_key(), leaf_key = t::make_key(),
                     server_key = t::make_key();
  ossl::x509_ptr root, ca, leaf, server;
  pki() {
    t::cert_spec root_spec;
    root_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "Root"}};
    root_spec.ca = true;
    root_spec.eku = "";
    root = t::make_cert(root_spec, root_key.get());
    t::cert_spec ca_spec = root_spec;
    ca_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "Issuing CA"}};
    ca_spec.serial = 2;
    ca = t::make_cert(ca_spec, ca_key.get(), root.get(), root_key.get());
    t::cert_spec leaf_spec;
    leaf_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "device"}};
    leaf_spec.serial = 3;
    leaf = t::make_cert(leaf_spec, leaf_key.get(), ca.get(), ca_key.get());
    t::cert_spec server_spec;
    server_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "server"}};
    server_spec.eku = "serverAuth";
    server_spec.serial = 4;
    server = t::make_cert(server_spec, server_key.get());
  }
};

int accept_chain(X509_STORE_CTX*, void*) { return 1; }

int ticket_generate(SSL* ssl, void*) {
  return SSL_SESSION_set1_ticket_appdata(SSL_get0_session(ssl), app_data.data(), app_data.size());
}

std::string resumed_app_data;  // what the last resumed ticket carried

SSL_TICKET_RETURN ticket_decrypt(SSL*, SSL_SESSION* session, const unsigned char*, size_t,
                                 SSL_TICKET_STATUS status, void*) {
  if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW)
    return SSL_TICKET_RETURN_IGNORE_RENEW;
  void* data = nullptr;
  size_t len = 0;
  SSL_SESSION_get0_ticket_appdata(session, &data, &len);
  resumed_app_data.assign(static_cast<const char*>(data), len);
  return SSL_TICKET_RETURN_USE;
}

struct contexts {
  ossl::ssl_ctx_ptr server{SSL_CTX_new(TLS_server_method())};
  ossl::ssl_ctx_ptr client{SSL_CTX_new(TLS_client_method())};
  contexts(const pki& p, int version) {
    SSL_CTX* s = server.get();
    REQUIRE(SSL_CTX_use_certificate(s, p.server.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(s, p.server_key.get()) == 1);
    SSL_CTX_set_min_proto_version(s, version);
    SSL_CTX_set_max_proto_version(s, version);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    SSL_CTX_set_cert_verify_callback(s, &accept_chain, nullptr);
    static constexpr unsigned char sid_ctx[] = "handshake_state_test";
    SSL_CTX_set_session_id_context(s, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(s, 1);
    SSL_CTX_set_session_ticket_cb(s, &ticket_generate, &ticket_decrypt, nullptr);
    SSL_CTX* c = client.get();
    REQUIRE(SSL_CTX_use_certificate(c, p.leaf.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(c, p.leaf_key.get()) == 1);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
    REQUIRE(SSL_CTX_add1_chain_cert(c, p.ca.get()) == 1);
#pragma GCC diagnostic pop
    SSL_CTX_set_min_proto_version(c, version);
    SSL_CTX_set_max_proto_version(c, version);
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT);
  }
};

// One connection: a client and a server over a BIO pair.
struct tls_pair {
  ssl_ptr server, client;
  tls_pair(const contexts& ctx, SSL_SESSION* resume = nullptr)
      : server(SSL_new(ctx.server.get())), client(SSL_new(ctx.client.get())) {
    BIO *s_bio = nullptr, *c_bio = nullptr;
    REQUIRE(BIO_new_bio_pair(&s_bio, 0, &c_bio, 0) == 1);
    SSL_set_bio(server.get(), s_bio, s_bio);
    SSL_set_bio(client.get(), c_bio, c_bio);
    SSL_set_accept_state(server.get());
    SSL_set_connect_state(client.get());
    if (resume) REQUIRE(SSL_set_session(client.get(), resume) == 1);
  }
  bool handshake() {
    for (int i = 0; i < 32; ++i) {
      const int c = SSL_do_handshake(client.get());
      const int s = SSL_do_handshake(server.get());
      if (c == 1 && s == 1) return true;
      if (c <= 0 && SSL_get_error(client.get(), c) != SSL_ERROR_WANT_READ) return false;
      if (s <= 0 && SSL_get_error(server.get(), s) != SSL_ERROR_WANT_READ) return false;
    }
    return false;
  }
  // Sends `text` from `from` and reads it at `to` (which also takes in any ticket before it).
  static std::string carry(SSL* from, SSL* to, std::string_view text) {
    std::size_t n = 0;
    if (SSL_write_ex(from, text.data(), text.size(), &n) != 1) return "write failed";
    char buf[256];
    if (SSL_read_ex(to, buf, sizeof buf, &n) != 1) return "read failed";
    return {buf, n};
  }
};

std::size_t sent_chain(SSL* server) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(server);
  return chain ? static_cast<std::size_t>(sk_X509_num(chain)) : 0;
}

std::size_t ticket_app_data(SSL* server) {
  void* data = nullptr;
  size_t len = 0;
  SSL_SESSION_get0_ticket_appdata(SSL_get0_session(server), &data, &len);
  return len;
}

}  // namespace

TEST_CASE("tls: after the handshake the client's extra certificates and the ticket app data are freed") {
  const pki p;
  for (const int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    CAPTURE(version);
    const contexts ctx(p, version);
    tls_pair first(ctx);
    REQUIRE(first.handshake());
    REQUIRE(sent_chain(first.server.get()) == 1);  // the issuing CA the client sent
    REQUIRE(ticket_app_data(first.server.get()) == app_data.size());

    server_context::release_handshake_state(first.server.get());
    CHECK(sent_chain(first.server.get()) == 0);
    CHECK(ticket_app_data(first.server.get()) == 0);
    CHECK(SSL_get0_peer_certificate(first.server.get()) != nullptr);  // OpenSSL keeps the leaf

    // The connection carries data both ways; the client takes in its ticket.
    CHECK(tls_pair::carry(first.client.get(), first.server.get(), "GET") == "GET");
    CHECK(tls_pair::carry(first.server.get(), first.client.get(), "200") == "200");
    session_ptr ticket{SSL_get1_session(first.client.get())};
    REQUIRE(ticket);
    REQUIRE(SSL_SESSION_is_resumable(ticket.get()) == 1);

    // The ticket sent before the release still resumes with the identity it carries.
    resumed_app_data.clear();
    tls_pair again(ctx, ticket.get());
    REQUIRE(again.handshake());
    CHECK(SSL_session_reused(again.server.get()) == 1);
    CHECK(resumed_app_data == app_data);
    server_context::release_handshake_state(again.server.get());
    CHECK(tls_pair::carry(again.client.get(), again.server.get(), "GET") == "GET");
  }
}

TEST_CASE("tls: an identity stands after the handshake only if it verified or resumed it") {
  const pki p;
  auto someone = std::make_shared<const cbagate::identity::client_identity>();
  // A connection that verified no certificate and resumed nothing (a session named in the
  // ClientHello and then declined by OpenSSL ends the same way): the restored identity goes.
  contexts ctx(p, TLS1_3_VERSION);
  ssl_ptr bare(SSL_new(ctx.server.get()));
  std::shared_ptr<const cbagate::identity::client_identity> slot = someone;
  cbagate::tls::server_context::settle_identity(bare.get(), slot);
  CHECK(slot == nullptr);
  // A full handshake where the client presented its certificate: the verified identity stays.
  tls_pair full(ctx);
  REQUIRE(full.handshake());
  slot = someone;
  cbagate::tls::server_context::settle_identity(full.server.get(), slot);
  CHECK(slot == someone);
  // A resumed session: the identity restored with it stays.
  CHECK(tls_pair::carry(full.server.get(), full.client.get(), "ticket") == "ticket");
  SSL_SESSION* session = SSL_get1_session(full.client.get());
  REQUIRE(session != nullptr);
  tls_pair again(ctx, session);
  REQUIRE(again.handshake());
  REQUIRE(SSL_session_reused(again.server.get()) == 1);
  slot = someone;
  cbagate::tls::server_context::settle_identity(again.server.get(), slot);
  CHECK(slot == someone);
  SSL_SESSION_free(session);
}
