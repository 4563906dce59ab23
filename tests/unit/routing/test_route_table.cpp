#include "routing/route_table.hpp"

#include "routing/error.hpp"

#include <doctest/doctest.h>

#include <optional>
#include <string>
#include <vector>

namespace routing = cbagate::routing;
using cbagate::config::route;
using cbagate::config::route_cert_policy;

namespace {

std::vector<route> exchange_routes() {
  return {
      {"/owa", route_cert_policy::require},
      {"/ecp", route_cert_policy::require},
      {"/Microsoft-Server-ActiveSync", route_cert_policy::require},
      {"/owa/public", route_cert_policy::none},
      {"/", route_cert_policy::none},
  };
}

struct match_case {
  std::string path;
  std::optional<std::string> prefix;  // nullopt = no route
};

void check_matches(const routing::route_table& table, const std::vector<match_case>& cases) {
  for (const auto& c : cases) {
    CAPTURE(c.path);
    const route* r = table.match(c.path);
    if (!c.prefix) {
      CHECK(r == nullptr);
      CHECK_FALSE(table.match_index(c.path).has_value());
      continue;
    }
    REQUIRE(r != nullptr);
    CHECK(r->prefix == *c.prefix);
    const auto i = table.match_index(c.path);
    REQUIRE(i.has_value());
    CHECK(&table.routes()[*i] == r);
  }
}

}  // namespace

TEST_CASE("routing: prefixes match case-insensitively on whole segments, longest first") {
  const auto table = routing::route_table::make(exchange_routes());
  REQUIRE(table.has_value());
  check_matches(*table, {
                            {"/owa", "/owa"},
                            {"/owa/", "/owa"},
                            {"/OWA/x", "/owa"},
                            {"/Owa?x=1", "/owa"},
                            {"/owa/auth/logon.aspx", "/owa"},
                            {"/owax", "/"},
                            {"/ow", "/"},
                            {"/owa.aspx", "/"},
                            {"/owa/public", "/owa/public"},
                            {"/OWA/Public/", "/owa/public"},
                            {"/owa/public/x", "/owa/public"},
                            {"/owa/publicx", "/owa"},
                            {"/ecp/x", "/ecp"},
                            {"/ECP", "/ecp"},
                            {"/ecpx", "/"},
                            {"/microsoft-server-activesync", "/Microsoft-Server-ActiveSync"},
                            {"/MICROSOFT-SERVER-ACTIVESYNC?Cmd=Ping", "/Microsoft-Server-ActiveSync"},
                            {"/Microsoft-Server-ActiveSyncX", "/"},
                            {"/", "/"},
                            {"/favicon.ico", "/"},
                        });
}

TEST_CASE("routing: without a root route an unknown path matches nothing") {
  const auto table = routing::route_table::make({{"/owa", route_cert_policy::require},
                                                 {"/ecp", route_cert_policy::require}});
  REQUIRE(table.has_value());
  check_matches(*table, {
                            {"/owa", "/owa"},
                            {"/", std::nullopt},
                            {"/owax", std::nullopt},
                            {"/o", std::nullopt},
                            {"/x/owa", std::nullopt},
                            {"/public", std::nullopt},
                        });
  const routing::route_table empty;
  CHECK(empty.match("/owa") == nullptr);
  CHECK(empty.routes().empty());
}

TEST_CASE("routing: match_index refers to the routes in file order") {
  const auto table = routing::route_table::make(exchange_routes());
  REQUIRE(table.has_value());
  CHECK(table->match_index("/owa/x") == std::optional<std::size_t>(0));
  CHECK(table->match_index("/ecp") == std::optional<std::size_t>(1));
  CHECK(table->match_index("/Microsoft-Server-ActiveSync") == std::optional<std::size_t>(2));
  CHECK(table->match_index("/owa/public") == std::optional<std::size_t>(3));
  CHECK(table->match_index("/x") == std::optional<std::size_t>(4));
  CHECK(table->routes()[2].client_cert == route_cert_policy::require);
}

TEST_CASE("routing: configured prefixes are stored in canonical form") {
  const auto table = routing::route_table::make({{"/OWA/", route_cert_policy::require},
                                                 {"/%65cp", route_cert_policy::require},
                                                 {"//a/./b/", route_cert_policy::none}});
  REQUIRE(table.has_value());
  CHECK(table->routes()[0].prefix == "/OWA");
  CHECK(table->routes()[1].prefix == "/ecp");
  CHECK(table->routes()[2].prefix == "/a/b");
  CHECK(table->match("/owa/x")->prefix == "/OWA");
  CHECK(table->match("/a/b")->prefix == "/a/b");
}

TEST_CASE("routing: bad or duplicate prefixes make no table") {
  for (const char* prefix : {"", "owa", "*", "/owa?x", "/..", "/owa%2fx", "/owa\\x", "/a b",
                             "https://host/owa"}) {
    CAPTURE(prefix);
    const auto t = routing::route_table::make({{prefix, route_cert_policy::require}});
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error() == routing::make_error_code(routing::errc::bad_route_prefix));
  }
  for (const auto& pair : std::vector<std::pair<std::string, std::string>>{
           {"/owa", "/OWA/"}, {"/owa", "/%6fwa"}, {"/", "//"}}) {
    CAPTURE(pair.first);
    CAPTURE(pair.second);
    const auto t = routing::route_table::make({{pair.first, route_cert_policy::require},
                                               {pair.second, route_cert_policy::none}});
    REQUIRE_FALSE(t.has_value());
    CHECK(t.error() == routing::make_error_code(routing::errc::duplicate_route_prefix));
  }
}
