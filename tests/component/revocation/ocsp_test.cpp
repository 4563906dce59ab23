#include "revocation/checker.hpp"

#include <csignal>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "observability/metrics.hpp"
#include "support.hpp"

extern char** environ;

using namespace test;
using namespace std::chrono_literals;

namespace {

// `openssl ocsp` as a responder over the lab issuing CA's database, on a port the kernel picks
// (-port 0; it prints "ACCEPT [::]:<port> PID=<pid>"). Stopped by PID.
class ocsp_responder {
 public:
  ocsp_responder(const std::string& signer_cert, const std::string& signer_key) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    const std::string index = pki("ca/db/issuing/index.txt");
    const std::string ca = pki("ca/issuing.pem");
    std::vector<std::string> args{"openssl", "ocsp", "-index", index, "-port", "0", "-rsigner",
                                  signer_cert, "-rkey", signer_key, "-CA", ca,
                                  "-ignore_err", "-nrequest", "1000"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawnp(&pid_, "openssl", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    REQUIRE(rc == 0);
    out_ = fds[0];
    // Bounded wait for the ACCEPT line.
    std::string text;
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (text.find(" PID=") == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = read(out_, buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    const auto pid_at = text.find(" PID=");
    REQUIRE_MESSAGE(pid_at != std::string::npos, "openssl ocsp did not start: " << text);
    const auto colon = text.rfind(':', pid_at);
    port_ = std::stoi(text.substr(colon + 1, pid_at - colon - 1));
  }
  ~ocsp_responder() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
    if (out_ >= 0) close(out_);
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int port_ = 0;
};

rev::policy ocsp_policy(const std::string& responder = {}) {
  rev::policy p;
  p.checks = rev::mode::ocsp;
  p.ocsp_responder = responder;
  return p;
}

rev::options short_options() {
  rev::options o;
  o.timeout = 3000ms;
  return o;
}

id::chain_refs leaf(const std::string& client, const std::string& ocsp_url = {}) {
  id::chain_refs refs = lab_refs(client);
  refs.resize(1);
  if (!ocsp_url.empty()) refs[0].ocsp_urls = {ocsp_url};
  return refs;
}

// A responder certificate issued by the lab issuing CA, with or without the OCSPSigning EKU.
void make_responder(const temp_dir& dir, bool ocsp_signing) {
  const ossl::x509_ptr ca = read_cert(pki("ca/issuing.pem"));
  const ossl::evp_pkey_ptr ca_key = read_key(pki("ca/issuing.key"));
  ossl::evp_pkey_ptr key{EVP_EC_gen("P-256")};
  ossl::x509_ptr x{X509_new()};
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 0x5151);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "CN", MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>("test responder"), -1, -1, 0);
  X509_set_issuer_name(x.get(), X509_get_subject_name(ca.get()));
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_set_pubkey(x.get(), key.get());
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), x.get(), nullptr, nullptr, 0);
  X509_EXTENSION* e = X509V3_EXT_conf_nid(nullptr, &ctx, NID_ext_key_usage,
                                          ocsp_signing ? "OCSPSigning" : "clientAuth");
  X509_add_ext(x.get(), e, -1);
  X509_EXTENSION_free(e);
  REQUIRE(X509_sign(x.get(), ca_key.get(), EVP_sha256()) > 0);
  ossl::bio_ptr c{BIO_new_file(dir.file("responder.pem").c_str(), "wb")};
  PEM_write_bio_X509(c.get(), x.get());
  ossl::bio_ptr k{BIO_new_file(dir.file("responder.key").c_str(), "wb")};
  PEM_write_bio_PrivateKey(k.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
}

struct fixture {
  std::shared_ptr<id::issuer_registry> issuers = lab_registry();
  cbagate::observability::registry metrics;
  rev::checker checker{short_options(), issuers, metrics};
};

}  // namespace

TEST_CASE("revocation: OCSP from openssl ocsp says good, revoked and unknown") {
  ocsp_responder responder(pki("ca/issuing.pem"), pki("ca/issuing.key"));
  fixture f;
  const auto alice = leaf("alice", responder.url());  // the AIA URL
  CHECK_FALSE(f.checker.try_check(alice, ocsp_policy(), unix_now()).has_value());
  const rev::verdict good = await_check(f.checker, alice, ocsp_policy());
  CHECK(good.state == rev::status::good);
  CHECK(good.from == rev::source::ocsp);
  const auto cached = f.checker.try_check(alice, ocsp_policy(), unix_now());
  REQUIRE(cached);
  CHECK(cached->state == rev::status::good);

  const rev::verdict revoked = await_check(f.checker, leaf("revoked"), ocsp_policy(responder.url()));
  CHECK(revoked.state == rev::status::revoked);
  CHECK(revoked.from == rev::source::ocsp);
  CHECK(revoked.reason == "keyCompromise");

  auto stranger = leaf("alice");
  stranger[0].serial = std::string("\x01\x02\x03", 3);
  const rev::verdict unknown = await_check(f.checker, stranger, ocsp_policy(responder.url()));
  CHECK(unknown.state == rev::status::unknown);
  CHECK(unknown.reason == "ocsp_unknown");
  CHECK(f.checker.ocsp_entries() == 3);
  CHECK(metric(f.metrics, R"(cbagate_revocation_fetches_total{kind="ocsp"})") == 3);
}

TEST_CASE("revocation: OCSP accepts a delegated responder with the OCSPSigning EKU") {
  temp_dir dir;
  make_responder(dir, true);
  ocsp_responder responder(dir.file("responder.pem"), dir.file("responder.key"));
  fixture f;
  const rev::verdict v = await_check(f.checker, leaf("revoked"), ocsp_policy(responder.url()));
  CHECK(v.state == rev::status::revoked);
}

TEST_CASE("revocation: OCSP refuses a responder certificate without the OCSPSigning EKU") {
  temp_dir dir;
  make_responder(dir, false);
  ocsp_responder responder(dir.file("responder.pem"), dir.file("responder.key"));
  fixture f;
  const rev::verdict v = await_check(f.checker, leaf("alice"), ocsp_policy(responder.url()));
  CHECK(v.state == rev::status::unknown);
  CHECK(v.reason.find("signature") != std::string::npos);
  CHECK(metric(f.metrics,
               R"(cbagate_revocation_fetch_errors_total{kind="ocsp",reason="signature"})") == 1);
}

TEST_CASE("revocation: OCSP responder down gives unknown with the connect error") {
  std::string url;
  {
    http_server closed({});
    url = closed.url("/");
  }
  fixture f;
  const rev::verdict v = await_check(f.checker, leaf("alice"), ocsp_policy(url));
  CHECK(v.state == rev::status::unknown);
  CHECK(v.from == rev::source::ocsp);
  CHECK(v.reason.find("ocsp " + url + ": connect: ") == 0);
  // No URL at all: unknown at once.
  const auto none = f.checker.try_check(leaf("alice"), ocsp_policy(), unix_now());
  REQUIRE(none);
  CHECK(none->reason == "no_ocsp_url");
}

TEST_CASE("revocation: crl+ocsp: revoked by either source, good when one says good") {
  ocsp_responder responder(pki("ca/issuing.pem"), pki("ca/issuing.key"));
  fixture f;
  std::string err;
  auto files = rev::crl_files::load({pki("crl/root.crl.pem")}, *f.issuers, &err);
  REQUIRE(files.has_value());
  rev::policy p = ocsp_policy(responder.url());
  p.checks = rev::mode::crl_and_ocsp;
  p.fetch_cdp = false;
  p.files = *files;
  // Leaf: no CRL, OCSP good -> good. Issuing CA: root CRL good; OCSP is asked of the same
  // responder, which does not know the CA -> unknown, the CRL decides.
  const rev::verdict good = await_check(f.checker, lab_refs("alice"), p);
  CHECK(good.state == rev::status::good);
  const rev::verdict revoked = await_check(f.checker, lab_refs("revoked"), p);
  CHECK(revoked.state == rev::status::revoked);
  CHECK(revoked.from == rev::source::ocsp);
}
