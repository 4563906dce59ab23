#include "config/validate.hpp"

#include <doctest/doctest.h>

using namespace cbagate::config;

TEST_CASE("validate: parse_endpoint accepts host:port and [v6]:port") {
  std::string why;
  auto ep = parse_endpoint("0.0.0.0:443", why);
  REQUIRE(ep);
  CHECK(ep->host == "0.0.0.0");
  CHECK(ep->port == 443);
  ep = parse_endpoint("[::]:0", why);
  REQUIRE(ep);
  CHECK(ep->host == "::");
  CHECK(ep->port == 0);
  ep = parse_endpoint("[2001:db8::1]:65535", why);
  REQUIRE(ep);
  CHECK(ep->host == "2001:db8::1");
  CHECK(ep->port == 65535);
  ep = parse_endpoint("localhost:8443", why);
  REQUIRE(ep);
  CHECK(ep->host == "localhost");
}

TEST_CASE("validate: parse_endpoint rejects malformed addresses with a reason") {
  for (const char* bad : {"", "443", ":443", "0.0.0.0:", "0.0.0.0:65536", "0.0.0.0:123456",
                          "0.0.0.0:+1", "::1:443", "[::1]", "[::1]:", "[::1]x443", "[zz]:1",
                          "1.2.3:443", "256.1.1.1:1", "a_b:1", "-a:1", "a b:1"}) {
    CAPTURE(bad);
    std::string why;
    CHECK_FALSE(parse_endpoint(bad, why));
    CHECK_FALSE(why.empty());
  }
}

TEST_CASE("validate: parse_upstream_url takes http and https origins only") {
  std::string why;
  auto s = parse_upstream_url("http://127.0.0.1:8080", why);
  REQUIRE(s);
  CHECK_FALSE(s->tls);
  CHECK(s->host == "127.0.0.1");
  CHECK(s->port == 8080);
  CHECK(s->url == "http://127.0.0.1:8080");
  s = parse_upstream_url("HTTPS://Exchange.Lab.Test/", why);
  REQUIRE(s);
  CHECK(s->tls);
  CHECK(s->port == 443);
  CHECK(s->host == "Exchange.Lab.Test");
  s = parse_upstream_url("http://[::1]", why);
  REQUIRE(s);
  CHECK(s->host == "::1");
  CHECK(s->port == 80);
  for (const char* bad : {"", "127.0.0.1:8080", "ws://a", "http://", "http://a/b", "http://a?q",
                          "http://a#f", "http://u:p@a", "http://a:0", "http://a:99999",
                          "http://a%41", "http://[v1.x]", "http://a:8o"}) {
    CAPTURE(bad);
    std::string reason;
    CHECK_FALSE(parse_upstream_url(bad, reason));
    CHECK_FALSE(reason.empty());
  }
}

TEST_CASE("validate: route prefixes are canonical paths") {
  std::string why;
  for (const char* good : {"/", "/owa", "/Microsoft-Server-ActiveSync", "/a/b.c", "/x..y", "/~u"}) {
    CAPTURE(good);
    CHECK(is_valid_route_prefix(good, why));
  }
  for (const char* bad : {"", "owa", "/owa/", "//", "/a//b", "/.", "/a/..", "/./a", "/a%20",
                          "/a\\b", "/a b", "/a\tb", "/a?", "/a#", "/\x7f", "/\xc3\xa9"}) {
    CAPTURE(bad);
    std::string reason;
    CHECK_FALSE(is_valid_route_prefix(bad, reason));
    CHECK_FALSE(reason.empty());
  }
}

TEST_CASE("validate: the identity header is a token and not a reserved field") {
  std::string why;
  CHECK(is_valid_identity_header("X-Client-UPN", why));
  CHECK(is_valid_identity_header("x-ms-upn", why));
  for (const char* bad : {"", "Host", "HOST", "Content-Length", "Transfer-Encoding", "Connection",
                          "Keep-Alive", "TE", "Upgrade", "Authorization", "Proxy-Authorization",
                          "Cookie", "X-Forwarded-For", "Forwarded", "X UPN", "X-UPN:", "X\"",
                          "X-\xc3\xa9"}) {
    CAPTURE(bad);
    std::string reason;
    CHECK_FALSE(is_valid_identity_header(bad, reason));
    CHECK_FALSE(reason.empty());
  }
  CHECK_FALSE(is_valid_identity_header(std::string(65, 'x'), why));
}

TEST_CASE("validate: SNI names and host names") {
  std::string why;
  CHECK(is_valid_sni_name("mail.lab.test", why));
  CHECK(is_valid_sni_name("*.lab.test", why));
  for (const char* bad : {"", "*", "*.test", "a.*.test", "*a.lab.test", "a..b", "a.-b.c", "a_b.c"}) {
    CAPTURE(bad);
    CHECK_FALSE(is_valid_sni_name(bad, why));
  }
  CHECK(is_valid_host_name("exchange.lab.test", why));
  CHECK(is_valid_host_name("10.0.0.1", why));
  CHECK(is_valid_host_name("::1", why));
  CHECK(is_valid_host_name("[::1]", why));
  CHECK_FALSE(is_valid_host_name("10.0.0.256", why));
  CHECK_FALSE(is_valid_host_name(std::string(64, 'a') + ".test", why));
  CHECK(iequals("/OWA", "/owa"));
  CHECK_FALSE(iequals("/owa", "/owa2"));
}
