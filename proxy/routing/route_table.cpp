#include "routing/route_table.hpp"

#include "routing/error.hpp"
#include "routing/normalize.hpp"

#include <algorithm>
#include <limits>

namespace cbagate::routing {
namespace {

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// IIS matches virtual directories case-insensitively and on whole segments. Prefixes are
// canonical (percent-escapes in upper-case hex, as in every normalized path), so an ASCII
// case-insensitive comparison of the encoded forms is exact.
bool prefix_matches(std::string_view prefix, std::string_view path) noexcept {
  if (prefix == "/") return true;
  if (path.size() < prefix.size()) return false;
  if (!iequals(path.substr(0, prefix.size()), prefix)) return false;
  if (path.size() == prefix.size()) return true;
  const char next = path[prefix.size()];
  return next == '/' || next == '?';
}

}  // namespace

expected<route_table> route_table::make(std::vector<config::route> routes) {
  for (config::route& r : routes) {
    if (r.prefix.empty() || r.prefix.front() != '/') return make_error_code(errc::bad_route_prefix);
    auto n = normalize_target(r.prefix, std::numeric_limits<std::size_t>::max());
    if (!n || n->has_query) return make_error_code(errc::bad_route_prefix);
    std::string p = std::move(n->path);
    if (p.size() > 1 && p.back() == '/') p.pop_back();
    r.prefix = std::move(p);
  }
  for (std::size_t i = 0; i < routes.size(); ++i) {
    for (std::size_t j = i + 1; j < routes.size(); ++j) {
      if (iequals(routes[i].prefix, routes[j].prefix)) {
        return make_error_code(errc::duplicate_route_prefix);
      }
    }
  }

  route_table table;
  table.routes_ = std::move(routes);
  table.by_length_.resize(table.routes_.size());
  for (std::size_t i = 0; i < table.by_length_.size(); ++i) table.by_length_[i] = i;
  // Longest prefix first; among equal lengths (never equal strings) file order, for determinism.
  std::stable_sort(table.by_length_.begin(), table.by_length_.end(),
                   [&](std::size_t a, std::size_t b) {
                     return table.routes_[a].prefix.size() > table.routes_[b].prefix.size();
                   });
  return table;
}

std::optional<std::size_t> route_table::match_index(std::string_view path) const noexcept {
  for (const std::size_t i : by_length_) {
    if (prefix_matches(routes_[i].prefix, path)) return i;
  }
  return std::nullopt;
}

const config::route* route_table::match(std::string_view path) const noexcept {
  const auto i = match_index(path);
  return i ? &routes_[*i] : nullptr;
}

}  // namespace cbagate::routing
