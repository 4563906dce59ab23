#include "upstream/pinning.hpp"

#include <string>
#include <utility>
#include <vector>

#include <boost/beast/http/field.hpp>
#include <doctest/doctest.h>

#include "http/flat_fields.hpp"

namespace {

namespace bhttp = boost::beast::http;
using cbagate::upstream::names_connection_bound_scheme;
using cbagate::upstream::persistence;
using cbagate::upstream::persistent_auth;
using cbagate::upstream::request_binds_connection;
using cbagate::upstream::response_binds_connection;

cbagate::http::flat_fields make(std::vector<std::pair<std::string, std::string>> list) {
  cbagate::http::flat_fields f;
  for (auto& [k, v] : list) f.insert(k, v);
  return f;
}

}  // namespace

TEST_CASE("pinning: NTLM and Negotiate are found as whole tokens in any case and position") {
  CHECK(names_connection_bound_scheme("NTLM"));
  CHECK(names_connection_bound_scheme("ntlm TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAAKAGFKAAAADw=="));
  CHECK(names_connection_bound_scheme("Negotiate"));
  CHECK(names_connection_bound_scheme("NEGOTIATE YIIGhgYGKwYBBQUCoIIGejCCBnag"));
  CHECK(names_connection_bound_scheme("Basic realm=\"mail\", NTLM"));
  CHECK(names_connection_bound_scheme("Basic realm=\"mail\",Negotiate"));
  CHECK(names_connection_bound_scheme("  \tNegotiate"));
  CHECK(names_connection_bound_scheme("Basic realm=\"NTLM\""));  // broad on purpose
  CHECK_FALSE(names_connection_bound_scheme(""));
  CHECK_FALSE(names_connection_bound_scheme("Basic YWxpY2U6cGFzcw=="));
  CHECK_FALSE(names_connection_bound_scheme("Bearer eyJhbGciOi"));
  CHECK_FALSE(names_connection_bound_scheme("NTLMv2"));
  CHECK_FALSE(names_connection_bound_scheme("X-Negotiate"));
  CHECK_FALSE(names_connection_bound_scheme("Negotiated"));
}

TEST_CASE("pinning: a request binds its connection when any Authorization is NTLM or Negotiate") {
  CHECK(request_binds_connection(make({{"Authorization", "NTLM TlRMTVNTUAAB"}})));
  CHECK(request_binds_connection(make({{"authorization", "negotiate YIIG"}})));
  CHECK(request_binds_connection(
      make({{"Authorization", "Basic YWxpY2U6cGFzcw=="}, {"AUTHORIZATION", "Negotiate x"}})));
  CHECK_FALSE(request_binds_connection(make({{"Authorization", "Basic YWxpY2U6cGFzcw=="}})));
  CHECK_FALSE(request_binds_connection(make({{"Host", "mail"}, {"X-Note", "NTLM"}})));
  CHECK_FALSE(request_binds_connection(make({})));
}

TEST_CASE("pinning: only an explicit Persistent-Auth: true lets a Kerberos session go on") {
  CHECK(persistent_auth(make({{"Persistent-Auth", "true"}})) == persistence::persists);
  CHECK(persistent_auth(make({{"persistent-auth", " TRUE\t"}})) == persistence::persists);
  CHECK(persistent_auth(make({{"Persistent-Auth", "true"}, {"Persistent-Auth", "true"}})) ==
        persistence::persists);
  CHECK(persistent_auth(make({{"Persistent-Auth", "false"}})) == persistence::ends);
  CHECK(persistent_auth(make({{"Persistent-Auth", "yes"}})) == persistence::ends);
  CHECK(persistent_auth(make({{"Persistent-Auth", ""}})) == persistence::ends);
  CHECK(persistent_auth(make({{"Persistent-Auth", "true, false"}})) == persistence::ends);
  // Two fields that disagree: the narrow reading wins.
  CHECK(persistent_auth(make({{"Persistent-Auth", "true"}, {"Persistent-Auth", "false"}})) ==
        persistence::ends);
  CHECK(persistent_auth(make({{"Persistent-Auth", "false"}, {"Persistent-Auth", "true"}})) ==
        persistence::ends);
  CHECK(persistent_auth(make({})) == persistence::unsaid);
  CHECK(persistent_auth(make({{"X-Persistent-Auth", "true"}, {"WWW-Authenticate", "Negotiate x"}})) ==
        persistence::unsaid);
}

TEST_CASE("pinning: a response binds its connection on WWW-Authenticate NTLM/Negotiate or Persistent-Auth") {
  SUBCASE("challenges, one per field or listed together") {
    CHECK(response_binds_connection(make({{"WWW-Authenticate", "Negotiate"}})));
    CHECK(response_binds_connection(
        make({{"WWW-Authenticate", "Basic realm=\"x\""}, {"www-authenticate", "NTLM"}})));
    CHECK(response_binds_connection(make({{"WWW-Authenticate", "Basic realm=\"x\", ntlm"}})));
    CHECK(response_binds_connection(make({{"WWW-Authenticate", "NTLM TlRMTVNTUAACAAAA"}})));
  }
  SUBCASE("Persistent-Auth") {
    CHECK(response_binds_connection(make({{"Persistent-Auth", "true"}})));
    CHECK(response_binds_connection(make({{"persistent-auth", " TRUE "}})));
    CHECK(response_binds_connection(make({{"Persistent-Auth", "yes"}})));  // not "false": bound
    CHECK_FALSE(response_binds_connection(make({{"Persistent-Auth", "false"}})));
    CHECK_FALSE(response_binds_connection(make({{"Persistent-Auth", " False"}})));
  }
  SUBCASE("nothing connection-bound") {
    CHECK_FALSE(response_binds_connection(make({{"WWW-Authenticate", "Basic realm=\"x\""}})));
    CHECK_FALSE(response_binds_connection(make({{"Content-Type", "text/html"}, {"X-Auth", "NTLM"}})));
    CHECK_FALSE(response_binds_connection(make({{"Authorization", "NTLM x"}})));
    CHECK_FALSE(response_binds_connection(make({})));
  }
}
