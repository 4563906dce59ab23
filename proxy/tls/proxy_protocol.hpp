#pragma once
// The PROXY protocol header an L4 balancer (HAProxy's send-proxy / send-proxy-v2) puts in front
// of a connection, versions 1 (text) and 2 (binary), as specified in HAProxy's
// doc/proxy-protocol.txt. A pure parser over bytes: no socket, no allocation, never throws. The
// listener peeks at the first bytes of a connection, calls parse_proxy_header until it is
// complete or invalid, then consumes exactly `length` bytes and starts TLS on the rest.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "config/cidr.hpp"

namespace cbagate::tls {

/** An IPv4 or IPv6 address with a port; IPv4 in the first four bytes. */
struct net_address {
  enum class family : std::uint8_t { none, v4, v6 };
  family fam = family::none;
  std::array<std::uint8_t, 16> bytes{};
  std::uint16_t port = 0;

  /** "192.0.2.1" or "2001:db8::1" (IPv4-mapped IPv6 shown as IPv4); "" for none. */
  std::string address_string() const;
  /** A v4-mapped IPv6 address (::ffff:a.b.c.d) as the IPv4 address; other values unchanged. */
  net_address unmapped() const noexcept;
  /** True when the address (v4-mapped IPv6 taken as IPv4) lies in `range`. */
  bool in(const config::cidr& range) const noexcept;

  bool operator==(const net_address&) const = default;
};

/** What a complete, valid header says. */
struct proxy_header {
  int version = 0;            ///< 1 or 2
  bool local = false;         ///< v2 LOCAL (balancer health check) or v1 UNKNOWN: use the socket's peer
  net_address source;         ///< the client, when !local
  net_address destination;    ///< the address the client connected to, when !local
  std::size_t length = 0;     ///< bytes of the header on the wire (to consume before TLS)
};

/** Why a header is refused. Stable values (counted by name). */
enum class proxy_error : std::uint8_t {
  none = 0,
  bad_signature,   ///< neither "PROXY " nor the v2 signature: not a PROXY header at all
  bad_version,     ///< v2 version nibble is not 2
  bad_command,     ///< v2 command other than LOCAL or PROXY
  bad_family,      ///< unknown v2 family/protocol byte, or v1 protocol not TCP4/TCP6/UNKNOWN
  bad_address,     ///< an address or port that does not parse, or a v2 address block too short
  too_long,        ///< v1 line without CRLF within 107 bytes, or v2 length over the limit
};

/** "bad_signature", ... (metric label and log word). */
std::string_view to_string(proxy_error e) noexcept;

/** The parser's verdict on the bytes seen so far. */
struct proxy_parse {
  enum class state : std::uint8_t { complete, need_more, invalid };
  state status = state::need_more;
  proxy_error error = proxy_error::none;  ///< when invalid
  proxy_header header;                    ///< when complete
};

/** Longest v1 line, CRLF included (the specification's worst case). */
inline constexpr std::size_t proxy_v1_max_line = 107;
/** Default upper bound of a v2 header (16 + address block + TLVs); HAProxy's TLVs fit easily. */
inline constexpr std::size_t proxy_v2_default_max = 16 + 1024;

/**
 * Parses the start of a connection. `bytes` is everything received so far (it may hold data
 * past the header). Returns complete (with `length`), need_more (the bytes are a valid prefix,
 * at most `max_length` bytes are needed in all), or invalid (close the connection). A v2 header
 * whose total length exceeds `max_length` is invalid (too_long) as soon as its length field is
 * seen. Pure and thread-safe.
 */
proxy_parse parse_proxy_header(std::span<const std::uint8_t> bytes,
                               std::size_t max_length = proxy_v2_default_max) noexcept;

/** Parses an IPv4 or IPv6 literal (no brackets, no port). */
bool parse_ip(std::string_view text, net_address& out) noexcept;

}  // namespace cbagate::tls
