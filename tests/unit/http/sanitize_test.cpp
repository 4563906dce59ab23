#include "http/sanitize.hpp"

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <doctest/doctest.h>

namespace {

namespace bhttp = boost::beast::http;
using cbagate::http::add_forwarding_headers;
using cbagate::http::flat_fields;
using cbagate::http::sanitize_options;
using cbagate::http::sanitize_request;
using cbagate::http::sanitize_response;

using field_list = std::vector<std::pair<std::string, std::string>>;

flat_fields make_fields(const field_list& in) {
  flat_fields f;
  for (const auto& [name, value] : in) f.insert(name, value);
  return f;
}

// Names as they remain, in order, with their values.
field_list dump(const flat_fields& f) {
  field_list out;
  for (const auto& e : f) out.emplace_back(std::string(e.name_string()), std::string(e.value()));
  return out;
}

std::size_t count_named(const flat_fields& f, std::string_view name) {
  std::size_t n = 0;
  for (const auto& e : f) {
    if (boost::beast::iequals(e.name_string(), name)) ++n;
  }
  return n;
}

const sanitize_options header_mode{"X-Client-UPN", false};

}  // namespace

TEST_CASE("sanitize: spoofed X-Client-UPN removed in any case and count") {
  auto f = make_fields({{"Host", "mail.example.com"},
                        {"X-CLIENT-UPN", "admin@corp"},
                        {"x-client-upn", "admin@corp"},
                        {"X-Client-Upn", "ceo@corp"},
                        {"X-Client-UPN", "x"},
                        {"Accept", "*/*"}});
  const auto report = sanitize_request(f, header_mode);
  CHECK(count_named(f, "X-Client-UPN") == 0);
  CHECK(report.identity_removed == 4);
  CHECK(report.removed == 4);
  CHECK(dump(f) == field_list{{"Host", "mail.example.com"}, {"Accept", "*/*"}});
}

TEST_CASE("sanitize: built-in identity header removed even when another name is configured") {
  auto f = make_fields({{"X-Client-UPN", "admin@corp"}, {"X-Remote-Identity", "admin@corp"}});
  const auto report = sanitize_request(f, sanitize_options{"X-Remote-Identity", false});
  CHECK(f.begin() == f.end());
  CHECK(report.identity_removed == 2);
}

TEST_CASE("sanitize: configured custom identity header removed in any case and count") {
  auto f = make_fields({{"Host", "h"},
                        {"x-exchange-user", "a@corp"},
                        {"X-EXCHANGE-USER", "b@corp"},
                        {"X-Exchange-User", "c@corp"}});
  const auto report = sanitize_request(f, sanitize_options{"X-Exchange-User", false});
  CHECK(count_named(f, "X-Exchange-User") == 0);
  CHECK(report.identity_removed == 3);
  CHECK(dump(f) == field_list{{"Host", "h"}});
}

TEST_CASE("sanitize: underscore spellings of identity headers removed") {
  auto f = make_fields({{"X_Client_UPN", "admin@corp"},
                        {"x_client-upn", "admin@corp"},
                        {"X_Exchange_User", "a@corp"},
                        {"X_Forwarded_For", "10.0.0.1"},
                        {"Keep", "me"}});
  const auto report = sanitize_request(f, sanitize_options{"X-Exchange-User", false});
  CHECK(dump(f) == field_list{{"Keep", "me"}});
  CHECK(report.identity_removed == 3);
}

TEST_CASE("sanitize: underscore spellings of framing and hop-by-hop names removed") {
  auto f = make_fields({{"Host", "h"},
                        {"Content_Length", "5"},
                        {"transfer_encoding", "chunked"},
                        {"Proxy_Authorization", "Basic Zm9vOmJhcg=="},
                        {"Content-Length", "7"}});
  sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Host", "h"}, {"Content-Length", "7"}});
  auto r = make_fields({{"Content_Length", "5"}, {"Content-Length", "7"}});
  sanitize_response(r);
  CHECK(dump(r) == field_list{{"Content-Length", "7"}});
}

TEST_CASE("sanitize: other known identity headers removed") {
  auto f = make_fields({{"X-Forwarded-Client-Cert", "Hash=abc"},
                        {"X-Forwarded-User", "a"},
                        {"X-Remote-User", "a"},
                        {"Accept", "*/*"}});
  const auto report = sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Accept", "*/*"}});
  CHECK(report.identity_removed == 3);
}

TEST_CASE("sanitize: hop-by-hop request headers removed") {
  auto f = make_fields({{"Host", "h"},
                        {"Connection", "keep-alive"},
                        {"Keep-Alive", "timeout=5"},
                        {"Proxy-Connection", "keep-alive"},
                        {"TE", "trailers"},
                        {"Trailer", "X-Checksum"},
                        {"Transfer-Encoding", "chunked"},
                        {"Upgrade", "websocket"},
                        {"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
                        {"Proxy-Authenticate", "Basic"},
                        {"proxy_authorization", "Basic Zm9vOmJhcg=="},
                        {"Content-Type", "text/xml"}});
  const auto report = sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Host", "h"}, {"Content-Type", "text/xml"}});
  CHECK(report.removed == 10);
  CHECK(report.identity_removed == 0);
}

TEST_CASE("sanitize: headers named by Connection removed") {
  auto f = make_fields({{"Host", "h"},
                        {"Connection", "close, X-Secret ,\tx-other"},
                        {"Connection", "X-Third"},
                        {"X-Secret", "1"},
                        {"x-secret", "2"},
                        {"X-Other", "3"},
                        {"X-Third", "4"},
                        {"X-Stays", "5"}});
  sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Host", "h"}, {"X-Stays", "5"}});
}

TEST_CASE("sanitize: a long Connection list removes every header it names") {
  // More tokens than the pass keeps at hand (8): the rest are still honoured.
  auto f = make_fields({{"Host", "h"},
                        {"Connection", "x-a, x-b, x-c, x-d, x-e, x-f"},
                        {"Connection", " , x-g, X-H, x-i,x-j ,x-k"},
                        {"X-A", "1"}, {"X-E", "5"}, {"X-H", "8"}, {"X-J", "10"}, {"x-k", "11"},
                        {"X-Stays", "s"}});
  const auto report = sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Host", "h"}, {"X-Stays", "s"}});
  CHECK(report.removed == 7);  // five named fields and the two Connection fields
}

TEST_CASE("sanitize: Connection token never removes Host or Content-Length") {
  auto f = make_fields({{"Host", "mail.example.com"},
                        {"Content-Length", "5"},
                        {"Connection", "Host, content-length, Cookie"},
                        {"Cookie", "a=b"}});
  sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Host", "mail.example.com"}, {"Content-Length", "5"}});
}

TEST_CASE("sanitize: Authorization stripped only when asked") {
  SUBCASE("kept on header-mode password routes") {
    auto f = make_fields({{"Authorization", "Basic Zm9vOmJhcg=="}, {"Host", "h"}});
    sanitize_request(f, sanitize_options{"X-Client-UPN", false});
    CHECK(count_named(f, "Authorization") == 1);
  }
  SUBCASE("every copy removed on certificate routes") {
    auto f = make_fields({{"Authorization", "Basic Zm9vOmJhcg=="},
                          {"authorization", "NTLM TlRMTVNTUAABAAAA"},
                          {"AUTHORIZATION", "Negotiate YIIB"},
                          {"Host", "h"}});
    const auto report = sanitize_request(f, sanitize_options{"X-Client-UPN", true});
    CHECK(count_named(f, "Authorization") == 0);
    CHECK(report.removed == 3);
    CHECK(report.identity_removed == 0);
    CHECK(dump(f) == field_list{{"Host", "h"}});
  }
}

TEST_CASE("sanitize: client forwarding headers removed") {
  auto f = make_fields({{"X-Forwarded-For", "1.2.3.4"},
                        {"x-forwarded-proto", "http"},
                        {"X-Forwarded-Host", "evil"},
                        {"X-Forwarded-Port", "80"},
                        {"Forwarded", "for=1.2.3.4"},
                        {"X-Real-IP", "1.2.3.4"},
                        {"X-Original-URL", "/ecp/admin"},
                        {"X-Rewrite-URL", "/ecp/admin"},
                        {"Host", "h"}});
  sanitize_request(f, header_mode);
  CHECK(dump(f) == field_list{{"Host", "h"}});
}

TEST_CASE("sanitize: ordinary headers and Expect pass unchanged") {
  const field_list in{{"Host", "mail.example.com"},
                      {"User-Agent", "Apple-iPhone/1402.100"},
                      {"MS-ASProtocolVersion", "16.1"},
                      {"X-MS-PolicyKey", "0"},
                      {"Content-Type", "application/vnd.ms-sync.wbxml"},
                      {"Content-Length", "12"},
                      {"Expect", "100-continue"},
                      {"Cookie", "a=b"},
                      {"X-Mock-Delay", "5"}};
  auto f = make_fields(in);
  const auto report = sanitize_request(f, header_mode);
  CHECK(dump(f) == in);
  CHECK(report.removed == 0);
}

TEST_CASE("sanitize: X-Forwarded headers replaced not appended") {
  auto f = make_fields({{"Host", "mail.example.com"},
                        {"X-Forwarded-For", "6.6.6.6"},
                        {"X-Forwarded-For", "7.7.7.7"},
                        {"X-Forwarded-Proto", "http"},
                        {"X-Forwarded-Host", "evil.example"}});
  sanitize_request(f, header_mode);
  add_forwarding_headers(f, {"192.0.2.10", "https", "mail.example.com"});
  CHECK(count_named(f, "X-Forwarded-For") == 1);
  CHECK(f["X-Forwarded-For"] == "192.0.2.10");
  CHECK(f["X-Forwarded-Proto"] == "https");
  CHECK(f["X-Forwarded-Host"] == "mail.example.com");

  SUBCASE("replaces even without sanitize first") {
    auto g = make_fields({{"x-forwarded-for", "6.6.6.6"}, {"X-FORWARDED-PROTO", "http"}});
    add_forwarding_headers(g, {"2001:db8::1", "https", "h"});
    CHECK(count_named(g, "X-Forwarded-For") == 1);
    CHECK(g["X-Forwarded-For"] == "2001:db8::1");
    CHECK(count_named(g, "X-Forwarded-Proto") == 1);
    CHECK(g["X-Forwarded-Proto"] == "https");
  }
  SUBCASE("no Host means no X-Forwarded-Host") {
    auto g = make_fields({{"X-Forwarded-Host", "evil"}});
    add_forwarding_headers(g, {"192.0.2.10", "https", ""});
    CHECK(count_named(g, "X-Forwarded-Host") == 0);
  }
}

TEST_CASE("sanitize: response hop-by-hop and Connection-named headers removed") {
  auto f = make_fields({{"Content-Type", "text/html"},
                        {"Content-Length", "42"},
                        {"Connection", "keep-alive, X-Backend-Debug, Content-Length"},
                        {"Keep-Alive", "timeout=5"},
                        {"Transfer-Encoding", "chunked"},
                        {"Trailer", "X-Sum"},
                        {"Upgrade", "h2c"},
                        {"Proxy-Authenticate", "Basic"},
                        {"X-Backend-Debug", "server=ex01"},
                        {"Set-Cookie", "a=b"},
                        {"WWW-Authenticate", "Negotiate"}});
  const auto report = sanitize_response(f);
  CHECK(dump(f) == field_list{{"Content-Type", "text/html"},
                              {"Content-Length", "42"},
                              {"Set-Cookie", "a=b"},
                              {"WWW-Authenticate", "Negotiate"}});
  CHECK(report.removed == 7);
}

TEST_CASE("sanitize: response keeps identity-like and forwarding headers") {
  // Only requests are policed for identity; a response header of the same name is harmless.
  auto f = make_fields({{"X-Client-UPN", "a@corp"}, {"X-Forwarded-For", "1.2.3.4"}});
  sanitize_response(f);
  CHECK(count_named(f, "X-Client-UPN") == 1);
  CHECK(count_named(f, "X-Forwarded-For") == 1);
}

TEST_CASE("sanitize: a route's HSTS replaces the backend's, none leaves it") {
  using cbagate::http::response_policy;
  SUBCASE("set, backend sent two") {
    auto f = make_fields({{"Strict-Transport-Security", "max-age=1"},
                          {"strict-transport-security", "max-age=2"},
                          {"Content-Type", "text/html"}});
    sanitize_response(f, response_policy{.hsts = "max-age=31536000; includeSubDomains"});
    CHECK(dump(f) == field_list{{"Content-Type", "text/html"},
                                {"Strict-Transport-Security", "max-age=31536000; includeSubDomains"}});
  }
  SUBCASE("set, backend sent none") {
    auto f = make_fields({{"Content-Type", "text/html"}});
    sanitize_response(f, response_policy{.hsts = "max-age=31536000"});
    CHECK(f[bhttp::field::strict_transport_security] == "max-age=31536000");
  }
  SUBCASE("not set: the backend's passes") {
    auto f = make_fields({{"Strict-Transport-Security", "max-age=5"}});
    sanitize_response(f, response_policy{});
    CHECK(dump(f) == field_list{{"Strict-Transport-Security", "max-age=5"}});
  }
}
