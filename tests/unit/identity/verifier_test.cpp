#include "identity/verifier.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include <openssl/err.h>

#include "test_certs.hpp"

using cbagate::identity::client_identity;
using cbagate::identity::rejection;
using cbagate::identity::verifier;
using cbagate::identity::verifier_options;
namespace t = cbagate::identity::test;
namespace ossl = cbagate::ossl;

namespace {

constexpr std::int64_t day = 86400;

// A two-level PKI in memory: root -> leaves. Only certificates and CRLs reach the disk.
struct mini_pki {
  t::temp_dir dir;
  ossl::evp_pkey_ptr root_key = t::make_key();
  ossl::x509_ptr root;
  ossl::evp_pkey_ptr leaf_key = t::make_key();

  explicit mini_pki(const std::string& root_name = "Mini Root") {
    t::cert_spec spec;
    spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, root_name}};
    spec.ca = true;
    spec.eku = "";
    spec.not_after = t::now() + 3650 * day;
    root = t::make_cert(spec, root_key.get());
    dir.write("root.pem", t::pem_of(root.get()));
  }

  ossl::x509_ptr leaf(t::cert_spec spec) {
    return t::make_cert(spec, leaf_key.get(), root.get(), root_key.get());
  }

  std::string crl(const std::string& name, std::vector<X509*> revoked, std::int64_t this_update,
                  std::int64_t next_update) {
    auto c = t::make_crl(root.get(), root_key.get(), revoked, this_update, next_update);
    return dir.write(name, t::pem_of(c.get()));
  }

  std::shared_ptr<const verifier> make(std::vector<std::string> crls = {}) {
    verifier_options options;
    options.client_ca_file = (dir.path() / "root.pem").string();
    options.crl_files = std::move(crls);
    std::string error;
    auto v = verifier::make(options, &error);
    REQUIRE_MESSAGE(v.has_value(), error);
    return v.value();
  }
};

t::cert_spec user(long serial, std::string eku = "clientAuth") {
  t::cert_spec spec;
  spec.subject = {{NID_commonName, V_ASN1_UTF8STRING, "User " + std::to_string(serial)}};
  spec.upns = {{V_ASN1_UTF8STRING, "user" + std::to_string(serial) + "@lab.test"}};
  spec.eku = std::move(eku);
  spec.serial = serial;
  return spec;
}

}  // namespace

TEST_CASE("verifier: accepts a leaf issued by the anchor") {
  mini_pki pki;
  auto leaf = pki.leaf(user(10));
  const client_identity id = pki.make()->verify(leaf.get(), nullptr);
  CHECK_MESSAGE(id.reason == rejection::none, id.detail);
  CHECK(id.presented);
  CHECK(id.upn == "user10@lab.test");
  CHECK(id.serial == "0A");
  CHECK(id.subject == "CN=User 10");
  CHECK(id.issuer == "CN=Mini Root");
}

TEST_CASE("verifier: a leaf without an EKU extension is wrong_eku") {
  mini_pki pki;
  auto leaf = pki.leaf(user(11, ""));
  const client_identity id = pki.make()->verify(leaf.get(), nullptr);
  CHECK(id.reason == rejection::wrong_eku);
  CHECK(id.detail.find("no extendedKeyUsage") != std::string::npos);
  CHECK(id.upn.empty());
}

TEST_CASE("verifier: EKU must list clientAuth") {
  mini_pki pki;
  auto v = pki.make();
  SUBCASE("serverAuth only") {
    auto leaf = pki.leaf(user(12, "serverAuth"));
    CHECK(v->verify(leaf.get(), nullptr).reason == rejection::wrong_eku);
  }
  SUBCASE("anyExtendedKeyUsage only") {
    auto leaf = pki.leaf(user(13, "anyExtendedKeyUsage"));
    CHECK(v->verify(leaf.get(), nullptr).reason == rejection::wrong_eku);
  }
  SUBCASE("clientAuth among others") {
    auto leaf = pki.leaf(user(14, "serverAuth,clientAuth,emailProtection"));
    CHECK(v->verify(leaf.get(), nullptr).reason == rejection::none);
  }
}

TEST_CASE("verifier: no certificate") {
  mini_pki pki;
  const client_identity a = verifier::no_certificate();
  CHECK_FALSE(a.presented);
  CHECK(a.reason == rejection::no_certificate);
  const client_identity b = pki.make()->verify(nullptr, nullptr);
  CHECK_FALSE(b.presented);
  CHECK(b.reason == rejection::no_certificate);
}

TEST_CASE("verifier: CRL outcomes") {
  mini_pki pki;
  auto good = pki.leaf(user(20));
  auto bad = pki.leaf(user(21));
  const std::int64_t now = t::now();
  const std::string current = pki.crl("current.pem", {bad.get()}, now - day, now + 30 * day);

  SUBCASE("a listed certificate is revoked, others pass") {
    auto v = pki.make({current});
    CHECK(v->verify(good.get(), nullptr).reason == rejection::none);
    const client_identity id = v->verify(bad.get(), nullptr);
    CHECK(id.reason == rejection::revoked);
    CHECK(id.detail.find("revoked") != std::string::npos);
    CHECK(id.serial == "15");  // descriptive fields survive a rejection
  }
  SUBCASE("stale CRL fails closed as revoked") {
    const std::string stale = pki.crl("stale.pem", {}, now - 60 * day, now - 30 * day);
    const client_identity id = pki.make({stale})->verify(good.get(), nullptr);
    CHECK(id.reason == rejection::revoked);
    CHECK(id.detail.find("stale CRL") != std::string::npos);
  }
  SUBCASE("a CRL signed by another key with the issuer's name is unusable") {
    mini_pki impostor("Mini Root");
    const std::string forged = impostor.crl("forged.pem", {}, now - day, now + 30 * day);
    const client_identity id = pki.make({forged})->verify(good.get(), nullptr);
    CHECK(id.reason == rejection::revoked);
    CHECK(id.detail.find("CRL signature failure") != std::string::npos);
  }
  SUBCASE("CRL not yet valid fails closed as revoked") {
    const std::string early = pki.crl("early.pem", {}, now + day, now + 30 * day);
    CHECK(pki.make({early})->verify(good.get(), nullptr).reason == rejection::revoked);
  }
  SUBCASE("an expired leaf reads expired even when the CRL is stale too") {
    t::cert_spec spec = user(22);
    spec.not_before = now - 90 * day;
    spec.not_after = now - 45 * day;
    auto old = pki.leaf(spec);
    const std::string stale = pki.crl("stale.pem", {}, now - 60 * day, now - 30 * day);
    CHECK(pki.make({stale})->verify(old.get(), nullptr).reason == rejection::expired);
  }
  SUBCASE("a revoked certificate that also expired reads revoked") {
    t::cert_spec spec = user(23);
    spec.not_before = now - 90 * day;
    spec.not_after = now - 45 * day;
    auto old = pki.leaf(spec);
    const std::string crl = pki.crl("both.pem", {old.get()}, now - day, now + 30 * day);
    CHECK(pki.make({crl})->verify(old.get(), nullptr).reason == rejection::revoked);
  }
  SUBCASE("no CRL for an issuer in the chain fails closed as revoked") {
    // A CRL of some other CA is configured, so CRL checking is on, but none covers Mini Root.
    mini_pki other("Other Root");
    const std::string foreign = other.crl("foreign.pem", {}, now - day, now + 30 * day);
    const client_identity id = pki.make({foreign})->verify(good.get(), nullptr);
    CHECK(id.reason == rejection::revoked);
    CAPTURE(id.detail);
    CHECK(cbagate::identity::iis_substatus(id.reason) == 13);
    CHECK(id.detail.find("no CRL loaded") != std::string::npos);
    CHECK(id.detail.find("fail closed") != std::string::npos);
  }
  SUBCASE("without CRLs configured nothing is checked") {
    CHECK(pki.make()->verify(bad.get(), nullptr).reason == rejection::none);
  }
}

TEST_CASE("verifier: validity period") {
  mini_pki pki;
  auto v = pki.make();
  const std::int64_t now = t::now();
  auto leaf = pki.leaf(user(30));
  CHECK(v->verify(leaf.get(), nullptr, now + 60 * day).reason == rejection::expired);
  CHECK(v->verify(leaf.get(), nullptr, now - 2 * day).reason == rejection::not_yet_valid);
  CHECK(v->verify(leaf.get(), nullptr, now).reason == rejection::none);
}

TEST_CASE("verifier: descriptive fields are log-safe") {
  mini_pki pki;
  t::cert_spec spec = user(31);
  spec.subject = {{NID_organizationName, V_ASN1_UTF8STRING, "Lab, Inc."},
                  {NID_commonName, V_ASN1_UTF8STRING, "Eve\nInjected\x7F\x1B[31m J\xC3\xBCrgen"}};
  auto leaf = pki.leaf(spec);
  const client_identity id = pki.make()->verify(leaf.get(), nullptr);
  CHECK(id.reason == rejection::none);
  for (const char c : id.subject) {
    const auto u = static_cast<unsigned char>(c);
    CHECK((u >= 0x20 && u < 0x7F));
  }
  CHECK(id.subject.find("O=Lab\\, Inc.") != std::string::npos);
  CHECK(id.subject.find("CN=Eve") != std::string::npos);
  CHECK(id.sha256.size() == 64);
  CHECK(id.not_after - id.not_before == 30 * day + 3600);
}

TEST_CASE("verifier: make reports the file that fails") {
  t::temp_dir dir;
  mini_pki pki;
  const std::string root = (pki.dir.path() / "root.pem").string();
  verifier_options options;
  std::string error;

  SUBCASE("missing CA file") {
    options.client_ca_file = (dir.path() / "nope.pem").string();
    auto v = verifier::make(options, &error);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == cbagate::identity::errc::ca_load_failed);
    CHECK(error.find("client_ca '" + options.client_ca_file + "'") != std::string::npos);
    CHECK(error.find("No such file") != std::string::npos);
  }
  SUBCASE("garbage CA file") {
    options.client_ca_file = dir.write("garbage.pem", "this is not a certificate\n");
    auto v = verifier::make(options, &error);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == cbagate::identity::errc::ca_load_failed);
    CHECK(error.find(options.client_ca_file) != std::string::npos);
    CHECK(error.find("no certificate found") != std::string::npos);
  }
  SUBCASE("empty CA file") {
    options.client_ca_file = dir.write("empty.pem", "");
    CHECK_FALSE(verifier::make(options, &error).has_value());
    CHECK(error.find(options.client_ca_file) != std::string::npos);
  }
  SUBCASE("corrupt PEM after a good certificate") {
    options.client_ca_file = dir.write(
        "half.pem", t::pem_of(pki.root.get()) +
                        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n");
    CHECK_FALSE(verifier::make(options, &error).has_value());
    CHECK(error.find("malformed PEM after 1 certificate") != std::string::npos);
  }
  SUBCASE("DER CA file is accepted") {
    auto der = t::der_of(pki.root.get());
    options.client_ca_file = dir.write("root.der", std::string(der.begin(), der.end()));
    CHECK(verifier::make(options, &error).has_value());
  }
  SUBCASE("garbage CRL file") {
    options.client_ca_file = root;
    options.crl_files = {dir.write("bad.crl", "garbage")};
    auto v = verifier::make(options, &error);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == cbagate::identity::errc::crl_load_failed);
    CHECK(error.find("crl '" + options.crl_files[0] + "'") != std::string::npos);
  }
  SUBCASE("missing intermediates file") {
    options.client_ca_file = root;
    options.client_intermediates_file = (dir.path() / "missing.pem").string();
    auto v = verifier::make(options, &error);
    REQUIRE_FALSE(v.has_value());
    CHECK(v.error() == cbagate::identity::errc::intermediates_load_failed);
    CHECK(error.find("client_intermediates '" + options.client_intermediates_file + "'") !=
          std::string::npos);
  }
  SUBCASE("null error_detail is allowed") {
    options.client_ca_file = (dir.path() / "nope.pem").string();
    CHECK_FALSE(verifier::make(options).has_value());
  }
}

TEST_CASE("verifier: leaves the OpenSSL error queue untouched") {
  mini_pki pki;
  auto v = pki.make();
  t::cert_spec spec = user(40);
  spec.not_after = t::now() - day;
  spec.not_before = t::now() - 2 * day;
  auto leaf = pki.leaf(spec);
  ERR_raise(ERR_LIB_SSL, 1);  // what a handshake in progress might have queued
  const unsigned long before = ERR_peek_last_error();
  CHECK(v->verify(leaf.get(), nullptr).reason == rejection::expired);
  CHECK(ERR_peek_last_error() == before);
  ERR_clear_error();
}

TEST_CASE("verifier: one verifier serves concurrent handshakes") {
  mini_pki pki;
  auto good = pki.leaf(user(50));
  auto bad = pki.leaf(user(51));
  const std::int64_t now = t::now();
  auto v = pki.make({pki.crl("crl.pem", {bad.get()}, now - day, now + 30 * day)});
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < 50; ++k) {
        if (v->verify(good.get(), nullptr).upn != "user50@lab.test") ++wrong;
        if (v->verify(bad.get(), nullptr).reason != rejection::revoked) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong.load() == 0);
}

TEST_CASE("verifier: reports the validity span of the whole verified chain") {
  mini_pki pki;
  t::cert_spec spec = user(12);
  spec.not_before = t::now() - 5 * day;
  spec.not_after = t::now() + 4000 * day;  // past the root's notAfter (now + 3650 days)
  auto leaf = pki.leaf(spec);
  cbagate::identity::chain_validity span;
  const client_identity id = pki.make()->verify(leaf.get(), nullptr, {}, &span);
  REQUIRE_MESSAGE(id.ok(), id.detail);
  CHECK(span.not_before > id.not_before);   // the root (now - 1 hour) starts after the leaf
  CHECK(span.not_before >= t::now() - 3600 - 5);
  CHECK(span.not_after < id.not_after);     // the root ends first
  CHECK(span.not_after <= t::now() + 3650 * day);
  CHECK(span.not_after > t::now() + 3649 * day);
}
