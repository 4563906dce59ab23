#include "tls/proxy_protocol.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

namespace cbagate::tls {
namespace {

using state = proxy_parse::state;

constexpr std::array<std::uint8_t, 12> v2_signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                       0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr std::string_view v1_prefix = "PROXY ";
constexpr std::size_t v2_fixed = 16;

proxy_parse invalid(proxy_error e) {
  proxy_parse p;
  p.status = state::invalid;
  p.error = e;
  return p;
}

proxy_parse need_more() { return {}; }

// True when the first min(n, pattern size) bytes agree.
template <class Pattern>
bool prefix_agrees(std::span<const std::uint8_t> bytes, const Pattern& pattern) {
  const std::size_t n = std::min(bytes.size(), std::size(pattern));
  for (std::size_t i = 0; i < n; ++i)
    if (bytes[i] != static_cast<std::uint8_t>(pattern[i])) return false;
  return true;
}

// A decimal port without leading zeros (doc/proxy-protocol.txt 2.1), 0..65535.
bool parse_port(std::string_view s, std::uint16_t& out) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  unsigned v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535) return false;
  out = static_cast<std::uint16_t>(v);
  return true;
}

// Exactly four decimal numbers 0..255 without leading zeros (no octal ambiguity).
bool parse_v4(std::string_view s, net_address& out) {
  net_address a;
  a.fam = net_address::family::v4;
  for (int i = 0; i < 4; ++i) {
    const std::size_t dot = i < 3 ? s.find('.') : s.size();
    if (dot == std::string_view::npos) return false;
    const std::string_view part = s.substr(0, dot);
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return false;
    unsigned v = 0;
    for (const char c : part) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + static_cast<unsigned>(c - '0');
    }
    if (v > 255) return false;
    a.bytes[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(v);
    s = i < 3 ? s.substr(dot + 1) : std::string_view();
  }
  out = a;
  return true;
}

bool parse_v6(std::string_view s, net_address& out) {
  // inet_pton wants a NUL-terminated string; the longest textual IPv6 address is 45 characters.
  if (s.empty() || s.size() > 45 || s.find(':') == std::string_view::npos) return false;
  char text[46] = {};
  std::memcpy(text, s.data(), s.size());
  net_address a;
  a.fam = net_address::family::v6;
  if (::inet_pton(AF_INET6, text, a.bytes.data()) != 1) return false;
  out = a;
  return true;
}

// "PROXY TCP4 src dst sport dport\r\n" (doc/proxy-protocol.txt 2.1).
proxy_parse parse_v1(std::span<const std::uint8_t> bytes) {
  const std::size_t window = std::min(bytes.size(), proxy_v1_max_line);
  std::size_t end = 0;  // index of '\r' of the CRLF
  bool found = false;
  for (std::size_t i = 0; i < window; ++i) {
    const std::uint8_t c = bytes[i];
    if (c == '\r') {
      if (i + 1 >= bytes.size()) break;  // CR is the last byte seen: wait for the LF
      if (bytes[i + 1] != '\n') return invalid(proxy_error::bad_address);
      if (i + 2 > proxy_v1_max_line) return invalid(proxy_error::too_long);
      end = i;
      found = true;
      break;
    }
    // The line is US-ASCII text: a LF alone, a NUL or another control byte is not a header.
    if (c < 0x20 || c > 0x7E) return invalid(proxy_error::bad_address);
  }
  if (!found) {
    return bytes.size() >= proxy_v1_max_line ? invalid(proxy_error::too_long) : need_more();
  }
  std::string_view line(reinterpret_cast<const char*>(bytes.data()), end);
  line.remove_prefix(v1_prefix.size());
  proxy_parse p;
  p.status = state::complete;
  p.header.version = 1;
  p.header.length = end + 2;
  if (line == "UNKNOWN" || line.starts_with("UNKNOWN ")) {
    // "the receiver must ignore anything presented before the CRLF": use the socket's peer.
    p.header.local = true;
    return p;
  }
  std::string_view fields[5];
  for (std::size_t i = 0; i < 5; ++i) {
    const std::size_t sp = line.find(' ');
    if ((i < 4) == (sp == std::string_view::npos)) return invalid(proxy_error::bad_address);
    fields[i] = line.substr(0, sp);
    line = i < 4 ? line.substr(sp + 1) : std::string_view();
  }
  const bool v4 = fields[0] == "TCP4";
  if (!v4 && fields[0] != "TCP6") return invalid(proxy_error::bad_family);
  proxy_header& h = p.header;
  const bool addresses = v4 ? parse_v4(fields[1], h.source) && parse_v4(fields[2], h.destination)
                            : parse_v6(fields[1], h.source) && parse_v6(fields[2], h.destination);
  if (!addresses || !parse_port(fields[3], h.source.port) ||
      !parse_port(fields[4], h.destination.port))
    return invalid(proxy_error::bad_address);
  return p;
}

std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

// The 16-byte fixed part, then the address block (doc/proxy-protocol.txt 2.2).
proxy_parse parse_v2(std::span<const std::uint8_t> bytes, std::size_t max_length) {
  if (bytes.size() > 12) {
    const std::uint8_t ver_cmd = bytes[12];
    if ((ver_cmd >> 4) != 2) return invalid(proxy_error::bad_version);
    if ((ver_cmd & 0x0F) > 1) return invalid(proxy_error::bad_command);
  }
  if (bytes.size() > 13) {
    switch (bytes[13]) {
      case 0x00: case 0x11: case 0x12: case 0x21: case 0x22: case 0x31: case 0x32: break;
      default: return invalid(proxy_error::bad_family);
    }
  }
  if (bytes.size() < v2_fixed) return need_more();
  const std::size_t len = be16(bytes.data() + 14);
  const std::size_t total = v2_fixed + len;
  if (total > max_length) return invalid(proxy_error::too_long);
  if (bytes.size() < total) return need_more();

  proxy_parse p;
  p.status = state::complete;
  p.header.version = 2;
  p.header.length = total;
  const bool local_cmd = (bytes[12] & 0x0F) == 0;
  const std::uint8_t fam = bytes[13];
  // LOCAL: the balancer's own connection (health check); the address block, whatever it holds,
  // is skipped. UNSPEC and AF_UNIX carry no IP address: the socket's peer stands.
  if (local_cmd || fam == 0x00 || fam == 0x31 || fam == 0x32) {
    p.header.local = true;
    return p;
  }
  // A TLS listener relays streams: a datagram source is not a client of ours.
  if (fam == 0x12 || fam == 0x22) return invalid(proxy_error::bad_family);
  const std::uint8_t* block = bytes.data() + v2_fixed;
  proxy_header& h = p.header;
  if (fam == 0x11) {
    if (len < 12) return invalid(proxy_error::bad_address);
    h.source.fam = h.destination.fam = net_address::family::v4;
    std::memcpy(h.source.bytes.data(), block, 4);
    std::memcpy(h.destination.bytes.data(), block + 4, 4);
    h.source.port = be16(block + 8);
    h.destination.port = be16(block + 10);
  } else {  // 0x21
    if (len < 36) return invalid(proxy_error::bad_address);
    h.source.fam = h.destination.fam = net_address::family::v6;
    std::memcpy(h.source.bytes.data(), block, 16);
    std::memcpy(h.destination.bytes.data(), block + 16, 16);
    h.source.port = be16(block + 32);
    h.destination.port = be16(block + 34);
  }
  // TLVs after the addresses (ALPN, authority, SSL, ...) are skipped: nothing here trusts them.
  return p;
}

bool is_v4_mapped(const std::array<std::uint8_t, 16>& b) {
  static constexpr std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  return std::memcmp(b.data(), prefix, sizeof prefix) == 0;
}

}  // namespace

std::string_view to_string(proxy_error e) noexcept {
  switch (e) {
    case proxy_error::none: return "none";
    case proxy_error::bad_signature: return "bad_signature";
    case proxy_error::bad_version: return "bad_version";
    case proxy_error::bad_command: return "bad_command";
    case proxy_error::bad_family: return "bad_family";
    case proxy_error::bad_address: return "bad_address";
    case proxy_error::too_long: return "too_long";
  }
  return "unknown";
}

proxy_parse parse_proxy_header(std::span<const std::uint8_t> bytes, std::size_t max_length) noexcept {
  if (bytes.empty()) return need_more();
  if (bytes[0] == 'P') {
    if (!prefix_agrees(bytes, v1_prefix)) return invalid(proxy_error::bad_signature);
    if (bytes.size() <= v1_prefix.size()) return need_more();
    return parse_v1(bytes);
  }
  if (!prefix_agrees(bytes, v2_signature)) return invalid(proxy_error::bad_signature);
  if (bytes.size() <= v2_signature.size()) return need_more();
  return parse_v2(bytes, std::max(max_length, v2_fixed + 12));
}

std::string net_address::address_string() const {
  const net_address a = unmapped();
  char text[INET6_ADDRSTRLEN] = {};
  if (a.fam == family::v4) return ::inet_ntop(AF_INET, a.bytes.data(), text, sizeof text) ? text : "";
  if (a.fam == family::v6) return ::inet_ntop(AF_INET6, a.bytes.data(), text, sizeof text) ? text : "";
  return {};
}

net_address net_address::unmapped() const noexcept {
  if (fam != family::v6 || !is_v4_mapped(bytes)) return *this;
  net_address a;
  a.fam = family::v4;
  std::memcpy(a.bytes.data(), bytes.data() + 12, 4);
  a.port = port;
  return a;
}

bool net_address::in(const config::cidr& range) const noexcept {
  const net_address a = unmapped();
  if (a.fam == family::none) return false;
  return range.contains(a.fam == family::v6, a.bytes);
}

bool parse_ip(std::string_view text, net_address& out) noexcept {
  return text.find(':') != std::string_view::npos ? parse_v6(text, out) : parse_v4(text, out);
}

}  // namespace cbagate::tls
