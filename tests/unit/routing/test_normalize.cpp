#include "routing/normalize.hpp"

#include "routing/error.hpp"
#include "routing/route_table.hpp"

#include <doctest/doctest.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace routing = cbagate::routing;
using routing::errc;
using namespace std::string_literals;

namespace {

constexpr std::size_t max_target = 16384;

struct accepted {
  std::string target;
  std::string path;
};

struct refused {
  std::string target;
  errc error;
};

// Every spelling that must land on the /owa route.
const std::vector<accepted> owa_spellings = {
    {"/owa", "/owa"},
    {"/OWA", "/OWA"},
    {"/Owa/", "/Owa/"},
    {"/%6Fwa", "/owa"},
    {"/%6fWA/", "/oWA/"},
    {"/%6F%77%61", "/owa"},
    {"//owa", "/owa"},
    {"///owa///", "/owa/"},
    {"/./owa", "/owa"},
    {"/%2e/owa", "/owa"},
    {"/public/../owa", "/owa"},
    {"/public/%2e%2e/owa", "/owa"},
    {"/public/%2E%2E/owa", "/owa"},
    {"/public/.%2E/owa", "/owa"},
    {"/public/%2e./owa", "/owa"},
    {"/x/..//owa", "/owa"},
    {"/a/b/../../owa", "/owa"},
    {"/owa/.", "/owa/"},
    {"/owa/x/..", "/owa/"},
    {"/owa/x/./../y", "/owa/y"},
    {"/owa/auth/logon.aspx", "/owa/auth/logon.aspx"},
    {"https://mail.example.com/owa", "/owa"},
    {"HTTPS://mail.example.com//%6Fwa/", "/owa/"},
};

// Every attack or malformed target that must be refused, with its precise reason.
const std::vector<refused> attacks = {
    // separators hidden in escapes
    {"/public/..%2fowa", errc::encoded_separator},
    {"/public/..%2Fowa", errc::encoded_separator},
    {"/public/..%5cowa", errc::encoded_separator},
    {"/public/..%5Cowa", errc::encoded_separator},
    {"/owa%00", errc::encoded_separator},
    {"/owa%00.aspx", errc::encoded_separator},
    // dot segments above the root: refused, never clamped
    {"/..", errc::dot_segment_above_root},
    {"/../owa", errc::dot_segment_above_root},
    {"/%2e%2e/owa", errc::dot_segment_above_root},
    {"/.%2e/owa", errc::dot_segment_above_root},
    {"/public/../../owa", errc::dot_segment_above_root},
    {"/./../owa", errc::dot_segment_above_root},
    {"https://h/../owa", errc::dot_segment_above_root},
    // raw bytes
    {"/owa\\x", errc::bad_character},
    {"/owa/..\\ecp", errc::bad_character},
    {"/owa x", errc::bad_character},
    {"/owa/a b", errc::bad_character},
    {"/owa\t", errc::bad_character},
    {"/owa\x01", errc::bad_character},
    {"/owa\r\nX: y", errc::bad_character},
    {"/owa\x7f", errc::bad_character},
    {"/owa\xc3\xa9", errc::bad_character},
    {"/owa\x80", errc::bad_character},
    {"/owa\xff", errc::bad_character},
    {"/owa"s + '\0', errc::bad_character},
    {"/owa#frag", errc::bad_character},
    {"/owa?x=1 2", errc::bad_character},
    {"/owa?x=\x01", errc::bad_character},
    {"/owa?x=\xc3\xa9", errc::bad_character},
    // decoded controls
    {"/owa%0a", errc::bad_character},
    {"/owa%0D%0AX:%20y", errc::bad_character},
    {"/owa%09", errc::bad_character},
    {"/owa%1f", errc::bad_character},
    {"/owa%7F", errc::bad_character},
    // malformed escapes
    {"/owa%", errc::bad_escape},
    {"/owa%4", errc::bad_escape},
    {"/owa%g1", errc::bad_escape},
    {"/owa%zz", errc::bad_escape},
    {"/owa%u002e", errc::bad_escape},
    {"/owa%%32%65", errc::bad_escape},
    // double encoding
    {"/owa/%252e%252e/ecp", errc::double_encoding},
    {"/owa/%25%32%65%25%32%65/ecp", errc::double_encoding},
    {"/owa/%25%32e", errc::double_encoding},
    {"/owa/%252f", errc::double_encoding},
    {"/owa/%255c", errc::double_encoding},
    {"/owa/%2500", errc::double_encoding},
    // invalid UTF-8 after decoding
    {"/%c0%ae%c0%ae/owa", errc::bad_utf8},
    {"/%c0%af", errc::bad_utf8},
    {"/%c1%9c", errc::bad_utf8},
    {"/%e0%80%ae", errc::bad_utf8},
    {"/%f0%80%80%ae", errc::bad_utf8},
    {"/%ed%a0%80", errc::bad_utf8},
    {"/%f4%90%80%80", errc::bad_utf8},
    {"/%f5%80%80%80", errc::bad_utf8},
    {"/%80", errc::bad_utf8},
    {"/%e2%82", errc::bad_utf8},
    {"/%e2%82/x", errc::bad_utf8},
    {"/%c3", errc::bad_utf8},
    {"/%fe%ff", errc::bad_utf8},
    // code points whose Unicode case mapping is ASCII (s, i, k)
    {"/Micro%C5%BFoft-Server-ActiveSync", errc::case_fold_confusable},
    {"/Microsoft-Server-Act%C4%B1veSync", errc::case_fold_confusable},
    {"/Microsoft-Server-Act%C4%B0veSync", errc::case_fold_confusable},
    {"/%E2%84%AA", errc::case_fold_confusable},
    // names Windows would shorten
    {"/owa./x", errc::trailing_dot_or_space},
    {"/owa%2e/x", errc::trailing_dot_or_space},
    {"/owa%20/x", errc::trailing_dot_or_space},
    {"/.../owa", errc::trailing_dot_or_space},
    {"/public/..%20/owa", errc::trailing_dot_or_space},
    {"/public/.%20/owa", errc::trailing_dot_or_space},
    {"/owa/x.", errc::trailing_dot_or_space},
    // forms
    {"", errc::bad_target_form},
    {"*", errc::bad_target_form},
    {"mail.example.com:443", errc::bad_target_form},
    {"owa", errc::bad_target_form},
    {"owa/x", errc::bad_target_form},
    {"?x", errc::bad_target_form},
    {"ftp://host/owa", errc::bad_target_form},
    {"https:/owa", errc::bad_target_form},
    {"https:///owa", errc::bad_target_form},
    {"https://user@host/owa", errc::bad_target_form},
    {"https://user:pw@host/owa", errc::bad_target_form},
    {"https://ho^st/owa", errc::bad_target_form},
    {"https://host:99x/owa", errc::bad_target_form},
};

// Re-encoding: one canonical spelling per path.
const std::vector<accepted> encodings = {
    {"/owa/a%20b", "/owa/a%20b"},
    {"/owa/%7E", "/owa/~"},
    {"/owa/%7e", "/owa/~"},
    {"/owa/%e2%82%ac", "/owa/%E2%82%AC"},
    {"/owa/%E2%82%AC", "/owa/%E2%82%AC"},
    {"/owa/%c3%a9t%C3%A9", "/owa/%C3%A9t%C3%A9"},
    {"/owa/%f0%9f%98%80", "/owa/%F0%9F%98%80"},
    {"/owa/%41%42%63", "/owa/ABc"},
    {"/owa/%21%24%26%27%28%29%2a%2b%2c%3b%3d%3a%40", "/owa/!$&'()*+,;=:@"},
    {"/owa/!$&'()*+,;=:@-._~", "/owa/!$&'()*+,;=:@-._~"},
    {"/owa/%2d%2e%5f", "/owa/-._"},
    {"/owa/%3f", "/owa/%3F"},
    {"/owa/%23", "/owa/%23"},
    {"/owa/%25", "/owa/%25"},
    {"/owa/%25zz", "/owa/%25zz"},
    {"/owa/%254g", "/owa/%254g"},
    {"/owa/a|b", "/owa/a%7Cb"},
    {"/owa/\"<>[]^`{}", "/owa/%22%3C%3E%5B%5D%5E%60%7B%7D"},
    {"/owa/%5b%5D", "/owa/%5B%5D"},
    {"/owa/.x/..y/x.y", "/owa/.x/..y/x.y"},
    {"/", "/"},
    {"//", "/"},
    {"/.", "/"},
    {"/./", "/"},
    {"/a/..", "/"},
    {"/a/b/..", "/a/"},
    {"/a//..", "/a/"},
    {"//..", "/"},
};

routing::normalized_target must_normalize(std::string_view target) {
  auto r = routing::normalize_target(target, max_target);
  REQUIRE_MESSAGE(r.has_value(), "target: ", target, " error: ",
                  (r ? std::string() : r.error().message()));
  return std::move(r).value();
}

// The invariants the fuzz target also checks: a normalized path is clean and a fixed point.
void check_invariants(std::string_view target, const routing::normalized_target& n) {
  INFO("target: ", target, " path: ", n.path);
  CHECK(!n.path.empty());
  CHECK(n.path.front() == '/');
  CHECK(n.path.find("//") == std::string::npos);
  CHECK(n.path.find("/../") == std::string::npos);
  CHECK(n.path.find("/./") == std::string::npos);
  CHECK(n.path.find('\\') == std::string::npos);
  CHECK(n.path.find("%2F") == std::string::npos);
  CHECK(n.path.find("%2f") == std::string::npos);
  CHECK(n.path.find('?') == std::string::npos);
  for (char c : n.path) CHECK((c > 0x20 && c < 0x7F));
  const auto again = routing::normalize_target(n.forward_target(), max_target);
  REQUIRE(again.has_value());
  CHECK(again->path == n.path);
  CHECK(again->query == n.query);
  CHECK(again->has_query == n.has_query);
  CHECK(again->forward_target() == n.forward_target());
}

}  // namespace

TEST_CASE("routing: every spelling of /owa normalizes to one canonical path") {
  for (const auto& c : owa_spellings) {
    CAPTURE(c.target);
    const auto n = must_normalize(c.target);
    CHECK(n.path == c.path);
    CHECK(!n.has_query);
  }
}

TEST_CASE("routing: every spelling of /owa matches the /owa route and no other") {
  auto table = routing::route_table::make({{"/", cbagate::config::route_cert_policy::none},
                                           {"/owa", cbagate::config::route_cert_policy::require},
                                           {"/public", cbagate::config::route_cert_policy::none}});
  REQUIRE(table.has_value());
  for (const auto& c : owa_spellings) {
    CAPTURE(c.target);
    const auto n = must_normalize(c.target);
    const auto* route = table->match(n.path);
    REQUIRE(route != nullptr);
    CHECK(route->prefix == "/owa");
  }
}

TEST_CASE("routing: attacks and malformed targets are refused with their reason") {
  for (const auto& c : attacks) {
    CAPTURE(c.target);
    const auto r = routing::normalize_target(c.target, max_target);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error() == routing::make_error_code(c.error));
    CHECK(r.error().category() == routing::routing_category());
  }
}

TEST_CASE("routing: paths are re-encoded canonically") {
  for (const auto& c : encodings) {
    CAPTURE(c.target);
    CHECK(must_normalize(c.target).path == c.path);
  }
}

TEST_CASE("routing: the query is kept byte for byte and never decoded") {
  struct query_case {
    std::string target;
    std::string path;
    std::string query;
  };
  const std::vector<query_case> cases = {
      {"/Microsoft-Server-ActiveSync?jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l==",
       "/Microsoft-Server-ActiveSync", "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l=="},
      {"/Microsoft-Server-ActiveSync?jQAJBBCx+/Qs8A3bRf9Q1Q0uEh3gBAAAAAALV2luZG93c01haWw=",
       "/Microsoft-Server-ActiveSync", "jQAJBBCx+/Qs8A3bRf9Q1Q0uEh3gBAAAAAALV2luZG93c01haWw="},
      {"/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice%40corp.example&DeviceId=ABC123&"
       "DeviceType=iPhone",
       "/Microsoft-Server-ActiveSync",
       "Cmd=Sync&User=alice%40corp.example&DeviceId=ABC123&DeviceType=iPhone"},
      {"/public/../owa?x=../y%2F%00%zz%252e", "/owa", "x=../y%2F%00%zz%252e"},
      {"/owa/?a?b=c/d", "/owa/", "a?b=c/d"},
      {"/owa?realm=corp\\alice", "/owa", "realm=corp\\alice"},
      {"/owa?", "/owa", ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    const auto n = must_normalize(c.target);
    CHECK(n.path == c.path);
    CHECK(n.has_query);
    CHECK(n.query == c.query);
    CHECK(n.forward_target() == c.path + "?" + c.query);
  }
  const auto none = must_normalize("/owa");
  CHECK_FALSE(none.has_query);
  CHECK(none.forward_target() == "/owa");
}

TEST_CASE("routing: absolute-form gives the authority, path and query") {
  struct absolute_case {
    std::string target;
    std::string authority;
    std::string path;
    bool has_query;
    std::string query;
  };
  const std::vector<absolute_case> cases = {
      {"https://mail.example.com/owa/x?y", "mail.example.com", "/owa/x", true, "y"},
      {"http://mail.example.com/owa", "mail.example.com", "/owa", false, ""},
      {"HTTP://Mail.Example.com:8443/%6fwa", "Mail.Example.com:8443", "/owa", false, ""},
      {"https://mail.example.com", "mail.example.com", "/", false, ""},
      {"https://mail.example.com?x=1", "mail.example.com", "/", true, "x=1"},
      {"https://[::1]:443/owa", "[::1]:443", "/owa", false, ""},
      {"https://127.0.0.1/ecp/", "127.0.0.1", "/ecp/", false, ""},
  };
  for (const auto& c : cases) {
    CAPTURE(c.target);
    const auto n = must_normalize(c.target);
    CHECK(n.authority == c.authority);
    CHECK(n.path == c.path);
    CHECK(n.has_query == c.has_query);
    CHECK(n.query == c.query);
  }
  CHECK(must_normalize("/owa").authority.empty());
}

TEST_CASE("routing: a target longer than the limit is refused") {
  const std::string target = "/owa/" + std::string(100, 'a');
  CHECK(routing::normalize_target(target, target.size()).has_value());
  const auto r = routing::normalize_target(target, target.size() - 1);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == routing::make_error_code(errc::target_too_long));
  // The limit applies before anything else, whatever the target holds.
  const auto bad = routing::normalize_target("/\x01\x02\x03", 2);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error() == routing::make_error_code(errc::target_too_long));
}

TEST_CASE("routing: normalization is idempotent and its output is clean") {
  std::vector<std::string> targets;
  for (const auto& c : owa_spellings) targets.push_back(c.target);
  for (const auto& c : encodings) targets.push_back(c.target);
  targets.emplace_back("/Microsoft-Server-ActiveSync?jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l==");
  targets.emplace_back("/owa/%25zz/%c3%a9?q=%2F");
  targets.emplace_back("https://mail.example.com");
  for (const auto& t : targets) {
    const auto n = must_normalize(t);
    check_invariants(t, n);
  }
}

TEST_CASE("routing: error codes have the proxy.routing category and messages") {
  const auto ec = routing::make_error_code(errc::encoded_separator);
  CHECK(std::string_view(ec.category().name()) == "proxy.routing");
  CHECK(!ec.message().empty());
  const cbagate::error_code implicit = errc::bad_utf8;  // is_error_code_enum
  CHECK(implicit == routing::make_error_code(errc::bad_utf8));
  CHECK(routing::make_error_code(errc::bad_utf8) != routing::make_error_code(errc::bad_escape));
}
