// tls::lifetimes: the expiry gauges and the 7-day / 1-day / past warnings, each said once.
#include "tls/lifetimes.hpp"

#include <doctest/doctest.h>

#include <string>

namespace {

using cbagate::tls::inspection;
using cbagate::tls::lifetimes;

constexpr std::int64_t day = 86400;
constexpr std::int64_t t0 = 1'800'000'000;

inspection files() {
  inspection in;
  in.certificates.push_back({"server", "CN=mail.example.test", "/etc/cbagate/server.pem", t0 + 10 * day, "CN=Issuing"});
  in.certificates.push_back({"client_ca", "CN=Root", "/etc/cbagate/roots.pem", t0 + 3650 * day, "CN=Root"});
  // Two CA certificates with one subject (a renewed root): the earliest is shown.
  in.certificates.push_back({"client_ca", "CN=Root", "/etc/cbagate/roots.pem", t0 + 100 * day, "CN=Root"});
  in.crls.push_back({"CN=Issuing", "/etc/cbagate/issuing.crl", t0 + 8 * day});
  in.crls.push_back({"CN=NoNext", "/etc/cbagate/no-next.crl", 0});
  return in;
}

}  // namespace

TEST_CASE("lifetimes: gauges carry notAfter and nextUpdate as unix seconds") {
  lifetimes l;
  cbagate::observability::registry reg;
  l.register_metrics(reg);
  l.update(files(), t0);
  const std::string text = reg.render();
  CHECK(text.find("cbagate_certificate_expiry_seconds{kind=\"server\",subject=\"CN=mail.example.test\"} " +
                  std::to_string(t0 + 10 * day) + "\n") != std::string::npos);
  CHECK(text.find("cbagate_certificate_expiry_seconds{kind=\"client_ca\",subject=\"CN=Root\"} " +
                  std::to_string(t0 + 100 * day) + "\n") != std::string::npos);
  CHECK(text.find("cbagate_crl_next_update_seconds{issuer=\"CN=Issuing\"} " +
                  std::to_string(t0 + 8 * day) + "\n") != std::string::npos);
  CHECK(text.find("CN=NoNext") == std::string::npos);
}

TEST_CASE("lifetimes: warnings at 7 days, 1 day and past the end, each once") {
  lifetimes l;
  l.update(files(), t0);
  CHECK(l.due(t0).empty());
  CHECK(l.due(t0 + day - 60).empty());  // CRL a minute more than 7 days out
  auto w = l.due(t0 + 2 * day);    // CRL 6 days out
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("CRL CN=Issuing") != std::string::npos);
  CHECK(w[0].find("in 6 days") != std::string::npos);
  CHECK(l.due(t0 + 2 * day + 60).empty());
  w = l.due(t0 + 4 * day);  // server certificate 6 days out
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("certificate CN=mail.example.test") != std::string::npos);
  w = l.due(t0 + 7 * day + 3600);  // CRL 23 hours out
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("in 23 hours") != std::string::npos);
  w = l.due(t0 + 8 * day + 7200);  // CRL past nextUpdate
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("is stale") != std::string::npos);
  CHECK(w[0].find("2 hours ago") != std::string::npos);
  CHECK(l.due(t0 + 8 * day + 7300).empty());
}

TEST_CASE("lifetimes: what is already due when loaded is not said again") {
  lifetimes l;
  l.update(files(), t0 + 9 * day);  // server certificate 1 day out, CRL stale: inspect said so
  CHECK(l.due(t0 + 9 * day).empty());
  auto w = l.due(t0 + 10 * day + 1);
  REQUIRE(w.size() == 1);
  CHECK(w[0].find("expired") != std::string::npos);
}

TEST_CASE("lifetimes: not ready only when stale CRLs block every issuing CA") {
  inspection in;
  in.certificates.push_back({"client_ca", "CN=Root", "roots.pem", t0 + 3650 * day, "CN=Root"});
  in.certificates.push_back({"client_intermediate", "CN=Issuing A", "int.pem", t0 + 900 * day, "CN=Root"});
  in.certificates.push_back({"client_intermediate", "CN=Issuing B", "int.pem", t0 + 900 * day, "CN=Root"});
  in.crls.push_back({"CN=Root", "root.crl", t0 + 180 * day});
  in.crls.push_back({"CN=Issuing A", "a.crl", t0 + 7 * day});
  in.crls.push_back({"CN=Issuing B", "b.crl", t0 + 9 * day});
  lifetimes l;
  l.update(in, t0);
  CHECK(l.every_issuer_blocked_by_stale_crls(t0).empty());
  CHECK(l.every_issuer_blocked_by_stale_crls(t0 + 8 * day).empty());  // B's users still get in
  const std::string why = l.every_issuer_blocked_by_stale_crls(t0 + 10 * day);
  CHECK(why.find("stale CRL of CN=Issuing A (nextUpdate 3 days ago), CN=Issuing B (nextUpdate 24 hours ago)") !=
        std::string::npos);
  // The root's CRL covers both issuing CAs: stale, it blocks everyone.
  CHECK_FALSE(l.every_issuer_blocked_by_stale_crls(t0 + 181 * day).empty());
  // A current CRL of the same issuer (a second file) keeps it usable.
  in.crls.push_back({"CN=Issuing A", "a-new.crl", t0 + 30 * day});
  in.crls.push_back({"CN=Issuing B", "b-new.crl", t0 + 30 * day});
  l.update(in, t0);
  CHECK(l.every_issuer_blocked_by_stale_crls(t0 + 10 * day).empty());
}
