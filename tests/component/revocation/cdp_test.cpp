#include "revocation/checker.hpp"

#include <doctest/doctest.h>

#include "observability/metrics.hpp"
#include "support.hpp"

using namespace test;
using namespace std::chrono_literals;

namespace {

// The leaf's ref only, its CDP pointing at `url` (the lab certificates carry no CDP).
id::chain_refs leaf_with_cdp(const std::string& client, const std::string& url) {
  id::chain_refs refs = lab_refs(client);
  refs.resize(1);
  refs[0].cdp_urls = {url};
  return refs;
}

rev::policy cdp_policy() {
  rev::policy p;
  p.checks = rev::mode::crl;
  p.strict = true;
  p.fetch_cdp = true;
  return p;
}

rev::options short_options() {
  rev::options o;
  o.timeout = 2000ms;
  return o;
}

struct fixture {
  explicit fixture(std::map<std::string, http_server::route> routes, rev::options o = short_options())
      : server(std::move(routes)), checker(o, issuers, metrics) {}
  std::shared_ptr<id::issuer_registry> issuers = lab_registry();
  cbagate::observability::registry metrics;
  http_server server;
  rev::checker checker;
};

std::string lab_crl_der() { return read_file(pki("crl/issuing.crl.der")); }

}  // namespace

TEST_CASE("revocation: a CDP CRL is downloaded once, then answers from the cache") {
  fixture f({{"/issuing.crl", {200, lab_crl_der()}}});
  const std::string url = f.server.url("/issuing.crl");
  const auto alice = leaf_with_cdp("alice", url);
  CHECK_FALSE(f.checker.try_check(alice, cdp_policy(), unix_now()).has_value());
  const rev::verdict good = await_check(f.checker, alice, cdp_policy());
  CHECK(good.state == rev::status::good);
  CHECK(good.from == rev::source::cdp);
  const rev::verdict revoked = await_check(f.checker, leaf_with_cdp("revoked", url), cdp_policy());
  CHECK(revoked.state == rev::status::revoked);
  CHECK(revoked.from == rev::source::cdp);
  CHECK(revoked.reason == "keyCompromise");
  const auto cached = f.checker.try_check(alice, cdp_policy(), unix_now());
  REQUIRE(cached);
  CHECK(cached->state == rev::status::good);
  CHECK(f.server.hits("/issuing.crl") == 1);
  CHECK(f.checker.cdp_entries() == 1);
  CHECK(metric(f.metrics, R"(cbagate_revocation_fetches_total{kind="crl"})") == 1);
  CHECK(metric(f.metrics, R"(cbagate_revocation_cache_entries{kind="cdp"})") == 1);
}

TEST_CASE("revocation: a CDP may serve PEM") {
  fixture f({{"/issuing.pem", {200, read_file(pki("crl/issuing.crl.pem"))}}});
  const auto v = await_check(f.checker, leaf_with_cdp("revoked", f.server.url("/issuing.pem")),
                             cdp_policy());
  CHECK(v.state == rev::status::revoked);
}

TEST_CASE("revocation: a CDP answering 404 gives unknown, remembered for retry_after") {
  fixture f({});
  const std::string url = f.server.url("/missing.crl");
  const auto refs = leaf_with_cdp("alice", url);
  const rev::verdict v = await_check(f.checker, refs, cdp_policy());
  CHECK(v.state == rev::status::unknown);
  CHECK(v.from == rev::source::cdp);
  CHECK(v.reason == "cdp " + url + ": http_status 404");
  // Within retry_after: answered at once, no second download.
  const auto again = f.checker.try_check(refs, cdp_policy(), unix_now());
  REQUIRE(again);
  CHECK(again->reason == v.reason);
  CHECK(f.server.hits("/missing.crl") == 1);
  CHECK(metric(f.metrics,
               R"(cbagate_revocation_fetch_errors_total{kind="crl",reason="http_status"})") == 1);
}

TEST_CASE("revocation: a CDP body over max_crl_bytes is abandoned (too_large)") {
  rev::options o = short_options();
  o.max_crl_bytes = 100;
  fixture f({{"/big.crl", {200, lab_crl_der()}}}, o);
  const rev::verdict v = await_check(f.checker, leaf_with_cdp("alice", f.server.url("/big.crl")),
                                     cdp_policy());
  CHECK(v.state == rev::status::unknown);
  CHECK(v.reason.find("too_large") != std::string::npos);
  CHECK(metric(f.metrics,
               R"(cbagate_revocation_fetch_errors_total{kind="crl",reason="too_large"})") == 1);
}

TEST_CASE("revocation: a CDP that never answers times out") {
  rev::options o = short_options();
  o.timeout = 300ms;
  fixture f({{"/hang.crl", {200, {}, true, {}}}}, o);
  const auto start = std::chrono::steady_clock::now();
  const rev::verdict v = await_check(f.checker, leaf_with_cdp("alice", f.server.url("/hang.crl")),
                                     cdp_policy());
  CHECK(std::chrono::steady_clock::now() - start < 3s);
  CHECK(v.state == rev::status::unknown);
  CHECK(v.reason.find("timeout") != std::string::npos);
}

TEST_CASE("revocation: an unreachable CDP gives unknown with the connect error") {
  std::string url;
  {
    http_server closed({});
    url = closed.url("/x.crl");
  }  // the port is closed now
  fixture f({});
  const rev::verdict v = await_check(f.checker, leaf_with_cdp("alice", url), cdp_policy());
  CHECK(v.state == rev::status::unknown);
  CHECK(v.reason.find("cdp " + url + ": connect: ") == 0);
}

TEST_CASE("revocation: a CDP CRL with a bad signature is not used") {
  const ossl::x509_ptr issuing = read_cert(pki("ca/issuing.pem"));
  const ossl::evp_pkey_ptr rogue_key = read_key(pki("ca/rogue-root.key"));
  fixture f({{"/forged.crl", {200, make_crl_der({issuing.get(), rogue_key.get(), {}, -3600, 86400})}}});
  const rev::verdict v = await_check(f.checker, leaf_with_cdp("revoked", f.server.url("/forged.crl")),
                                     cdp_policy());
  CHECK(v.state == rev::status::unknown);
  CHECK(v.reason.find("signature") != std::string::npos);
  CHECK(metric(f.metrics,
               R"(cbagate_revocation_fetch_errors_total{kind="crl",reason="signature"})") == 1);
}

TEST_CASE("revocation: a stale CDP CRL is not used") {
  const ossl::x509_ptr issuing = read_cert(pki("ca/issuing.pem"));
  const ossl::evp_pkey_ptr key = read_key(pki("ca/issuing.key"));
  fixture f({{"/stale.crl", {200, make_crl_der({issuing.get(), key.get(), {}, -7 * 86400, -86400})}}});
  const rev::verdict v = await_check(f.checker, leaf_with_cdp("alice", f.server.url("/stale.crl")),
                                     cdp_policy());
  CHECK(v.state == rev::status::unknown);
  CHECK(v.reason.find("stale") != std::string::npos);
}

TEST_CASE("revocation: concurrent checks of one CDP share one download") {
  fixture f({{"/slow.crl", {200, lab_crl_der(), false, 300ms}}});
  const auto refs = leaf_with_cdp("alice", f.server.url("/slow.crl"));
  const auto [a, b] = await_two(f.checker, refs, cdp_policy());
  CHECK(a.state == rev::status::good);
  CHECK(b.state == rev::status::good);
  CHECK(f.server.hits("/slow.crl") == 1);
  CHECK(metric(f.metrics, R"(cbagate_revocation_fetches_total{kind="crl"})") == 1);
}

TEST_CASE("revocation: a CDP CRL is refreshed ahead of nextUpdate while the old one serves") {
  const ossl::x509_ptr issuing = read_cert(pki("ca/issuing.pem"));
  const ossl::evp_pkey_ptr key = read_key(pki("ca/issuing.key"));
  rev::options o = short_options();
  o.refresh_ahead = std::chrono::seconds(600);
  o.retry_after = std::chrono::seconds(1);
  // nextUpdate in 100 s: the refresh is due 1 s (retry_after) after the download.
  fixture f({{"/soon.crl", {200, make_crl_der({issuing.get(), key.get(), {}, -60, 100})}}}, o);
  const auto refs = leaf_with_cdp("alice", f.server.url("/soon.crl"));
  CHECK(await_check(f.checker, refs, cdp_policy()).state == rev::status::good);
  CHECK(metric(f.metrics, R"(cbagate_revocation_fetches_total{kind="crl"})") == 1);
  const auto v = f.checker.try_check(refs, cdp_policy(), unix_now() + 2);
  REQUIRE(v);  // answered from the cache...
  CHECK(v->state == rev::status::good);
  // ...and a background download started.
  CHECK(metric(f.metrics, R"(cbagate_revocation_fetches_total{kind="crl"})") == 2);
}

TEST_CASE("revocation: strict chain needs every certificate, non-strict skips those without CDP") {
  fixture f({{"/issuing.crl", {200, lab_crl_der()}}});
  id::chain_refs refs = lab_refs("alice");
  refs[0].cdp_urls = {f.server.url("/issuing.crl")};
  rev::policy p = cdp_policy();
  rev::verdict v = await_check(f.checker, refs, p);
  CHECK(v.state == rev::status::unknown);
  CHECK(v.index == 1);  // the issuing CA has no CRL
  CHECK(v.reason == "no_crl");
  p.strict = false;
  v = await_check(f.checker, refs, p);
  CHECK(v.state == rev::status::good);
  CHECK(v.from == rev::source::cdp);
}
