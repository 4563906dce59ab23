#pragma once
// Per-route request metrics (issue 13): OWA, ECP and ActiveSync errors alerted on apart, and a
// duration histogram per route, so 59-minute ActiveSync Pings do not hide page-load times.
// The label values are the configured route prefixes (plus "none" for requests that matched no
// route): bounded by the configuration, never by what a client sends.
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/snapshot.hpp"
#include "observability/access_log.hpp"
#include "observability/metrics.hpp"

namespace cbagate::http {

class route_metrics {
 public:
  /**
   * Registers, for each route of `routes` and for "none":
   *   cbagate_route_responses_total{route, class}   class 1xx..5xx or "none" (no response)
   *   cbagate_route_request_duration_seconds{route}  histogram
   * Registering again (a reload) returns the same series for the same prefixes.
   */
  route_metrics(observability::registry& r, const std::vector<config::route>& routes);

  /** One finished request (rec.route: the matched prefix, "" = none). Lock-free. */
  void observe(const observability::access_record& rec) const noexcept;

 private:
  struct series {
    observability::counter* classes[6] = {};  // none, 1xx, 2xx, 3xx, 4xx, 5xx
    observability::histogram* seconds = nullptr;
  };
  series make(observability::registry& r, const std::string& route);

  std::unordered_map<std::string, series> by_prefix_;
  series none_;
};

}  // namespace cbagate::http
