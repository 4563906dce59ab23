// certificate_memo (issue 14): while a scope is active, d2i_X509 (libssl's decoding of the
// certificates a client sends) serves the same DER bytes decoded once; outside a scope, and for
// anything that is not exactly one certificate, it decodes as libcrypto does.
#include "tls/certificate_memo.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <openssl/ssl.h>

#include "test_certs.hpp"

namespace t = cbagate::identity::test;
namespace ossl = cbagate::ossl;
using cbagate::tls::certificate_memo;

namespace {

using ssl_ptr = std::unique_ptr<SSL, ossl::deleter<SSL_free>>;

std::vector<unsigned char> der_of(X509* x) {
  unsigned char* out = nullptr;
  const int n = i2d_X509(x, &out);
  REQUIRE(n > 0);
  std::vector<unsigned char> der(out, out + n);
  OPENSSL_free(out);
  return der;
}

ossl::x509_ptr make_leaf(const std::string& name, EVP_PKEY* key) {
  t::cert_spec spec;
  spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, name}};
  return t::make_cert(spec, key);
}

struct pki {
  ossl::evp_pkey_ptr ca_key = t::make_key(), leaf_key = t::make_key(), server_key = t::make_key();
  ossl::x509_ptr ca, leaf, other_leaf, server;
  pki() {
    t::cert_spec ca_spec;
    ca_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "Issuing CA"}};
    ca_spec.ca = true;
    ca_spec.eku = "";
    ca = t::make_cert(ca_spec, ca_key.get());
    t::cert_spec leaf_spec;
    leaf_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "device"}};
    leaf_spec.serial = 3;
    leaf = t::make_cert(leaf_spec, leaf_key.get(), ca.get(), ca_key.get());
    leaf_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "other device"}};
    leaf_spec.serial = 4;
    other_leaf = t::make_cert(leaf_spec, leaf_key.get(), ca.get(), ca_key.get());
    t::cert_spec server_spec;
    server_spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "server"}};
    server_spec.eku = "serverAuth";
    server_spec.serial = 5;
    server = t::make_cert(server_spec, server_key.get());
  }
};

int accept_chain(X509_STORE_CTX*, void*) { return 1; }

// A server context asking for a client certificate, and a client context sending `leaf` and the
// issuing CA; TLS 1.3, in memory over a BIO pair.
struct contexts {
  ossl::ssl_ctx_ptr server{SSL_CTX_new(TLS_server_method())};
  ossl::ssl_ctx_ptr client{SSL_CTX_new(TLS_client_method())};
  contexts(const pki& p, X509* leaf) {
    SSL_CTX* s = server.get();
    REQUIRE(SSL_CTX_use_certificate(s, p.server.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(s, p.server_key.get()) == 1);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    SSL_CTX_set_cert_verify_callback(s, &accept_chain, nullptr);
    SSL_CTX_set_num_tickets(s, 0);
    SSL_CTX* c = client.get();
    REQUIRE(SSL_CTX_use_certificate(c, leaf) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(c, p.leaf_key.get()) == 1);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
    REQUIRE(SSL_CTX_add1_chain_cert(c, p.ca.get()) == 1);
#pragma GCC diagnostic pop
    SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
  }
};

// One handshake; the server's side runs inside a scope of `memo` (null: no scope). Returns the
// server's connection, holding the client's certificates.
ssl_ptr handshake(const contexts& ctx, certificate_memo* memo) {
  ssl_ptr server(SSL_new(ctx.server.get())), client(SSL_new(ctx.client.get()));
  BIO *s_bio = nullptr, *c_bio = nullptr;
  REQUIRE(BIO_new_bio_pair(&s_bio, 0, &c_bio, 0) == 1);
  SSL_set_bio(server.get(), s_bio, s_bio);
  SSL_set_bio(client.get(), c_bio, c_bio);
  SSL_set_accept_state(server.get());
  SSL_set_connect_state(client.get());
  for (int i = 0; i < 32; ++i) {
    const int c = SSL_do_handshake(client.get());
    int s = 0;
    if (memo != nullptr) {
      certificate_memo::scope scope(memo);
      s = SSL_do_handshake(server.get());
    } else {
      s = SSL_do_handshake(server.get());
    }
    if (c == 1 && s == 1) return server;
    REQUIRE((c == 1 || SSL_get_error(client.get(), c) == SSL_ERROR_WANT_READ));
    REQUIRE((s == 1 || SSL_get_error(server.get(), s) == SSL_ERROR_WANT_READ));
  }
  FAIL("handshake did not complete");
  return nullptr;
}

X509* sent_ca(SSL* server) {
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(server);
  REQUIRE(chain != nullptr);
  REQUIRE(sk_X509_num(chain) == 1);  // on a server: what was sent after the leaf, the issuing CA
  return sk_X509_value(chain, 0);
}

}  // namespace

TEST_CASE("certificate_memo: the same DER is decoded once while a scope is active") {
  pki p;
  const auto der = der_of(p.leaf.get());
  const auto len = static_cast<long>(der.size());
  certificate_memo memo;

  certificate_memo::scope scope(&memo);
  const unsigned char* in = der.data();
  ossl::x509_ptr first{d2i_X509(nullptr, &in, len)};
  REQUIRE(first);
  CHECK(in == der.data() + der.size());
  in = der.data();
  ossl::x509_ptr second{d2i_X509(nullptr, &in, len)};
  CHECK(second.get() == first.get());  // shared, each with its own reference
  CHECK(in == der.data() + der.size());
  CHECK(memo.hits() == 1);
  CHECK(memo.size() == 1);
  CHECK(X509_cmp(first.get(), p.leaf.get()) == 0);

  SUBCASE("as libssl calls it: into a preallocated object, which is replaced") {
    X509* x = X509_new();
    in = der.data();
    X509* r = d2i_X509(&x, &in, len);
    CHECK(r == x);
    CHECK(x == first.get());
    X509_free(x);
  }
  SUBCASE("a caller reusing its object for the next certificate leaves the remembered one") {
    const auto other = der_of(p.other_leaf.get());
    X509* x = X509_new();
    in = der.data();
    REQUIRE(d2i_X509(&x, &in, len) == first.get());  // x: the remembered leaf, shared
    in = other.data();
    REQUIRE(d2i_X509(&x, &in, static_cast<long>(other.size())) != nullptr);  // "reuse" x
    CHECK(x != first.get());
    CHECK(X509_cmp(x, p.other_leaf.get()) == 0);
    CHECK(X509_cmp(first.get(), p.leaf.get()) == 0);  // not overwritten in place
    in = der.data();
    ossl::x509_ptr again{d2i_X509(nullptr, &in, len)};
    CHECK(again.get() == first.get());
    CHECK(X509_cmp(again.get(), p.leaf.get()) == 0);
    X509_free(x);
  }
  SUBCASE("other bytes are another certificate") {
    const auto other = der_of(p.other_leaf.get());
    in = other.data();
    ossl::x509_ptr x{d2i_X509(nullptr, &in, static_cast<long>(other.size()))};
    REQUIRE(x);
    CHECK(x.get() != first.get());
    CHECK(X509_cmp(x.get(), p.other_leaf.get()) == 0);
    CHECK(memo.size() == 2);
  }
}

TEST_CASE("certificate_memo: outside a scope d2i_X509 decodes afresh") {
  pki p;
  const auto der = der_of(p.leaf.get());
  certificate_memo memo;
  {
    certificate_memo::scope scope(&memo);
    certificate_memo::scope none(nullptr);  // nested: no memo until it ends
    const unsigned char* in = der.data();
    ossl::x509_ptr x{d2i_X509(nullptr, &in, static_cast<long>(der.size()))};
    REQUIRE(x);
  }
  CHECK(memo.size() == 0);
  const unsigned char* in = der.data();
  ossl::x509_ptr a{d2i_X509(nullptr, &in, static_cast<long>(der.size()))};
  in = der.data();
  ossl::x509_ptr b{d2i_X509(nullptr, &in, static_cast<long>(der.size()))};
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a.get() != b.get());
  CHECK(memo.hits() == 0);
}

TEST_CASE("certificate_memo: d2i_X509's contract on bytes that are not exactly one certificate") {
  pki p;
  auto der = der_of(p.leaf.get());
  const auto len = static_cast<long>(der.size());
  certificate_memo memo;
  certificate_memo::scope scope(&memo);

  SUBCASE("trailing bytes are left unread, the certificate is the same") {
    auto longer = der;
    longer.insert(longer.end(), {0x30, 0x00, 0xFF});
    for (int round = 0; round < 2; ++round) {
      const unsigned char* in = longer.data();
      ossl::x509_ptr x{d2i_X509(nullptr, &in, static_cast<long>(longer.size()))};
      REQUIRE(x);
      CHECK(in == longer.data() + der.size());
    }
    CHECK(memo.hits() == 1);
  }
  SUBCASE("truncated: nothing decoded, nothing read, nothing remembered") {
    for (long cut : {len - 1, 1L, 0L}) {
      const unsigned char* in = der.data();
      CHECK(d2i_X509(nullptr, &in, cut) == nullptr);
      CHECK(in == der.data());
    }
    CHECK(memo.size() == 0);
  }
  SUBCASE("a well-framed SEQUENCE that is no certificate fails every time") {
    const std::vector<unsigned char> junk = {0x30, 0x03, 0x02, 0x01, 0x05};
    for (int round = 0; round < 2; ++round) {
      const unsigned char* in = junk.data();
      CHECK(d2i_X509(nullptr, &in, static_cast<long>(junk.size())) == nullptr);
      CHECK(in == junk.data());
    }
    CHECK(memo.size() == 0);
  }
  SUBCASE("a failed decode into a preallocated object frees it, as libcrypto does") {
    X509* x = X509_new();
    const unsigned char* in = der.data();
    CHECK(d2i_X509(&x, &in, len - 1) == nullptr);
    CHECK(x == nullptr);
  }
}

TEST_CASE("certificate_memo: bounded") {
  ossl::evp_pkey_ptr key = t::make_key();
  certificate_memo memo(8);  // 8 shards of 1
  certificate_memo::scope scope(&memo);
  for (int i = 0; i < 40; ++i) {
    const auto der = der_of(make_leaf("device " + std::to_string(i), key.get()).get());
    const unsigned char* in = der.data();
    ossl::x509_ptr x{d2i_X509(nullptr, &in, static_cast<long>(der.size()))};
    REQUIRE(x);
  }
  CHECK(memo.size() <= 8);
  CHECK(memo.size() >= 1);
}

TEST_CASE("certificate_memo: libssl's decoding of a client's certificates goes through it") {
  pki p;
  certificate_memo memo;
  contexts same(p, p.leaf.get());
  ssl_ptr first = handshake(same, &memo);
  CHECK(memo.hits() == 0);
  CHECK(memo.size() == 2);  // the leaf and the issuing CA it sent

  ssl_ptr again = handshake(same, &memo);  // the device reconnects
  CHECK(memo.hits() == 2);
  CHECK(SSL_get0_peer_certificate(again.get()) == SSL_get0_peer_certificate(first.get()));
  CHECK(sent_ca(again.get()) == sent_ca(first.get()));

  contexts other(p, p.other_leaf.get());  // another device of the same CA
  ssl_ptr third = handshake(other, &memo);
  CHECK(memo.hits() == 3);
  CHECK(SSL_get0_peer_certificate(third.get()) != SSL_get0_peer_certificate(first.get()));
  CHECK(X509_cmp(SSL_get0_peer_certificate(third.get()), p.other_leaf.get()) == 0);
  CHECK(sent_ca(third.get()) == sent_ca(first.get()));

  ssl_ptr plain = handshake(same, nullptr);  // no scope: decoded afresh
  CHECK(memo.hits() == 3);
  CHECK(SSL_get0_peer_certificate(plain.get()) != SSL_get0_peer_certificate(first.get()));
  CHECK(X509_cmp(SSL_get0_peer_certificate(plain.get()), p.leaf.get()) == 0);
}
