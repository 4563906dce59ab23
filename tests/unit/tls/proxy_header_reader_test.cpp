#include "tls/proxy_header_reader.hpp"

#include <doctest/doctest.h>

#include <optional>
#include <string>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

namespace net = boost::asio;
using tcp = net::ip::tcp;
using cbagate::tls::proxy_read;
using cbagate::tls::read_proxy_header;
using namespace std::chrono_literals;

namespace {

// A connected loopback pair: `server` as accepted, `client` the other end.
struct pair {
  net::io_context ioc;
  tcp::socket server{ioc}, client{ioc};
  pair() {
    tcp::acceptor acc(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
    client.connect(acc.local_endpoint());
    acc.accept(server);
  }
  proxy_read read(std::chrono::milliseconds timeout) {
    std::optional<proxy_read> got;
    net::co_spawn(ioc, read_proxy_header(server, timeout),
                  [&](std::exception_ptr e, proxy_read r) {
                    REQUIRE_FALSE(e);
                    got = r;
                  });
    ioc.run_for(10s);
    REQUIRE(got.has_value());
    return *got;
  }
  std::string rest(std::size_t n) {
    std::string s(n, '\0');
    net::read(server, net::buffer(s));
    return s;
  }
};

}  // namespace

TEST_CASE("proxy_header_reader: v1 header consumed exactly, the TLS bytes stay in the socket") {
  pair p;
  net::write(p.client, net::buffer(std::string("PROXY TCP4 203.0.113.7 10.0.0.1 40000 443\r\nHELLO")));
  const proxy_read r = p.read(5000ms);
  REQUIRE(r.result == proxy_read::outcome::ok);
  CHECK(r.header.source.address_string() == "203.0.113.7");
  CHECK(p.rest(5) == "HELLO");
}

TEST_CASE("proxy_header_reader: a header arriving in pieces is waited for") {
  pair p;
  const std::string hdr("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\x0a\x00\x00\x01\x9c\x40\x01\xbb", 28);
  net::write(p.client, net::buffer(hdr.substr(0, 7)));
  std::optional<proxy_read> got;
  net::co_spawn(p.ioc, read_proxy_header(p.server, 5s), [&](std::exception_ptr, proxy_read r) { got = r; });
  p.ioc.run_for(50ms);
  CHECK_FALSE(got.has_value());
  net::write(p.client, net::buffer(hdr.substr(7) + "X"));
  p.ioc.restart();
  p.ioc.run_for(5s);
  REQUIRE(got.has_value());
  REQUIRE(got->result == proxy_read::outcome::ok);
  CHECK(got->header.version == 2);
  CHECK(got->header.source.address_string() == "192.0.2.1");
  CHECK(got->header.source.port == 40000);
  CHECK(p.rest(1) == "X");
}

TEST_CASE("proxy_header_reader: malformed, truncated, silent") {
  SUBCASE("malformed: a ClientHello where the header should be") {
    pair p;
    net::write(p.client, net::buffer(std::string("\x16\x03\x01\x02\x00", 5)));
    const proxy_read r = p.read(5000ms);
    CHECK(r.result == proxy_read::outcome::invalid);
    CHECK(r.describe() == "malformed:bad_signature");
  }
  SUBCASE("truncated: the peer closes mid-header") {
    pair p;
    net::write(p.client, net::buffer(std::string("PROXY TCP4 1.2.3.4")));
    p.client.shutdown(tcp::socket::shutdown_send);
    CHECK(p.read(5000ms).result == proxy_read::outcome::truncated);
  }
  SUBCASE("truncated: closed before any byte") {
    pair p;
    p.client.close();
    CHECK(p.read(5000ms).result == proxy_read::outcome::truncated);
  }
  SUBCASE("timeout: nothing comes") {
    pair p;
    net::write(p.client, net::buffer(std::string("PROXY ")));
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(p.read(100ms).result == proxy_read::outcome::timeout);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  }
  SUBCASE("oversized v2 length") {
    pair p;
    net::write(p.client, net::buffer(std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11\x40\x00", 16)));
    const proxy_read r = p.read(5000ms);
    CHECK(r.describe() == "malformed:too_long");
  }
}
