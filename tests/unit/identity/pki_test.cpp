// The verifier against the dev PKI of certs-dev/make-pki (the `pki` ctest fixture).
#include "identity/verifier.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "test_certs.hpp"

using cbagate::identity::client_identity;
using cbagate::identity::rejection;
using cbagate::identity::to_string;
using cbagate::identity::verifier;
using cbagate::identity::verifier_options;
namespace ossl = cbagate::ossl;
namespace fs = std::filesystem;

namespace {

constexpr std::int64_t day = 86400;

fs::path pki_dir() { return fs::path(CBAGATE_TEST_PKI); }

std::string pki(const std::string& rel) { return (pki_dir() / rel).string(); }

struct manifest_row {
  std::string name, expected, upn, description;
};

std::vector<manifest_row> manifest() {
  std::ifstream in(pki_dir() / "manifest.tsv");
  REQUIRE_MESSAGE(in.good(), "no " << pki("manifest.tsv") << ": run certs-dev/make-pki");
  std::vector<manifest_row> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    manifest_row row;
    std::getline(fields, row.name, '\t');
    std::getline(fields, row.expected, '\t');
    std::getline(fields, row.upn, '\t');
    std::getline(fields, row.description);
    rows.push_back(row);
  }
  return rows;
}

ossl::x509_stack_ptr read_chain(const std::string& path) {
  ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
  REQUIRE_MESSAGE(bio != nullptr, "cannot open " << path);
  ossl::x509_stack_ptr chain{sk_X509_new_null()};
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    sk_X509_push(chain.get(), x);
  ERR_clear_error();
  REQUIRE_MESSAGE(sk_X509_num(chain.get()) > 0, "no certificate in " << path);
  return chain;
}

ossl::x509_ptr read_cert(const std::string& path) {
  auto chain = read_chain(path);
  X509* first = sk_X509_value(chain.get(), 0);
  X509_up_ref(first);
  return ossl::x509_ptr{first};
}

verifier_options lab_options() {
  verifier_options o;
  o.client_ca_file = pki("client-roots.pem");
  o.crl_files = {pki("crl/issuing.crl.pem"), pki("crl/root.crl.pem")};
  return o;
}

std::shared_ptr<const verifier> make(const verifier_options& o) {
  std::string error;
  auto v = verifier::make(o, &error);
  REQUIRE_MESSAGE(v.has_value(), error);
  return v.value();
}

// A client as a TLS peer presents it: leaf plus <name>-chain.pem.
client_identity verify_client(const verifier& v, const std::string& name,
                              std::optional<std::int64_t> at = {}) {
  auto leaf = read_cert(pki("clients/" + name + ".pem"));
  auto chain = read_chain(pki("clients/" + name + "-chain.pem"));
  return v.verify(leaf.get(), chain.get(), at);
}

}  // namespace

TEST_CASE("verifier: every manifest client gets its expected outcome") {
  const auto rows = manifest();
  REQUIRE(rows.size() >= 14);
  auto v = make(lab_options());
  for (const manifest_row& row : rows) {
    CAPTURE(row.name);
    CAPTURE(row.description);
    const client_identity id = verify_client(*v, row.name);
    CAPTURE(id.detail);
    CHECK(to_string(id.reason) == (row.expected == "ok" ? "none" : row.expected));
    CHECK(id.presented);
    CHECK_FALSE(id.sha256.empty());
    if (row.expected == "ok") {
      CHECK(id.upn == row.upn);
    } else {
      CHECK(id.upn.empty());
    }
  }
}

TEST_CASE("verifier: lab outcomes carry the IIS substatus") {
  auto v = make(lab_options());
  CHECK(iis_substatus(verify_client(*v, "alice").reason) == 0);
  CHECK(iis_substatus(verifier::no_certificate().reason) == 7);
  CHECK(iis_substatus(verify_client(*v, "revoked").reason) == 13);
  CHECK(iis_substatus(verify_client(*v, "untrusted").reason) == 16);
  CHECK(iis_substatus(verify_client(*v, "no-upn").reason) == 16);
  CHECK(iis_substatus(verify_client(*v, "expired").reason) == 17);
  CHECK(iis_substatus(verify_client(*v, "not-yet-valid").reason) == 17);
}

TEST_CASE("verifier: the CRL is what rejects the revoked client") {
  verifier_options o = lab_options();
  o.crl_files.clear();
  const client_identity id = verify_client(*make(o), "revoked");
  CHECK_MESSAGE(id.reason == rejection::none, id.detail);
  CHECK(id.upn == "mallory@lab.test");
}

TEST_CASE("verifier: a DER CRL works like the PEM one") {
  verifier_options o = lab_options();
  o.crl_files = {pki("crl/issuing.crl.der"), pki("crl/root.crl.pem")};
  auto v = make(o);
  CHECK(verify_client(*v, "revoked").reason == rejection::revoked);
  CHECK(verify_client(*v, "alice").reason == rejection::none);
}

TEST_CASE("verifier: a CA without a CRL fails closed as revoked") {
  verifier_options o = lab_options();
  o.crl_files = {pki("crl/issuing.crl.pem")};  // the root's CRL is missing
  const client_identity id = verify_client(*make(o), "alice");
  CHECK(id.reason == rejection::revoked);
  CHECK(id.detail.find("no CRL loaded") != std::string::npos);
}

TEST_CASE("verifier: subject CN source finds dave") {
  verifier_options o = lab_options();
  CHECK(verify_client(*make(o), "upn-subject-cn").reason == rejection::no_upn);
  o.upn.from_subject = true;
  const client_identity id = verify_client(*make(o), "upn-subject-cn");
  CHECK_MESSAGE(id.reason == rejection::none, id.detail);
  CHECK(id.upn == "dave@lab.test");
}

TEST_CASE("verifier: configured intermediates complete a leaf-only chain") {
  auto leaf = read_cert(pki("clients/alice.pem"));
  verifier_options o = lab_options();
  const client_identity without = make(o)->verify(leaf.get(), nullptr);
  CHECK(without.reason == rejection::untrusted);
  o.client_intermediates_file = pki("client-intermediates.pem");
  const client_identity with = make(o)->verify(leaf.get(), nullptr);
  CHECK_MESSAGE(with.reason == rejection::none, with.detail);
  CHECK(with.upn == "alice@lab.test");
}

TEST_CASE("verifier: intermediates are never anchors") {
  SUBCASE("peer sends the rogue root as its chain") {
    const client_identity id = verify_client(*make(lab_options()), "untrusted");
    CHECK(id.reason == rejection::untrusted);
    CHECK(id.upn.empty());
  }
  SUBCASE("rogue root configured as an intermediate") {
    verifier_options o = lab_options();
    o.client_intermediates_file = pki("ca/rogue-root.pem");
    auto leaf = read_cert(pki("clients/untrusted.pem"));
    CHECK(make(o)->verify(leaf.get(), nullptr).reason == rejection::untrusted);
  }
  SUBCASE("issuing CA as intermediate without its root as anchor") {
    verifier_options o;
    o.client_ca_file = pki("ca/rogue-root.pem");
    o.client_intermediates_file = pki("client-intermediates.pem");
    CHECK(verify_client(*make(o), "alice").reason == rejection::untrusted);
  }
}

TEST_CASE("verifier: verification time shows expiry and CRL staleness") {
  auto v = make(lab_options());
  const std::int64_t now = cbagate::identity::test::now();
  CHECK(verify_client(*v, "alice", now).reason == rejection::none);
  const client_identity later = verify_client(*v, "alice", now + 3 * 365 * day);
  CHECK(later.reason == rejection::expired);
  const client_identity stale = verify_client(*v, "alice", now + 60 * day);
  CHECK(stale.reason == rejection::revoked);
  CHECK(stale.detail.find("stale CRL") != std::string::npos);
  verifier_options no_crl = lab_options();
  no_crl.crl_files.clear();
  CHECK(verify_client(*make(no_crl), "alice", now + 60 * day).reason == rejection::none);
}

TEST_CASE("verifier: alice's descriptive fields") {
  auto leaf = read_cert(pki("clients/alice.pem"));
  const client_identity id = make(lab_options())->verify(leaf.get(), nullptr);
  CHECK(id.subject.find("CN=Alice Example") != std::string::npos);
  CHECK(id.issuer.find("CN=cbagate Lab Issuing CA") != std::string::npos);

  // Serial: upper-case hex of the INTEGER, the form of `openssl x509 -serial`.
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  i2a_ASN1_INTEGER(bio.get(), X509_get0_serialNumber(leaf.get()));
  char* data = nullptr;
  const long len = BIO_ctrl(bio.get(), BIO_CTRL_INFO, 0, static_cast<void*>(&data));
  CHECK(id.serial == std::string(data, static_cast<std::size_t>(len)));
  CHECK(id.serial.find_first_not_of("0123456789ABCDEF") == std::string::npos);

  // SHA-256 of the DER, as `openssl x509 -fingerprint -sha256` (without the colons).
  const auto der = cbagate::identity::test::der_of(leaf.get());
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  REQUIRE(EVP_Digest(der.data(), der.size(), md, &n, EVP_sha256(), nullptr) == 1);
  std::string hex;
  for (unsigned int i = 0; i < n; ++i) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", md[i]);
    hex += b;
  }
  CHECK(id.sha256 == hex);

  const std::int64_t now = cbagate::identity::test::now();
  CHECK(id.not_before <= now);
  CHECK(id.not_after > now + 700 * day);  // "2 years from now"
  CHECK(id.not_after - id.not_before > 700 * day);
  int days = 0, secs = 0;
  REQUIRE(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(leaf.get()),
                         X509_get0_notAfter(leaf.get())) == 1);
  CHECK(id.not_after - id.not_before == std::int64_t{days} * day + secs);
}

TEST_CASE("verifier: descriptive fields are filled on rejection") {
  const client_identity id = verify_client(*make(lab_options()), "revoked");
  CHECK(id.reason == rejection::revoked);
  CHECK_FALSE(id.subject.empty());
  CHECK_FALSE(id.issuer.empty());
  CHECK_FALSE(id.serial.empty());
  CHECK(id.sha256.size() == 64);
  CHECK(id.not_after > id.not_before);
}

// Issue 5: revocation is decided per request from the chain refs the verifier computes once.
TEST_CASE("verifier: an accepted chain carries its refs, leaf first, anchor excluded") {
  verifier_options o;
  o.client_ca_file = pki("client-roots.pem");
  o.issuers = std::make_shared<cbagate::identity::issuer_registry>();
  const auto v = make(o);
  // The anchors are registered at make().
  auto root = read_cert(pki("ca/root.pem"));
  CHECK(o.issuers->find(cbagate::identity::issuer_id_of(root.get())) != nullptr);
  auto issuing = read_cert(pki("ca/issuing.pem"));
  CHECK(o.issuers->find(cbagate::identity::issuer_id_of(issuing.get())) == nullptr);

  const client_identity id = verify_client(*v, "alice");
  REQUIRE_MESSAGE(id.ok(), id.detail);
  REQUIRE(id.chain.size() == 2);  // alice, the issuing CA; not the root
  CHECK(id.chain[0].issuer == cbagate::identity::issuer_id_of(issuing.get()));
  CHECK(id.chain[1].issuer == cbagate::identity::issuer_id_of(root.get()));
  auto leaf = read_cert(pki("clients/alice.pem"));
  CHECK(id.chain[0].serial ==
        cbagate::identity::serial_octets(X509_get0_serialNumber(leaf.get())));
  // The chain's issuing CA joined the registry (CRLs of it can now be verified).
  CHECK(o.issuers->find(cbagate::identity::issuer_id_of(issuing.get())) != nullptr);
}

TEST_CASE("verifier: a refused chain carries no refs") {
  verifier_options o = lab_options();
  const client_identity id = verify_client(*make(o), "revoked");
  CHECK(id.reason == rejection::revoked);
  CHECK(id.chain.empty());
  const client_identity expired = verify_client(*make(o), "expired");
  CHECK(expired.chain.empty());
}

TEST_CASE("verifier: without crl_files a revoked certificate verifies (revocation is per request)") {
  verifier_options o = lab_options();
  o.crl_files.clear();
  const client_identity id = verify_client(*make(o), "revoked");
  CHECK_MESSAGE(id.reason == rejection::none, id.detail);
  CHECK(id.upn == "mallory@lab.test");
  CHECK(id.chain.size() == 2);
}
