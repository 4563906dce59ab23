#pragma once
// An address range of the configuration (server.proxy_protocol_from): "10.0.0.0/8",
// "2001:db8::/32", or one address ("192.0.2.7" = /32). A pure value type.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace cbagate::config {

struct cidr {
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first four
  unsigned prefix = 0;
  std::string text;                      // as written

  /** True when the address (family `is_v6`, IPv4 in the first four bytes) lies in the range.
   *  The caller unmaps v4-mapped IPv6 addresses first. */
  bool contains(bool is_v6, const std::array<std::uint8_t, 16>& addr) const noexcept;

  bool operator==(const cidr&) const = default;
};

/** Parses "addr/prefix" or "addr" (a v4-mapped IPv6 range becomes IPv4). False on anything
 *  else, bits set past the prefix included ("10.1.2.3/8" is a typo, never a guess). */
bool parse_cidr(std::string_view text, cidr& out) noexcept;

}  // namespace cbagate::config
