#include "directory/verdict.hpp"

#include <doctest/doctest.h>

#include <limits>
#include <vector>

using namespace cbagate::directory;

namespace {

constexpr std::int64_t now = 1'780'000'000;  // 2026
constexpr std::chrono::seconds lockout{1800};

certificate_view cert() {
  certificate_view c;
  c.upn = "alice@lab.test";
  c.issuer_dn = "DC=test,DC=lab,CN=Lab Issuing CA";
  c.subject_dn = "CN=alice";
  c.serial = "2B0000000011AC0000000012";
  c.sha1 = "00112233445566778899AABBCCDDEEFF00112233";
  return c;
}

account alice() {
  account a;
  a.dn = "CN=alice,CN=Users,DC=lab,DC=test";
  a.sam_account_name = "alice";
  a.upn = "alice@lab.test";
  a.object_sid = *parse_sid("S-1-5-21-1004336348-1177238915-682003330-1103");
  a.user_account_control = 512;
  a.account_expires = std::numeric_limits<std::int64_t>::max();
  a.alt_security_identities = {
      "X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<SR>1200000000AC11000000002B"};
  return a;
}

mapping_result run(const certificate_view& c, std::vector<account> found) {
  return decide(c, found, now, lockout);
}

}  // namespace

TEST_CASE("decide: strongly mapped, enabled account is allowed and named") {
  const auto r = run(cert(), {alice()});
  CHECK(r.outcome == verdict::allowed);
  CHECK(r.sam_account_name == "alice");
  CHECK(r.via.find("<SR>") != std::string::npos);
  CHECK(to_string(r.outcome) == "allowed");
}

TEST_CASE("decide: not found and two accounts with one UPN") {
  CHECK(run(cert(), {}).outcome == verdict::not_found);
  auto twin = alice();
  twin.dn = "CN=alice2,CN=Users,DC=lab,DC=test";
  const auto r = run(cert(), {alice(), twin});
  CHECK(r.outcome == verdict::ambiguous);
  CHECK(r.sam_account_name.empty());
}

TEST_CASE("decide: weak mappings and the UPN alone never suffice") {
  auto a = alice();
  a.alt_security_identities = {"X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<S>CN=alice",
                               "X509:<S>CN=alice", "X509:<RFC822>alice@lab.test",
                               "Kerberos:alice@LAB.TEST"};
  const auto r = run(cert(), {a});
  CHECK(r.outcome == verdict::no_strong_mapping);
  a.alt_security_identities.clear();
  CHECK(run(cert(), {a}).outcome == verdict::no_strong_mapping);
  // Another certificate's strong mapping on the same account.
  a.alt_security_identities = {"X509:<SHA1-PUKEY>FFFF2233445566778899AABBCCDDEEFF00112233"};
  CHECK(run(cert(), {a}).outcome == verdict::no_strong_mapping);
}

TEST_CASE("decide: the SID extension binds, or denies when it names another account") {
  auto a = alice();
  a.alt_security_identities.clear();
  auto c = cert();
  c.sid = "S-1-5-21-1004336348-1177238915-682003330-1103";
  auto r = run(c, {a});
  CHECK(r.outcome == verdict::allowed);
  CHECK(r.via == "SID extension S-1-5-21-1004336348-1177238915-682003330-1103");
  c.sid = "S-1-5-21-1004336348-1177238915-682003330-1104";
  r = run(c, {a});
  CHECK(r.outcome == verdict::sid_mismatch);
  CHECK(r.detail.find("-1103") != std::string::npos);
  c.sid = "S-1-5-21-garbage";
  CHECK(run(c, {a}).outcome == verdict::sid_mismatch);
  c.sid.clear();
  c.sid_error = "the SID extension appears twice";
  CHECK(run(c, {a}).outcome == verdict::sid_mismatch);
  // A matching strong altSecurityIdentities wins without looking at the SID (Samba order).
  c.sid_error.clear();
  c.sid = "S-1-5-21-1004336348-1177238915-682003330-1104";
  CHECK(run(c, {alice()}).outcome == verdict::allowed);
}

TEST_CASE("decide: account state after the binding") {
  auto a = alice();
  a.user_account_control = 514;
  CHECK(run(cert(), {a}).outcome == verdict::disabled);

  a = alice();
  a.lockout_time = filetime_of_unix(now - 60);
  CHECK(run(cert(), {a}).outcome == verdict::locked_out);
  a.lockout_time = filetime_of_unix(now - 3600);  // older than the lockout duration
  CHECK(run(cert(), {a}).outcome == verdict::allowed);
  a.uac_computed = 0x10;  // the DC's own computation wins when returned
  CHECK(run(cert(), {a}).outcome == verdict::locked_out);
  a.uac_computed = 0;
  a.lockout_time = filetime_of_unix(now - 60);
  CHECK(run(cert(), {a}).outcome == verdict::allowed);

  a = alice();
  a.account_expires = filetime_of_unix(now - 1);
  CHECK(run(cert(), {a}).outcome == verdict::account_expired);
  a.account_expires = filetime_of_unix(now + 3600);
  CHECK(run(cert(), {a}).outcome == verdict::allowed);
  a.account_expires = 0;
  CHECK(run(cert(), {a}).outcome == verdict::allowed);

  // Disabled but not bound to this certificate: the binding is reported (no account oracle).
  a = alice();
  a.user_account_control = 514;
  a.alt_security_identities.clear();
  CHECK(run(cert(), {a}).outcome == verdict::no_strong_mapping);
}

TEST_CASE("decide: verdict names are the 403.12 codes") {
  CHECK(to_string(verdict::issuer_not_in_ntauth) == "issuer_not_in_ntauth");
  CHECK(to_string(verdict::account_expired) == "account_expired");
  CHECK(to_string(verdict::locked_out) == "locked_out");
}
