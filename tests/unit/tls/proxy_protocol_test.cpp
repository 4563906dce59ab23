#include "tls/proxy_protocol.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

using cbagate::config::cidr;
using cbagate::config::parse_cidr;
using cbagate::tls::net_address;
using cbagate::tls::parse_ip;
using cbagate::tls::parse_proxy_header;
using cbagate::tls::proxy_error;
using state = cbagate::tls::proxy_parse::state;

namespace {

std::vector<std::uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

const std::string v2_sig("\r\n\r\n\0\r\nQUIT\n", 12);

std::vector<std::uint8_t> v2(std::uint8_t ver_cmd, std::uint8_t fam, std::string block) {
  std::string s = v2_sig;
  s.push_back(static_cast<char>(ver_cmd));
  s.push_back(static_cast<char>(fam));
  s.push_back(static_cast<char>(block.size() >> 8));
  s.push_back(static_cast<char>(block.size() & 0xFF));
  s += block;
  return bytes(s);
}

std::string v4_block(std::string_view src, std::string_view dst, std::uint16_t sp, std::uint16_t dp) {
  net_address a, b;
  REQUIRE(parse_ip(src, a));
  REQUIRE(parse_ip(dst, b));
  std::string out(reinterpret_cast<const char*>(a.bytes.data()), 4);
  out.append(reinterpret_cast<const char*>(b.bytes.data()), 4);
  for (const std::uint16_t p : {sp, dp}) {
    out.push_back(static_cast<char>(p >> 8));
    out.push_back(static_cast<char>(p & 0xFF));
  }
  return out;
}

}  // namespace

TEST_CASE("proxy_protocol: v1 TCP4 with TLS bytes after it") {
  const auto in = bytes("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n\x16\x03\x01");
  const auto r = parse_proxy_header(in);
  REQUIRE(r.status == state::complete);
  CHECK(r.header.version == 1);
  CHECK_FALSE(r.header.local);
  CHECK(r.header.length == in.size() - 3);
  CHECK(r.header.source.address_string() == "192.0.2.1");
  CHECK(r.header.source.port == 56324);
  CHECK(r.header.destination.address_string() == "198.51.100.2");
  CHECK(r.header.destination.port == 443);
}

TEST_CASE("proxy_protocol: v1 TCP6 and UNKNOWN") {
  auto r = parse_proxy_header(bytes("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n"));
  REQUIRE(r.status == state::complete);
  CHECK(r.header.source.address_string() == "2001:db8::1");
  CHECK(r.header.destination.port == 65535);
  r = parse_proxy_header(bytes("PROXY UNKNOWN\r\n"));
  REQUIRE(r.status == state::complete);
  CHECK(r.header.local);
  CHECK(r.header.length == 15);
  r = parse_proxy_header(bytes("PROXY UNKNOWN whatever the sender put here\r\n"));
  REQUIRE(r.status == state::complete);
  CHECK(r.header.local);
}

TEST_CASE("proxy_protocol: every strict prefix of a header needs more bytes") {
  for (const auto& full : {bytes("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"),
                           v2(0x21, 0x11, v4_block("10.1.2.3", "10.0.0.1", 4000, 443))}) {
    for (std::size_t n = 0; n < full.size(); ++n) {
      CAPTURE(n);
      CHECK(parse_proxy_header(std::span(full).first(n)).status == state::need_more);
    }
    CHECK(parse_proxy_header(full).status == state::complete);
  }
}

TEST_CASE("proxy_protocol: v1 refusals") {
  struct bad {
    const char* text;
    proxy_error why;
  };
  for (const bad& b : {
           bad{"PROXY TCP4 010.0.0.1 1.2.3.4 1 2\r\n", proxy_error::bad_address},   // octal-looking
           bad{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", proxy_error::bad_address},        // LF alone
           bad{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", proxy_error::bad_address},       // CR alone
           bad{"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", proxy_error::bad_address},
           bad{"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", proxy_error::bad_address},
           bad{"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", proxy_error::bad_address},
           bad{"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", proxy_error::bad_address},  // family mix
           bad{"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", proxy_error::bad_address},
           bad{"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", proxy_error::bad_address},
           bad{"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", proxy_error::bad_family},
           bad{"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", proxy_error::bad_family},
           bad{"PROXZ TCP4", proxy_error::bad_signature},
           bad{"GET / HTTP/1.1\r\n", proxy_error::bad_signature},
           bad{"\x16\x03\x01\x02\x00", proxy_error::bad_signature},  // a TLS ClientHello
       }) {
    CAPTURE(b.text);
    const auto r = parse_proxy_header(bytes(b.text));
    CHECK(r.status == state::invalid);
    CHECK(r.error == b.why);
  }
  // No CRLF within 107 bytes: too long, decided as soon as 107 bytes are there.
  std::string longer = "PROXY UNKNOWN " + std::string(93, 'a');
  REQUIRE(longer.size() == 107);
  auto r = parse_proxy_header(bytes(longer));
  CHECK(r.status == state::invalid);
  CHECK(r.error == proxy_error::too_long);
  CHECK(parse_proxy_header(bytes(longer.substr(0, 106))).status == state::need_more);
  // The worst case of the specification (107 bytes with CRLF) is accepted.
  const std::string ff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string worst = "PROXY UNKNOWN " + ff + " " + ff + " 65535 65535\r\n";
  REQUIRE(worst.size() == 107);
  CHECK(parse_proxy_header(bytes(worst)).status == state::complete);
}

TEST_CASE("proxy_protocol: v2 PROXY over IPv4 and IPv6, TLVs skipped") {
  auto in = v2(0x21, 0x11, v4_block("192.0.2.9", "10.0.0.1", 51000, 443));
  in.push_back(0x16);  // TLS follows
  auto r = parse_proxy_header(in);
  REQUIRE(r.status == state::complete);
  CHECK(r.header.version == 2);
  CHECK(r.header.length == 28);
  CHECK(r.header.source.address_string() == "192.0.2.9");
  CHECK(r.header.source.port == 51000);

  std::string block(36, '\0');
  block[0] = 0x20, block[1] = 0x01, block[2] = 0x0d, block[3] = static_cast<char>(0xb8);
  block[15] = 1;
  block[32] = 0x04, block[33] = static_cast<char>(0xd2);
  block += std::string("\x04\x00\x02hi", 5);  // a TLV (PP2_TYPE_NOOP)
  r = parse_proxy_header(v2(0x21, 0x21, block));
  REQUIRE(r.status == state::complete);
  CHECK(r.header.source.address_string() == "2001:db8::1");
  CHECK(r.header.source.port == 1234);
  CHECK(r.header.length == 16 + 41);
}

TEST_CASE("proxy_protocol: v2 LOCAL (health check) is accepted, whatever its block") {
  auto r = parse_proxy_header(v2(0x20, 0x00, ""));
  REQUIRE(r.status == state::complete);
  CHECK(r.header.local);
  CHECK(r.header.length == 16);
  r = parse_proxy_header(v2(0x20, 0x11, v4_block("1.2.3.4", "5.6.7.8", 1, 2)));
  REQUIRE(r.status == state::complete);
  CHECK(r.header.local);
  CHECK(r.header.source.fam == net_address::family::none);
  r = parse_proxy_header(v2(0x21, 0x00, ""));  // PROXY with UNSPEC: the socket's peer stands
  REQUIRE(r.status == state::complete);
  CHECK(r.header.local);
}

TEST_CASE("proxy_protocol: v2 refusals") {
  CHECK(parse_proxy_header(v2(0x11, 0x11, v4_block("1.2.3.4", "5.6.7.8", 1, 2))).error ==
        proxy_error::bad_version);
  CHECK(parse_proxy_header(v2(0x22, 0x11, v4_block("1.2.3.4", "5.6.7.8", 1, 2))).error ==
        proxy_error::bad_command);
  CHECK(parse_proxy_header(v2(0x21, 0x41, "")).error == proxy_error::bad_family);
  CHECK(parse_proxy_header(v2(0x21, 0x12, v4_block("1.2.3.4", "5.6.7.8", 1, 2))).error ==
        proxy_error::bad_family);  // UDP
  CHECK(parse_proxy_header(v2(0x21, 0x11, "short")).error == proxy_error::bad_address);
  CHECK(parse_proxy_header(v2(0x21, 0x21, v4_block("1.2.3.4", "5.6.7.8", 1, 2))).error ==
        proxy_error::bad_address);  // v6 family with a v4-sized block
  // The length field alone decides "too long", before any of the block arrives.
  auto big = v2(0x21, 0x11, std::string(2000, 'x'));
  big.resize(16);
  const auto r = parse_proxy_header(big);
  CHECK(r.status == state::invalid);
  CHECK(r.error == proxy_error::too_long);
  CHECK(parse_proxy_header(big, 16 + 2000).status == state::need_more);
  // A broken signature is refused at its first wrong byte.
  CHECK(parse_proxy_header(bytes(std::string("\r\n\r\nX", 5))).error == proxy_error::bad_signature);
}

TEST_CASE("proxy_protocol: CIDR ranges") {
  cidr c;
  net_address a;
  const auto in = [&](const char* range, const char* addr) {
    REQUIRE(parse_cidr(range, c));
    REQUIRE(parse_ip(addr, a));
    return a.in(c);
  };
  CHECK(in("10.0.0.0/8", "10.200.3.4"));
  CHECK_FALSE(in("10.0.0.0/8", "11.0.0.1"));
  CHECK(in("10.0.0.0/8", "::ffff:10.9.9.9"));  // a v4-mapped peer of a dual-stack socket
  CHECK(in("::ffff:10.0.0.0/104", "10.9.9.9"));
  CHECK(in("127.0.0.1", "127.0.0.1"));
  CHECK_FALSE(in("127.0.0.1", "127.0.0.2"));
  CHECK(in("10.128.0.0/9", "10.255.0.1"));
  CHECK_FALSE(in("10.128.0.0/9", "10.127.0.1"));
  CHECK(in("2001:db8::/32", "2001:db8:ffff::1"));
  CHECK_FALSE(in("2001:db8::/32", "10.0.0.1"));
  CHECK(in("0.0.0.0/0", "10.0.0.1"));
  CHECK_FALSE(in("0.0.0.0/0", "2001:db8::1"));
  for (const char* bad : {"10.1.2.3/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "host/8",
                          "2001:db8::/129", "", "10.0.0.0/8x", "010.0.0.0/8"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_cidr(bad, c));
  }
}
