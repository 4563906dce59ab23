// Pins what Boost.Beast 1.81's request parser does by itself with the inputs that framing.hpp
// guards against (the table at the top of framing.hpp). If a Boost upgrade changes a row,
// this test fails and the table, and the session's error mapping, must be revisited.
#include "http/framing.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <doctest/doctest.h>

namespace {

namespace bhttp = boost::beast::http;
using bhttp::error;

struct parsed {
  boost::beast::error_code ec;
  bool header_done = false;
  bool chunked = false;
  std::optional<std::uint64_t> content_length;
};

parsed beast_put(std::string_view raw) {
  bhttp::request_parser<bhttp::empty_body> p;
  p.header_limit(49152);
  parsed r;
  p.put(boost::asio::buffer(raw.data(), raw.size()), r.ec);
  r.header_done = p.is_header_done();
  if (!r.ec && r.header_done) {
    r.chunked = p.chunked();
    if (p.content_length()) r.content_length = *p.content_length();
  }
  return r;
}

std::string req(std::string_view fields, std::string_view start = "POST / HTTP/1.1") {
  return std::string(start) + "\r\nHost: h\r\n" + std::string(fields) + "\r\n";
}

}  // namespace

TEST_CASE("beast parser: rejects malformed bytes itself") {
  CHECK(beast_put(std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 35)).ec ==
        error::bad_value);
  CHECK(beast_put(std::string("GET / HTTP/1.1\r\nHost: h\r\nX\0: ab\r\n\r\n", 35)).ec ==
        error::bad_field);
  CHECK(beast_put(std::string("GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n", 28)).ec == error::bad_target);
  CHECK(beast_put("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n").ec == error::bad_line_ending);
  CHECK(beast_put("GET / HTTP/1.1\r\nHost: h\nX: b\r\n\r\n").ec == error::bad_value);
  CHECK(beast_put("GET / HTTP/1.1\nHost: h\n\n").ec == error::bad_version);
  CHECK(beast_put("GET / HTTP/1.1\r\n Host: h\r\n\r\n").ec == error::bad_field);
  CHECK(beast_put("GET / HTTP/1.1\r\nHost : h\r\n\r\n").ec == error::bad_field);
  CHECK(beast_put("GET / HTTP/1.1\r\nHo(st: h\r\n\r\n").ec == error::bad_field);
  CHECK(beast_put("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n").ec == error::bad_value);
  CHECK(beast_put("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n").ec == error::bad_value);
  CHECK(beast_put("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n").ec == error::bad_method);
}

TEST_CASE("beast parser: accepts obs-fold by joining lines") {
  // We refuse it (errc::obs_fold) before Beast sees it.
  const auto r = beast_put("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n");
  CHECK_FALSE(r.ec);
  CHECK(r.chunked);
}

TEST_CASE("beast parser: Content-Length and Transfer-Encoding handling") {
  CHECK(beast_put(req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")).ec ==
        error::bad_transfer_encoding);
  CHECK(beast_put(req("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n")).ec ==
        error::bad_content_length);
  // Not chunked-last: no conflict seen, Content-Length frames the body.
  const auto gzip_cl = beast_put(req("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n"));
  CHECK_FALSE(gzip_cl.ec);
  CHECK(gzip_cl.content_length == 5U);
  CHECK(beast_put(req("Content-Length: 5\r\nContent-Length: 6\r\n")).ec ==
        error::multiple_content_length);
  CHECK(beast_put(req("Content-Length: 5,6\r\n")).ec == error::multiple_content_length);
  for (const char* v : {"+5", "-5", "0x5", "5 5", "", "99999999999999999999999"}) {
    CAPTURE(v);
    CHECK(beast_put(req(std::string("Content-Length: ") + v + "\r\n")).ec ==
          error::bad_content_length);
  }
}

TEST_CASE("beast parser: collapses equal Content-Length values") {
  const auto twice = beast_put(req("Content-Length: 5\r\nContent-Length: 5\r\n"));
  CHECK_FALSE(twice.ec);
  CHECK(twice.content_length == 5U);
  const auto list = beast_put(req("Content-Length: 5, 5\r\n"));
  CHECK_FALSE(list.ec);
  CHECK(list.content_length == 5U);
}

TEST_CASE("beast parser: Transfer-Encoding lists it accepts") {
  const auto cc = beast_put(req("Transfer-Encoding: chunked, chunked\r\n"));
  CHECK_FALSE(cc.ec);
  CHECK_FALSE(cc.chunked);  // read as a request without a body: the smuggling case
  const auto gc = beast_put(req("Transfer-Encoding: gzip, chunked\r\n"));
  CHECK_FALSE(gc.ec);
  CHECK(gc.chunked);
  for (const char* v : {"chunked, gzip", "identity", "xchunked"}) {
    CAPTURE(v);
    const auto r = beast_put(req(std::string("Transfer-Encoding: ") + v + "\r\n"));
    CHECK_FALSE(r.ec);
    CHECK_FALSE(r.chunked);
  }
  const auto split = beast_put(req("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"));
  CHECK_FALSE(split.ec);
  CHECK(split.chunked);
  CHECK(beast_put(req("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")).ec ==
        error::bad_transfer_encoding);
  const auto http10 = beast_put("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
  CHECK_FALSE(http10.ec);
  CHECK(http10.chunked);
}

TEST_CASE("beast parser: accepts Host fragment and target forms we refuse") {
  for (const char* raw : {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "GET / HTTP/1.1\r\n\r\n",
                          "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
                          "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
                          "GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
                          "GET http://x/a HTTP/1.1\r\nHost: a\r\n\r\n",
                          "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"}) {
    CAPTURE(raw);
    CHECK_FALSE(beast_put(raw).ec);
  }
}

TEST_CASE("beast parser: default limits the session must override") {
  // Request body_limit defaults to 1 MiB: an ActiveSync attachment upload would get 413.
  CHECK(beast_put(req("Content-Length: 1048577\r\n")).ec == error::body_limit);
  // header_limit defaults to 8 KiB.
  bhttp::request_parser<bhttp::empty_body> p;
  const std::string big = "GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(9000, 'a') + "\r\n\r\n";
  boost::beast::error_code ec;
  p.put(boost::asio::buffer(big), ec);
  CHECK(ec == error::header_limit);
}
