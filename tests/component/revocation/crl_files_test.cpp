#include "revocation/checker.hpp"

#include <doctest/doctest.h>

#include "observability/metrics.hpp"
#include "support.hpp"

using namespace test;

namespace {

struct fixture {
  std::shared_ptr<id::issuer_registry> issuers = lab_registry();
  cbagate::observability::registry metrics;
  rev::checker checker{rev::options{}, issuers, metrics};
  ossl::x509_ptr root = read_cert(pki("ca/root.pem"));
  ossl::x509_ptr issuing = read_cert(pki("ca/issuing.pem"));
  ossl::evp_pkey_ptr issuing_key = read_key(pki("ca/issuing.key"));
  ossl::evp_pkey_ptr rogue_key = read_key(pki("ca/rogue-root.key"));
  ossl::x509_ptr rogue = read_cert(pki("ca/rogue-root.pem"));
  temp_dir dir;

  std::shared_ptr<const rev::crl_files> load(const std::vector<std::string>& paths) {
    std::string err;
    auto r = rev::crl_files::load(paths, *issuers, &err);
    INFO(err);
    REQUIRE(r.has_value());
    return *r;
  }
  std::string load_error(const std::vector<std::string>& paths) {
    std::string err;
    auto r = rev::crl_files::load(paths, *issuers, &err);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == rev::errc::crl_load_failed);
    return err;
  }
  rev::policy file_policy(std::shared_ptr<const rev::crl_files> files) {
    rev::policy p;
    p.checks = rev::mode::crl;
    p.strict = true;
    p.files = std::move(files);
    return p;
  }
};

}  // namespace

TEST_CASE("revocation: file CRLs say revoked (with the reason) and good") {
  fixture f;
  const auto files = f.load({pki("crl/issuing.crl.pem"), pki("crl/root.crl.pem")});
  CHECK(files->size() == 2);
  const rev::policy p = f.file_policy(files);
  const auto revoked = f.checker.try_check(lab_refs("revoked"), p, unix_now());
  REQUIRE(revoked);
  CHECK(revoked->state == rev::status::revoked);
  CHECK(revoked->from == rev::source::crl_file);
  CHECK(revoked->index == 0);
  CHECK(revoked->reason == "keyCompromise");
  const auto good = f.checker.try_check(lab_refs("alice"), p, unix_now());
  REQUIRE(good);
  CHECK(good->state == rev::status::good);
  CHECK(good->from == rev::source::crl_file);
}

TEST_CASE("revocation: a DER CRL file loads") {
  fixture f;
  const auto files = f.load({pki("crl/issuing.crl.der"), pki("crl/root.crl.pem")});
  const auto v = f.checker.try_check(lab_refs("revoked"), f.file_policy(files), unix_now());
  REQUIRE(v);
  CHECK(v->state == rev::status::revoked);
}

TEST_CASE("revocation: a CRL signed by another CA is a load error naming the file") {
  fixture f;
  const std::string path = f.dir.file("forged.crl");
  write_file(path, make_crl_der({f.issuing.get(), f.rogue_key.get(), {}, -3600, 86400}));
  const std::string err = f.load_error({pki("crl/root.crl.pem"), path});
  CHECK(err.find("crl '" + path + "': ") == 0);
  CHECK(err.find("signature") != std::string::npos);
}

TEST_CASE("revocation: a CRL of an unknown issuer is a load error") {
  fixture f;
  const std::string path = f.dir.file("rogue.crl");
  write_file(path, make_crl_der({f.rogue.get(), f.rogue_key.get(), {}, -3600, 86400}));
  const std::string err = f.load_error({path});
  CHECK(err.find("crl '" + path + "': ") == 0);
  CHECK(err.find("not a known CA") != std::string::npos);
}

TEST_CASE("revocation: a garbage or missing CRL file is a load error") {
  fixture f;
  const std::string path = f.dir.file("garbage.crl");
  write_file(path, "hello, not a CRL\n");
  CHECK(f.load_error({path}).find("crl '" + path + "': no CRL found") == 0);
  const std::string missing = f.dir.file("missing.crl");
  CHECK(f.load_error({missing}).find("crl '" + missing + "': cannot open") == 0);
}

TEST_CASE("revocation: a delta CRL is refused") {
  fixture f;
  crl_spec s{f.issuing.get(), f.issuing_key.get(), {}, -3600, 86400};
  s.delta = true;
  const std::string path = f.dir.file("delta.crl");
  write_file(path, make_crl_der(s));
  CHECK(f.load_error({path}).find("delta CRLs are not supported") != std::string::npos);
}

TEST_CASE("revocation: of two CRLs of one issuer the later thisUpdate wins") {
  fixture f;
  const ossl::x509_ptr alice = read_cert(pki("clients/alice.pem"));
  const std::string old_crl = der_to_pem_crl(make_crl_der(
      {f.issuing.get(), f.issuing_key.get(), {{X509_get0_serialNumber(alice.get()), 1}}, -7200, 86400}));
  const std::string new_crl =
      der_to_pem_crl(make_crl_der({f.issuing.get(), f.issuing_key.get(), {}, -3600, 86400}));
  for (const std::string& content : {old_crl + new_crl, new_crl + old_crl}) {
    const std::string path = f.dir.file("two.crl");
    write_file(path, content);
    const auto files = f.load({path, pki("crl/root.crl.pem")});
    const auto v = f.checker.try_check(lab_refs("alice"), f.file_policy(files), unix_now());
    REQUIRE(v);
    CHECK(v->state == rev::status::good);
  }
}

TEST_CASE("revocation: no CRL for an issuer is unknown when strict, unchecked otherwise") {
  fixture f;
  const auto files = f.load({pki("crl/root.crl.pem")});
  rev::policy p = f.file_policy(files);
  auto v = f.checker.try_check(lab_refs("alice"), p, unix_now());
  REQUIRE(v);
  CHECK(v->state == rev::status::unknown);
  CHECK(v->index == 0);
  CHECK(v->reason == "no_crl");
  p.strict = false;
  p.files = nullptr;
  v = f.checker.try_check(lab_refs("alice"), p, unix_now());
  REQUIRE(v);
  CHECK(v->state == rev::status::good);
  CHECK(v->from == rev::source::none);
  p.checks = rev::mode::off;
  p.strict = true;
  v = f.checker.try_check(lab_refs("revoked"), p, unix_now());
  REQUIRE(v);
  CHECK(v->state == rev::status::good);
}

TEST_CASE("revocation: a file CRL past nextUpdate is stale") {
  fixture f;
  const auto files = f.load({pki("crl/issuing.crl.pem"), pki("crl/root.crl.pem")});
  const auto v =
      f.checker.try_check(lab_refs("alice"), f.file_policy(files), unix_now() + 40 * 86400);
  REQUIRE(v);
  CHECK(v->state == rev::status::unknown);
  CHECK(v->from == rev::source::crl_file);
  CHECK(v->reason == "stale_crl");
  // Within max_clock_skew (5 min) of nextUpdate it still serves.
  const std::string path = f.dir.file("short.crl");
  write_file(path, make_crl_der({f.issuing.get(), f.issuing_key.get(), {}, -3600, 60}));
  const auto short_files = f.load({path, pki("crl/root.crl.pem")});
  const auto w = f.checker.try_check(lab_refs("alice"), f.file_policy(short_files), unix_now() + 200);
  REQUIRE(w);
  CHECK(w->state == rev::status::good);
}

TEST_CASE("revocation: count() fills checks_total by source and outcome") {
  fixture f;
  f.checker.count({rev::status::unknown, rev::source::cdp, 0, "x"}, true);
  f.checker.count({rev::status::unknown, rev::source::cdp, 0, "x"}, false);
  f.checker.count({rev::status::revoked, rev::source::crl_file, 0, "keyCompromise"}, false);
  f.checker.set_file_crl_count(3);
  CHECK(metric(f.metrics, R"(cbagate_revocation_checks_total{source="cdp",outcome="unknown_allowed"})") == 1);
  CHECK(metric(f.metrics, R"(cbagate_revocation_checks_total{source="cdp",outcome="unknown"})") == 1);
  CHECK(metric(f.metrics, R"(cbagate_revocation_checks_total{source="crl_file",outcome="revoked"})") == 1);
  CHECK(metric(f.metrics, R"(cbagate_revocation_cache_entries{kind="crl_file"})") == 3);
}
