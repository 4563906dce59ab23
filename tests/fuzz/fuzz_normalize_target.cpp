// libFuzzer target for routing::normalize_target. Properties checked on every accepted input:
// the forwarded path is clean (no "/../", "/./", "//", '\', "%2F", raw control, space or
// non-ASCII byte, no '?') and normalizing the forwarded target again is a fixed point.
#include "routing/normalize.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

namespace {

constexpr std::size_t max_target = 16384;

void require(bool condition) {
  if (!condition) std::abort();
}

bool clean_path(std::string_view p) {
  if (p.empty() || p.front() != '/') return false;
  for (const std::string_view bad : {"//", "/../", "/./", "%2F", "%2f", "%5C", "%5c", "%00"}) {
    if (p.find(bad) != std::string_view::npos) return false;
  }
  if (p.ends_with("/..") || p.ends_with("/.")) return false;
  for (const char c : p) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F || c == '\\' || c == '?' || c == '#') return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  auto first = cbagate::routing::normalize_target(input, max_target);
  if (!first) return 0;
  const cbagate::routing::normalized_target a = std::move(first).value();
  require(clean_path(a.path));
  const std::string forwarded = a.forward_target();
  auto second = cbagate::routing::normalize_target(forwarded, max_target);
  require(second.has_value());
  const cbagate::routing::normalized_target b = std::move(second).value();
  require(b.path == a.path);
  require(b.has_query == a.has_query);
  require(b.query == a.query);
  require(b.authority.empty());
  require(b.forward_target() == forwarded);
  return 0;
}
