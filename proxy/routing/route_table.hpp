#pragma once
// The route table: configured [[route]] prefixes, matched IIS-like (ASCII case-insensitive,
// whole segments, longest prefix wins) against a path from normalize_target.
#include "common/expected.hpp"
#include "config/snapshot.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::routing {

/**
 * An immutable set of routes. Built once per configuration snapshot; match() is read-only,
 * allocation-free and safe to call from any number of threads at once.
 */
class route_table {
 public:
  /** An empty table: every match() is a miss (the caller answers 404). */
  route_table() = default;

  /**
   * Builds the table. Each prefix is put through normalize_target and stored in canonical form
   * without a trailing '/' ("/owa/" and "/OWA" name the same route as "/owa"); "/" stays "/".
   * @param routes  the configured routes in file order; indexes below refer to this order
   * @return the table, or errc::bad_route_prefix (not an origin-form path without query, or
   *         refused by normalize_target) or errc::duplicate_route_prefix (two prefixes equal
   *         once normalized, compared case-insensitively).
   */
  static expected<route_table> make(std::vector<config::route> routes);

  /**
   * The route for a normalized path, or nullptr when none matches (404).
   * A prefix "/owa" matches "/owa", "/owa/", "/OWA/x" and "/Owa?q", never "/owax" or "/ow";
   * "/" matches every path. A '?' ends the path, so a forward_target() may be passed too.
   * @param normalized_path  normalized_target::path (precondition: from normalize_target)
   */
  const config::route* match(std::string_view normalized_path) const noexcept;

  /** Like match(), but the index of the route in routes() (file order). */
  std::optional<std::size_t> match_index(std::string_view normalized_path) const noexcept;

  /** The routes in file order, with canonical prefixes. */
  const std::vector<config::route>& routes() const noexcept { return routes_; }

 private:
  std::vector<config::route> routes_;   // file order, prefixes canonical
  std::vector<std::size_t> by_length_;  // indexes into routes_, longest prefix first
};

}  // namespace cbagate::routing
