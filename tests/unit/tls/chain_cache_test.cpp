#include "tls/chain_cache.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "test_certs.hpp"

using cbagate::identity::client_identity;
using cbagate::identity::rejection;
using cbagate::tls::chain_cache;
using cbagate::tls::chain_key;
namespace t = cbagate::identity::test;
namespace ossl = cbagate::ossl;

namespace {

struct x509_stack {
  STACK_OF(X509)* s = sk_X509_new_null();
  explicit x509_stack(std::initializer_list<X509*> certs) {
    for (X509* x : certs) sk_X509_push(s, x);
  }
  ~x509_stack() { sk_X509_free(s); }
};

ossl::x509_ptr cert(const std::string& cn, EVP_PKEY* key, bool ca = false, X509* issuer = nullptr,
                    EVP_PKEY* issuer_key = nullptr) {
  t::cert_spec spec;
  spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, cn}};
  spec.ca = ca;
  if (ca) spec.eku = "";
  return t::make_cert(spec, key, issuer, issuer_key);
}

client_identity accepted(const std::string& upn) {
  client_identity id;
  id.presented = true;
  id.reason = rejection::none;
  id.upn = upn;
  id.subject = "CN=" + upn;
  id.chain.resize(2);
  id.chain[0].serial = "\x01";
  id.chain[1].serial = "\x02";
  id.chain[1].cdp_urls = {"http://ca.test/issuing.crl"};
  return id;
}

chain_key key_n(unsigned n, unsigned char shard = 0) {
  chain_key k{};
  k[0] = static_cast<unsigned char>(n & 0xff);
  k[1] = static_cast<unsigned char>(n >> 8);
  k[31] = shard;
  return k;
}

}  // namespace

TEST_CASE("tls: the key of a chain covers the leaf and every certificate the peer sent") {
  chain_cache cache;
  auto root_key = t::make_key(), ca_key = t::make_key(), leaf_key = t::make_key();
  auto root = cert("Root", root_key.get(), true);
  auto ca1 = cert("CA", ca_key.get(), true, root.get(), root_key.get());
  auto ca2 = cert("CA", ca_key.get(), true, root.get(), root_key.get());  // same name and key
  auto leaf = cert("leaf", leaf_key.get(), false, ca1.get(), ca_key.get());
  auto other = cert("other", leaf_key.get(), false, ca1.get(), ca_key.get());

  chain_key alone{}, with_ca{}, with_ca_and_leaf{}, with_other_ca{}, other_leaf{};
  REQUIRE(cache.key_of(leaf.get(), nullptr, alone));
  x509_stack sent_ca{ca1.get()};
  REQUIRE(cache.key_of(leaf.get(), sent_ca.s, with_ca));
  x509_stack sent_leaf_ca{leaf.get(), ca1.get()};  // as OpenSSL passes it: leaf first
  REQUIRE(cache.key_of(leaf.get(), sent_leaf_ca.s, with_ca_and_leaf));
  x509_stack sent_ca2{ca2.get()};
  REQUIRE(cache.key_of(leaf.get(), sent_ca2.s, with_other_ca));
  REQUIRE(cache.key_of(other.get(), sent_ca.s, other_leaf));

  CHECK(with_ca == with_ca_and_leaf);
  CHECK(alone != with_ca);
  CHECK(with_ca != with_other_ca);
  CHECK(with_ca != other_leaf);
  chain_key again{};
  REQUIRE(cache.key_of(leaf.get(), sent_ca.s, again));
  CHECK(again == with_ca);
}

TEST_CASE("tls: an accepted identity is found again only within the chain's validity span") {
  chain_cache cache;
  const chain_key k = key_n(1);
  const auto id = std::make_shared<const client_identity>(accepted("alice@lab.test"));
  cache.insert(k, id, 1000, 2000);
  const auto out = cache.find(k, 1500);
  REQUIRE(out);
  CHECK(out->ok());
  CHECK(out->upn == "alice@lab.test");
  CHECK(out->chain == id->chain);
  CHECK(cache.find(k, 1000));
  CHECK(cache.find(k, 2000));
  CHECK_FALSE(cache.find(k, 999));
  CHECK_FALSE(cache.find(k, 2001));
  CHECK_FALSE(cache.find(key_n(2), 1500));
}

TEST_CASE("tls: a found identity is the cached one, shared and not copied") {
  chain_cache cache;
  const auto id = std::make_shared<const client_identity>(accepted("alice@lab.test"));
  cache.insert(key_n(1), id, 0, 10);
  const auto first = cache.find(key_n(1), 5);
  const auto second = cache.find(key_n(1), 5);
  CHECK(first.get() == id.get());
  CHECK(second.get() == id.get());
}

TEST_CASE("tls: rejected identities are never cached") {
  chain_cache cache;
  client_identity id = accepted("mallory@lab.test");
  id.reason = rejection::untrusted;
  cache.insert(key_n(1), std::make_shared<const client_identity>(id), 0, 4000000000);
  cache.insert(key_n(2), nullptr, 0, 4000000000);
  CHECK_FALSE(cache.find(key_n(1), 1000));
  CHECK_FALSE(cache.find(key_n(2), 1000));
  CHECK(cache.size() == 0);
}

TEST_CASE("tls: the cache is bounded and evicts the least recently used chain") {
  auto shared = [](const std::string& upn) {
    return std::make_shared<const client_identity>(accepted(upn));
  };
  SUBCASE("bounded") {
    chain_cache cache(80);
    for (unsigned i = 0; i < 1000; ++i)
      cache.insert(key_n(i, static_cast<unsigned char>(i % 7)), shared("u"), 0, 10);
    CHECK(cache.size() <= 80);
    CHECK(cache.size() > 0);
  }
  SUBCASE("least recently used goes first") {
    chain_cache cache(16);  // 8 shards of 2; all keys below share one shard
    cache.insert(key_n(1), shared("a"), 0, 10);
    cache.insert(key_n(2), shared("b"), 0, 10);
    REQUIRE(cache.find(key_n(1), 5));  // a is now the most recent
    cache.insert(key_n(3), shared("c"), 0, 10);
    const auto a = cache.find(key_n(1), 5);
    REQUIRE(a);
    CHECK(a->upn == "a");
    CHECK_FALSE(cache.find(key_n(2), 5));
    CHECK(cache.find(key_n(3), 5));
  }
}
