#include "routing/authorize.hpp"

#include <doctest/doctest.h>

#include <vector>

namespace routing = cbagate::routing;
using cbagate::config::route;
using cbagate::config::route_cert_policy;
using cbagate::identity::client_identity;
using cbagate::identity::rejection;

namespace {

client_identity good_identity() {
  client_identity id;
  id.presented = true;
  id.reason = rejection::none;
  id.upn = "alice@corp.example";
  id.subject = "CN=Alice";
  return id;
}

client_identity no_certificate() { return client_identity{}; }

client_identity rejected(rejection r) {
  client_identity id;
  id.presented = true;
  id.reason = r;
  return id;
}

struct rejection_case {
  rejection reason;
  int substatus;
};

// The IIS substatus of every rejection of a presented certificate (DESIGN.md step 5).
const std::vector<rejection_case> presented_rejections = {
    {rejection::untrusted, 16},   {rejection::invalid, 16},       {rejection::wrong_eku, 16},
    {rejection::expired, 17},     {rejection::not_yet_valid, 17}, {rejection::revoked, 13},
    {rejection::no_upn, 16},      {rejection::multi_upn, 16},     {rejection::bad_upn_encoding, 16},
    {rejection::issuer_not_allowed, 12}, {rejection::upn_suffix_not_allowed, 12},
    {rejection::template_not_allowed, 12},
};

void check_allowed(const routing::decision& d, bool forward) {
  CHECK(d.allow);
  CHECK(d.forward_identity == forward);
  CHECK(d.status == 0);
  CHECK(d.substatus == 0);
  CHECK(d.reason == rejection::none);
}

void check_denied(const routing::decision& d, rejection reason, int substatus) {
  CHECK_FALSE(d.allow);
  CHECK_FALSE(d.forward_identity);
  CHECK(d.status == 403);
  CHECK(d.substatus == substatus);
  CHECK(d.reason == reason);
}

}  // namespace

TEST_CASE("routing: require allows only a good identity, and forwards it") {
  const route r{"/owa", route_cert_policy::require};
  check_allowed(routing::authorize(r, good_identity()), true);
  check_denied(routing::authorize(r, no_certificate()), rejection::no_certificate, 7);
  for (const auto& c : presented_rejections) {
    CAPTURE(static_cast<int>(c.reason));
    check_denied(routing::authorize(r, rejected(c.reason)), c.reason, c.substatus);
  }
}

TEST_CASE("routing: optional allows anonymous but never a bad certificate") {
  const route r{"/owa", route_cert_policy::optional};
  check_allowed(routing::authorize(r, good_identity()), true);
  check_allowed(routing::authorize(r, no_certificate()), false);
  for (const auto& c : presented_rejections) {
    CAPTURE(static_cast<int>(c.reason));
    check_denied(routing::authorize(r, rejected(c.reason)), c.reason, c.substatus);
  }
}

TEST_CASE("routing: none allows everyone and never forwards an identity") {
  const route r{"/", route_cert_policy::none};
  check_allowed(routing::authorize(r, good_identity()), false);
  check_allowed(routing::authorize(r, no_certificate()), false);
  for (const auto& c : presented_rejections) {
    CAPTURE(static_cast<int>(c.reason));
    check_allowed(routing::authorize(r, rejected(c.reason)), false);
  }
}

TEST_CASE("routing: an inconsistent identity is read in the safe direction") {
  // "ok" but not presented: there is no certificate.
  client_identity ghost = good_identity();
  ghost.presented = false;
  check_denied(routing::authorize({"/owa", route_cert_policy::require}, ghost),
               rejection::no_certificate, 7);
  check_allowed(routing::authorize({"/owa", route_cert_policy::optional}, ghost), false);
  // "ok" without a UPN: nothing to forward.
  client_identity blank = good_identity();
  blank.upn.clear();
  check_denied(routing::authorize({"/owa", route_cert_policy::require}, blank), rejection::no_upn,
               16);
  check_denied(routing::authorize({"/owa", route_cert_policy::optional}, blank), rejection::no_upn,
               16);
  // Presented, yet flagged as no certificate: never anonymous on an optional route.
  check_denied(routing::authorize({"/owa", route_cert_policy::optional},
                                  rejected(rejection::no_certificate)),
               rejection::no_certificate, 7);
}
