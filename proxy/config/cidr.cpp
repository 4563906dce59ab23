#include "config/cidr.hpp"

#include <arpa/inet.h>

#include <cstring>

namespace cbagate::config {

bool cidr::contains(bool is_v6, const std::array<std::uint8_t, 16>& addr) const noexcept {
  if (is_v6 != v6) return false;
  const std::size_t full = prefix / 8;
  if (std::memcmp(addr.data(), bytes.data(), full) != 0) return false;
  const unsigned rest = prefix % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
  return (addr[full] & mask) == (bytes[full] & mask);
}

bool parse_cidr(std::string_view text, cidr& out) noexcept {
  const std::size_t slash = text.find('/');
  const std::string_view host = text.substr(0, slash);
  // inet_pton wants a NUL-terminated string; glibc's refuses IPv4 parts with leading zeros.
  if (host.empty() || host.size() > 45) return false;
  char buf[46] = {};
  std::memcpy(buf, host.data(), host.size());
  cidr c;
  c.v6 = host.find(':') != std::string_view::npos;
  if (::inet_pton(c.v6 ? AF_INET6 : AF_INET, buf, c.bytes.data()) != 1) return false;
  unsigned bits = c.v6 ? 128 : 32;
  unsigned prefix = bits;
  if (slash != std::string_view::npos) {
    const std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || (p.size() > 1 && p[0] == '0')) return false;
    prefix = 0;
    for (const char ch : p) {
      if (ch < '0' || ch > '9') return false;
      prefix = prefix * 10 + static_cast<unsigned>(ch - '0');
    }
    if (prefix > bits) return false;
  }
  for (unsigned bit = prefix; bit < bits; ++bit)
    if (c.bytes[bit / 8] & (0x80 >> (bit % 8))) return false;
  static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (c.v6 && prefix >= 96 && std::memcmp(c.bytes.data(), mapped, sizeof mapped) == 0) {
    std::array<std::uint8_t, 16> v4{};
    std::memcpy(v4.data(), c.bytes.data() + 12, 4);
    c.bytes = v4;
    c.v6 = false;
    prefix -= 96;
  }
  c.prefix = prefix;
  c.text = std::string(text);
  out = std::move(c);
  return true;
}

}  // namespace cbagate::config
