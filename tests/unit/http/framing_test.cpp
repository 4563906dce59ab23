#include "http/framing.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <doctest/doctest.h>

namespace {

namespace bhttp = boost::beast::http;
using cbagate::http::check_request_framing;
using cbagate::http::errc;
using cbagate::http::scan_header_block;
using cbagate::http::scan_header_prefix;
using cbagate::http::scan_limits;

using namespace std::string_view_literals;

// A parsed header built field by field, so check_request_framing sees exactly what a lenient
// parser could have produced (Beast itself refuses some of these before we see them).
bhttp::request_header<> make_header(std::string_view method, std::string_view target,
                                    unsigned version,
                                    const std::vector<std::pair<std::string, std::string>>& fs) {
  bhttp::request_header<> h;
  h.method_string(method);
  h.target(target);
  h.version(version);
  for (const auto& [name, value] : fs) h.insert(name, value);
  return h;
}

// The session's order: raw scan, then Beast, then the parsed checks. Returns true when the
// request would be refused by any of the three.
struct guard_result {
  std::optional<errc> scan;
  boost::beast::error_code beast;
  std::optional<errc> framing;
  bool refused() const { return scan.has_value() || bool(beast) || framing.has_value(); }
};

guard_result run_guard(std::string_view raw) {
  guard_result r;
  r.scan = scan_header_block(raw);
  if (r.scan) return r;
  bhttp::request_parser<bhttp::empty_body> p;
  p.header_limit(49152);
  p.body_limit(boost::none);
  p.eager(false);
  p.put(boost::asio::buffer(raw.data(), raw.size()), r.beast);
  if (r.beast) return r;
  REQUIRE(p.is_header_done());
  r.framing = check_request_framing(p.get().base());
  return r;
}

constexpr std::string_view get_ok = "GET / HTTP/1.1\r\nHost: mail.example.com\r\n\r\n";

}  // namespace

// --- raw header block -------------------------------------------------------------------

TEST_CASE("framing: plain request passes the raw scan") {
  CHECK_FALSE(scan_header_block(get_ok).has_value());
  const auto s = scan_header_prefix(get_ok);
  CHECK(s.size == get_ok.size());
  CHECK(s.field_count == 1);
  CHECK_FALSE(s.error.has_value());
}

TEST_CASE("framing: NUL byte refused") {
  const std::string in_value("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n", 37);
  const std::string in_name("GET / HTTP/1.1\r\nHost: h\r\nX\0A: ab\r\n\r\n", 36);
  const std::string in_target("GET /a\0 HTTP/1.1\r\nHost: h\r\n\r\n", 29);
  CHECK(scan_header_block(in_value) == errc::nul_byte);
  CHECK(scan_header_block(in_name) == errc::nul_byte);
  CHECK(scan_header_block(in_target) == errc::nul_byte);
}

TEST_CASE("framing: bare CR refused") {
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n") == errc::bare_cr);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n") == errc::bare_cr);
  CHECK(scan_header_block("GET / HTTP/1.1\rHost: h\r\n\r\n") == errc::bare_cr);
}

TEST_CASE("framing: bare LF refused") {
  CHECK(scan_header_block("GET / HTTP/1.1\nHost: h\n\n") == errc::bare_lf);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n") == errc::bare_lf);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\n\n") == errc::bare_lf);
}

TEST_CASE("framing: obs-fold refused") {
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n") == errc::obs_fold);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n") ==
        errc::obs_fold);
  CHECK(scan_header_block("GET / HTTP/1.1\r\n Host: h\r\n\r\n") == errc::obs_fold);
}

TEST_CASE("framing: whitespace before colon refused") {
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost : h\r\n\r\n") == errc::space_before_colon);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\n\r\n") ==
        errc::space_before_colon);
}

TEST_CASE("framing: bad field names refused") {
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHo(st: h\r\n\r\n") == errc::bad_field_name);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n") == errc::bad_field_name);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n") == errc::bad_field_name);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX A: b\r\n\r\n") == errc::bad_field_name);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX\x7f: b\r\n\r\n") == errc::bad_field_name);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: b\r\n\r\n") ==
        errc::bad_field_name);
}

TEST_CASE("framing: control bytes and DEL in values refused") {
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01z\r\n\r\n") ==
        errc::control_in_value);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x0bz\r\n\r\n") ==
        errc::control_in_value);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x1f\r\n\r\n") ==
        errc::control_in_value);
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fz\r\n\r\n") ==
        errc::control_in_value);
  CHECK(scan_header_block("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0c" "chunked\r\n\r\n") ==
        errc::control_in_value);
}

TEST_CASE("framing: malformed request line refused") {
  CHECK(scan_header_block("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n") == errc::bad_request_line);
  CHECK(scan_header_block("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n") == errc::bad_request_line);
  CHECK(scan_header_block("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n") == errc::bad_request_line);
}

TEST_CASE("framing: header block without its empty line is incomplete") {
  CHECK(scan_header_block("GET / HTTP/1.1\r\nHost: h\r\n") == errc::incomplete_header);
  CHECK(scan_header_block("") == errc::incomplete_header);
}

TEST_CASE("framing: prefix scan waits for more bytes and reports early errors") {
  const auto partial = scan_header_prefix("GET / HTTP/1.1\r\nHost: h\r");
  CHECK(partial.size == 0);
  CHECK_FALSE(partial.error.has_value());
  CHECK(partial.field_count == 0);
  // A bare LF is reported before the (never arriving) CRLF CRLF.
  CHECK(scan_header_prefix("GET / HTTP/1.1\nHost").error == errc::bare_lf);
  CHECK(scan_header_prefix(std::string_view("GET /\0", 6)).error == errc::nul_byte);
  // Bytes after the block (a body, a pipelined request) are not examined.
  const std::string with_body = std::string(get_ok) + std::string("\0\n\r", 3);
  const auto s = scan_header_prefix(with_body);
  CHECK(s.size == get_ok.size());
  CHECK_FALSE(s.error.has_value());
}

TEST_CASE("framing: field count limit") {
  std::string raw = "GET / HTTP/1.1\r\nHost: h\r\n";
  for (int i = 0; i < 99; ++i) raw += "X-F: v\r\n";
  raw += "\r\n";
  CHECK_FALSE(scan_header_block(raw).has_value());  // exactly 100
  const std::string over = raw.substr(0, raw.size() - 2) + "X-F: v\r\n\r\n";
  CHECK(scan_header_block(over) == errc::too_many_fields);
  CHECK(scan_header_block(get_ok, scan_limits{0, 16384}) == errc::too_many_fields);
}

TEST_CASE("framing: target length limit") {
  const std::string target = "/" + std::string(16383, 'a');
  const std::string ok = "GET " + target + " HTTP/1.1\r\nHost: h\r\n\r\n";
  const std::string over = "GET " + target + "b HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK_FALSE(scan_header_block(ok).has_value());
  CHECK(scan_header_block(over) == errc::target_too_long);
  CHECK(scan_header_block(get_ok, scan_limits{100, 0}) == errc::target_too_long);
}

// --- parsed header ----------------------------------------------------------------------

TEST_CASE("framing: Content-Length with Transfer-Encoding refused") {
  CHECK(check_request_framing(make_header("POST", "/", 11,
                                          {{"Host", "h"},
                                           {"Content-Length", "5"},
                                           {"Transfer-Encoding", "chunked"}})) == errc::cl_and_te);
  CHECK(check_request_framing(make_header("POST", "/", 11,
                                          {{"Host", "h"},
                                           {"Transfer-Encoding", "gzip"},
                                           {"Content-Length", "5"}})) == errc::cl_and_te);
}

TEST_CASE("framing: Content-Length twice refused") {
  CHECK(check_request_framing(make_header(
            "POST", "/", 11, {{"Host", "h"}, {"Content-Length", "5"}, {"Content-Length", "5"}})) ==
        errc::multiple_content_length);
  CHECK(check_request_framing(make_header(
            "POST", "/", 11, {{"Host", "h"}, {"Content-Length", "5"}, {"Content-Length", "6"}})) ==
        errc::multiple_content_length);
}

TEST_CASE("framing: Content-Length not a plain decimal refused") {
  for (const char* v : {"+5", "-5", "5, 5", "5,5", "5 5", "0x5", "", "5a", "1e3",
                        "18446744073709551616", "99999999999999999999999"}) {
    CAPTURE(v);
    CHECK(check_request_framing(make_header("POST", "/", 11,
                                            {{"Host", "h"}, {"Content-Length", v}})) ==
          errc::bad_content_length);
  }
  CHECK_FALSE(check_request_framing(make_header(
                  "POST", "/", 11, {{"Host", "h"}, {"Content-Length", "18446744073709551615"}}))
                  .has_value());
}

TEST_CASE("framing: Transfer-Encoding other than one chunked refused") {
  for (const char* v : {"chunked, chunked", "gzip, chunked", "chunked, gzip", "identity",
                        "xchunked", "chunkedx", "chunked ,", ",chunked", "chun ked", "chunked;q=1",
                        "chunked\xa0", "\xa0" "chunked", ""}) {
    CAPTURE(v);
    CHECK(check_request_framing(make_header("POST", "/", 11,
                                            {{"Host", "h"}, {"Transfer-Encoding", v}})) ==
          errc::unsupported_transfer_coding);
  }
  CHECK(check_request_framing(make_header(
            "POST", "/", 11,
            {{"Host", "h"}, {"Transfer-Encoding", "chunked"}, {"Transfer-Encoding", "chunked"}})) ==
        errc::unsupported_transfer_coding);
  CHECK(check_request_framing(make_header(
            "POST", "/", 11,
            {{"Host", "h"}, {"Transfer-Encoding", "gzip"}, {"Transfer-Encoding", "chunked"}})) ==
        errc::unsupported_transfer_coding);
}

TEST_CASE("framing: Transfer-Encoding whitespace variants") {
  // Optional whitespace around the value is legal (RFC 9110 5.5) and Beast strips it, so the
  // full guard accepts it as plain chunked; every other whitespace is refused somewhere.
  CHECK_FALSE(run_guard("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:   chunked \t\r\n\r\n")
                  .refused());
  CHECK(run_guard("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n").scan ==
        errc::space_before_colon);
  CHECK(run_guard("POST / HTTP/1.1\r\nHost: h\r\n Transfer-Encoding: chunked\r\n\r\n").scan ==
        errc::obs_fold);
  CHECK(run_guard("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \x0b" "chunked\r\n\r\n").scan ==
        errc::control_in_value);
  CHECK(run_guard("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked \r\n\r\n").framing ==
        std::nullopt);
  CHECK(run_guard("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked ,\r\n\r\n").framing ==
        errc::unsupported_transfer_coding);
  CHECK(run_guard("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\xa0\r\n\r\n").framing ==
        errc::unsupported_transfer_coding);
}

TEST_CASE("framing: Transfer-Encoding in HTTP/1.0 refused") {
  CHECK(check_request_framing(
            make_header("POST", "/", 10, {{"Transfer-Encoding", "chunked"}})) ==
        errc::te_in_http10);
}

TEST_CASE("framing: Host must be exactly one valid field") {
  CHECK(check_request_framing(make_header("GET", "/", 11, {{"Host", "a"}, {"Host", "b"}})) ==
        errc::multiple_host);
  CHECK(check_request_framing(make_header("GET", "/", 11, {{"Host", "a"}, {"host", "a"}})) ==
        errc::multiple_host);
  CHECK(check_request_framing(make_header("GET", "/", 11, {})) == errc::missing_host);
  for (const char* v : {"a@b", "user@mail.example.com", "a b", "", "a:", "a:99999", "a:1x",
                        "a:443:443", "a,b", "a/b", "[::1", "[]", "[::1]x", "a%2eb", "a\tb",
                        "exa\xc3\xa9mple.com", "[fe80::1%eth0]"}) {
    CAPTURE(v);
    CHECK(check_request_framing(make_header("GET", "/", 11, {{"Host", v}})) == errc::bad_host);
  }
}

TEST_CASE("framing: fragment in target refused") {
  CHECK(check_request_framing(make_header("GET", "/owa/#x", 11, {{"Host", "h"}})) ==
        errc::fragment_in_target);
  CHECK(check_request_framing(make_header("GET", "/owa?a=1#", 11, {{"Host", "h"}})) ==
        errc::fragment_in_target);
}

TEST_CASE("framing: target not in origin form refused") {
  CHECK(check_request_framing(make_header("GET", "http://evil/owa", 11, {{"Host", "h"}})) ==
        errc::bad_target_form);
  CHECK(check_request_framing(make_header("CONNECT", "h:443", 11, {{"Host", "h:443"}})) ==
        errc::bad_target_form);
  CHECK(check_request_framing(make_header("GET", "*", 11, {{"Host", "h"}})) ==
        errc::bad_target_form);
  CHECK_FALSE(check_request_framing(make_header("OPTIONS", "*", 11, {{"Host", "h"}})).has_value());
  CHECK(check_request_framing(make_header("GET", "owa/", 11, {{"Host", "h"}})) ==
        errc::bad_target_form);
}

TEST_CASE("framing: absolute-form only on the Host authority") {
  const auto check = [](std::string_view target, unsigned version,
                        std::vector<std::pair<std::string, std::string>> fs) {
    return check_request_framing(make_header("GET", target, version, fs));
  };
  CHECK_FALSE(check("http://mail.example.com/owa/", 11, {{"Host", "mail.example.com"}}));
  CHECK_FALSE(check("HTTPS://MAIL.example.com/ecp?x=1", 11, {{"Host", "mail.example.COM"}}));
  CHECK_FALSE(check("https://mail.example.com:443/owa", 11, {{"Host", "mail.example.com:443"}}));
  CHECK(check("http://evil.example/owa/", 11, {{"Host", "mail.example.com"}}) ==
        errc::bad_target_form);
  CHECK(check("https://mail.example.com:443/owa", 11, {{"Host", "mail.example.com"}}) ==
        errc::bad_target_form);
  CHECK(check("http://mail.example.com@evil/owa", 11, {{"Host", "mail.example.com"}}) ==
        errc::bad_target_form);
  CHECK(check("ftp://mail.example.com/owa", 11, {{"Host", "mail.example.com"}}) ==
        errc::bad_target_form);
  CHECK(check("http:///owa", 11, {{"Host", "mail.example.com"}}) == errc::bad_target_form);
  CHECK(check("http://mail.example.com/owa", 10, {}) == errc::bad_target_form);
  CHECK(check("http://a/owa", 11, {{"Host", "a"}, {"Host", "a"}}) == errc::bad_target_form);
}

// --- the whole guard on raw attacks and on legitimate traffic ---------------------------

TEST_CASE("framing: every raw attack is refused by the full guard") {
  const std::vector<std::string> attacks{
      std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 35),
      "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
      "GET / HTTP/1.1\nHost: h\n\n",
      "GET / HTTP/1.1\r\nHost: h\r\nX: b\r\n c\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
      "GET / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
      "GET /owa#x HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET http://evil/owa HTTP/1.1\r\nHost: h\r\n\r\n",
  };
  for (const auto& raw : attacks) {
    CAPTURE(raw);
    CHECK(run_guard(raw).refused());
  }
}

TEST_CASE("framing: legitimate requests pass the full guard") {
  const std::vector<std::string> good{
      // ActiveSync Sync with a chunked WBXML body (the body is not part of the header block).
      "POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceId=ABC123&DeviceType=iPhone "
      "HTTP/1.1\r\n"
      "Host: mail.example.com\r\n"
      "Content-Type: application/vnd.ms-sync.wbxml\r\n"
      "MS-ASProtocolVersion: 16.1\r\n"
      "X-MS-PolicyKey: 1234567890\r\n"
      "User-Agent: Apple-iPhone13C2/1402.100\r\n"
      "Transfer-Encoding: chunked\r\n"
      "\r\n"
      "5\r\nhello\r\n0\r\n\r\n",
      "GET /owa/ HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: 0\r\n\r\n",
      "GET /owa/ HTTP/1.0\r\n\r\n",
      "GET /owa/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "GET /ecp/ HTTP/1.1\r\nHost: mail.example.com:443\r\n"
      "User-Agent: Mozilla/5.0\t(X11)\r\nX-Note: caf\xc3\xa9 \x80\xff\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: exch_01.corp.example\r\n\r\n",
      "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
      "POST /ecp/x.svc HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n",
      "POST /owa/service.svc HTTP/1.1\r\nHost: h\r\ntransfer-encoding: CHUNKED\r\n\r\n",
      "GET /owa/?q=%23x&a=b HTTP/1.1\r\nHost: h\r\nCookie: a=b; c=d\r\nX-Empty:\r\n\r\n",
  };
  for (const auto& raw : good) {
    CAPTURE(raw);
    const auto r = run_guard(raw);
    CHECK_FALSE(r.scan.has_value());
    CHECK_FALSE(r.beast);
    CHECK_FALSE(r.framing.has_value());
  }
}

TEST_CASE("framing: error codes belong to proxy.http with distinct messages") {
  const boost::system::error_code ec = errc::bare_lf;
  CHECK(std::string_view(ec.category().name()) == "proxy.http");
  CHECK(ec.message() == "line ending without CR in the request header");
  CHECK(cbagate::http::to_string(errc::cl_and_te) == "cl_and_te");
  CHECK(cbagate::http::to_string(errc::bad_target_form) == "bad_target_form");
  std::vector<std::string> seen;
  for (int v = static_cast<int>(errc::nul_byte); v <= static_cast<int>(errc::bad_target_form);
       ++v) {
    const boost::system::error_code e = static_cast<errc>(v);
    CAPTURE(v);
    CHECK(e.message() != "unknown proxy.http error");
    for (const auto& s : seen) CHECK(s != e.message());
    seen.push_back(e.message());
  }
}
