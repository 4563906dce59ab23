#include "identity/client_identity.hpp"

#include <doctest/doctest.h>

using cbagate::identity::iis_substatus;
using cbagate::identity::rejection;
using cbagate::identity::to_string;

TEST_CASE("client_identity: IIS substatus per reason") {
  CHECK(iis_substatus(rejection::none) == 0);
  CHECK(iis_substatus(rejection::no_certificate) == 7);
  CHECK(iis_substatus(rejection::revoked) == 13);
  CHECK(iis_substatus(rejection::untrusted) == 16);
  CHECK(iis_substatus(rejection::invalid) == 16);
  CHECK(iis_substatus(rejection::wrong_eku) == 16);
  CHECK(iis_substatus(rejection::no_upn) == 16);
  CHECK(iis_substatus(rejection::multi_upn) == 16);
  CHECK(iis_substatus(rejection::bad_upn_encoding) == 16);
  CHECK(iis_substatus(rejection::expired) == 17);
  CHECK(iis_substatus(rejection::not_yet_valid) == 17);
  CHECK(iis_substatus(static_cast<rejection>(200)) == 16);  // never 0 for garbage
}

TEST_CASE("client_identity: stable reason names") {
  CHECK(to_string(rejection::none) == "none");
  CHECK(to_string(rejection::no_certificate) == "no_certificate");
  CHECK(to_string(rejection::untrusted) == "untrusted");
  CHECK(to_string(rejection::invalid) == "invalid");
  CHECK(to_string(rejection::wrong_eku) == "wrong_eku");
  CHECK(to_string(rejection::expired) == "expired");
  CHECK(to_string(rejection::not_yet_valid) == "not_yet_valid");
  CHECK(to_string(rejection::revoked) == "revoked");
  CHECK(to_string(rejection::no_upn) == "no_upn");
  CHECK(to_string(rejection::multi_upn) == "multi_upn");
  CHECK(to_string(rejection::bad_upn_encoding) == "bad_upn_encoding");
}
