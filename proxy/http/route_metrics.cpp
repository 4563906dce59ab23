#include "http/route_metrics.hpp"

namespace cbagate::http {

route_metrics::series route_metrics::make(observability::registry& r, const std::string& route) {
  static constexpr const char* classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
  series s;
  for (int i = 0; i < 6; ++i)
    s.classes[i] = &r.add_counter("cbagate_route_responses_total",
                                  "Responses sent, by route and status class",
                                  {{"route", route}, {"class", classes[i]}});
  s.seconds = &r.add_histogram("cbagate_route_request_duration_seconds",
                               "Time from request header to the last response byte, by route",
                               {0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600},
                               {{"route", route}});
  return s;
}

route_metrics::route_metrics(observability::registry& r, const std::vector<config::route>& routes)
    : none_(make(r, "none")) {
  for (const auto& route : routes) by_prefix_.emplace(route.prefix, make(r, route.prefix));
}

void route_metrics::observe(const observability::access_record& rec) const noexcept {
  const series* s = &none_;
  if (!rec.route.empty()) {
    if (auto it = by_prefix_.find(rec.route); it != by_prefix_.end()) s = &it->second;
  }
  const int cls = rec.status >= 100 && rec.status < 600 ? rec.status / 100 : 0;
  s->classes[cls]->inc();
  s->seconds->observe(static_cast<double>(rec.total_us) / 1e6);
}

}  // namespace cbagate::http
