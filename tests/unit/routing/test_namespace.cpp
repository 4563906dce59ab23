#include "routing/namespace.hpp"

#include <doctest/doctest.h>

namespace {

using namespace cbagate;
using config::route;
using config::route_cert_policy;

route make(std::string prefix, route_cert_policy p = route_cert_policy::none) {
  route r;
  r.prefix = std::move(prefix);
  r.client_cert = p;
  return r;
}

}  // namespace

TEST_CASE("namespace: the virtual directory is the prefix's first segment, any case") {
  REQUIRE(routing::virtual_directory_of("/rpc") != nullptr);
  CHECK(routing::virtual_directory_of("/RPC")->name == "/rpc");
  CHECK(routing::virtual_directory_of("/rpc/rpcproxy.dll")->name == "/rpc");
  CHECK(routing::virtual_directory_of("/ews/exchange.asmx")->name == "/EWS");
  CHECK(routing::virtual_directory_of("/autodiscover")->name == "/Autodiscover");
  CHECK(routing::virtual_directory_of("/") == nullptr);
  CHECK(routing::virtual_directory_of("/mock") == nullptr);
  CHECK(routing::virtual_directory_of("/rpcx") == nullptr);
  CHECK(routing::virtual_directory_of("") == nullptr);
}

TEST_CASE("namespace: methods per virtual directory, per route, and elsewhere") {
  SUBCASE("/rpc forwards the Outlook Anywhere channels, not POST") {
    const route r = make("/rpc");
    CHECK(routing::restricts_methods(r));
    CHECK(routing::method_allowed(r, "RPC_IN_DATA"));
    CHECK(routing::method_allowed(r, "RPC_OUT_DATA"));
    CHECK(routing::method_allowed(r, "GET"));
    CHECK_FALSE(routing::method_allowed(r, "POST"));
    CHECK_FALSE(routing::method_allowed(r, "rpc_in_data"));  // methods are case-sensitive
    CHECK(routing::allow_header(r) == "GET, HEAD, RPC_IN_DATA, RPC_OUT_DATA");
  }
  SUBCASE("OWA, EWS, MAPI: GET, HEAD, POST; OAB read-only; ActiveSync adds OPTIONS") {
    for (const char* p : {"/owa", "/ecp", "/EWS", "/mapi", "/Autodiscover", "/PowerShell"}) {
      CAPTURE(p);
      const route r = make(p);
      CHECK(routing::method_allowed(r, "POST"));
      CHECK_FALSE(routing::method_allowed(r, "PUT"));
      CHECK_FALSE(routing::method_allowed(r, "RPC_IN_DATA"));
      CHECK(routing::allow_header(r) == "GET, HEAD, POST");
    }
    CHECK_FALSE(routing::method_allowed(make("/OAB"), "POST"));
    CHECK(routing::method_allowed(make("/Microsoft-Server-ActiveSync"), "OPTIONS"));
    CHECK_FALSE(routing::method_allowed(make("/owa"), "OPTIONS"));
  }
  SUBCASE("route.methods replaces the default") {
    route r = make("/rpc");
    r.methods = {"RPC_IN_DATA"};
    CHECK(routing::method_allowed(r, "RPC_IN_DATA"));
    CHECK_FALSE(routing::method_allowed(r, "RPC_OUT_DATA"));
    CHECK(routing::allow_header(r) == "RPC_IN_DATA");
    route p = make("/custom");
    p.methods = {"PROPFIND", "GET"};
    CHECK(routing::restricts_methods(p));
    CHECK(routing::method_allowed(p, "PROPFIND"));
    CHECK_FALSE(routing::method_allowed(p, "POST"));
  }
  SUBCASE("other prefixes: no list (the session refuses CONNECT and unknown methods with 501)") {
    const route r = make("/mock");
    CHECK_FALSE(routing::restricts_methods(r));
    for (const char* m : {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND"})
      CHECK(routing::method_allowed(r, m));
  }
}

TEST_CASE("namespace: response timeouts and long-lived requests") {
  const config::seconds_f global{120};
  CHECK(routing::response_timeout(make("/rpc"), global).count() == 3600);
  CHECK(routing::response_timeout(make("/mapi/emsmdb"), global).count() == 3600);
  CHECK(routing::response_timeout(make("/owa"), global).count() == 120);
  route r = make("/rpc");
  r.response_timeout = config::seconds_f{600};
  CHECK(routing::response_timeout(r, global).count() == 600);

  CHECK(routing::is_long_lived("RPC_IN_DATA", ""));
  CHECK(routing::is_long_lived("RPC_OUT_DATA", ""));
  CHECK(routing::is_long_lived("POST", "NotificationWait"));
  CHECK(routing::is_long_lived("POST", "notificationwait"));
  CHECK_FALSE(routing::is_long_lived("POST", "Execute"));
  CHECK_FALSE(routing::is_long_lived("GET", ""));
}

TEST_CASE("namespace: Authorization passes on public routes, never beside an identity") {
  CHECK(routing::passes_authorization(make("/EWS", route_cert_policy::none), false));
  CHECK(routing::passes_authorization(make("/EWS", route_cert_policy::optional), false));
  CHECK_FALSE(routing::passes_authorization(make("/EWS", route_cert_policy::optional), true));
  CHECK_FALSE(routing::passes_authorization(make("/owa", route_cert_policy::require), true));
  CHECK_FALSE(routing::passes_authorization(make("/owa", route_cert_policy::require), false));
  route r = make("/EWS", route_cert_policy::none);
  r.pass_authorization = false;
  CHECK_FALSE(routing::passes_authorization(r, false));
}
