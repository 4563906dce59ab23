#include "http/metrics.hpp"

#include "delegation/errc.hpp"

#include <string>
#include <vector>

namespace cbagate::http {
namespace {

std::vector<std::string> rejection_names() {
  std::vector<std::string> out;
  for (int r = static_cast<int>(identity::rejection::no_certificate);
       r <= static_cast<int>(identity::last_rejection); ++r)
    out.emplace_back(identity::to_string(static_cast<identity::rejection>(r)));
  return out;
}

// Error codes are "family" or "family:detail"; only the family is a label value.
std::string_view error_family(std::string_view code) {
  return code.substr(0, code.find(':'));
}

}  // namespace

metrics::metrics(observability::registry& r)
    : requests_total(r.add_counter("cbagate_requests_total", "Requests read from clients")),
      responses(r.add_labeled_counter("cbagate_responses_total", "Responses sent, by status class",
                                      "class", {"1xx", "2xx", "3xx", "4xx", "5xx", "none"})),
      errors(r.add_labeled_counter(
          "cbagate_request_errors_total", "Requests that ended in an error, by cause", "error",
          {"bad_request_header", "bad_path", "no_route", "header_too_large", "too_many_fields",
           "body_too_large", "request_header_timeout", "expectation_failed",
           "method_not_supported", "upstream_connect_failed", "upstream_timeout",
           "upstream_reset", "upstream_write_failed", "upstream_upgrade", "client_closed",
           "bad_request_body", "certificate", "framing", "method_not_allowed"})),
      cert_rejections(r.add_labeled_counter("cbagate_certificate_rejections_total",
                                            "Client certificates refused, by reason", "reason",
                                            rejection_names())),
      connections_active(r.add_gauge("cbagate_connections_active", "Open client connections")),
      requests_parked(r.add_gauge(
          "cbagate_requests_parked",
          "Requests the backend is holding (an ActiveSync Ping, a notification wait) that were "
          "parked after a second unanswered: each keeps its connection's state and its waits, "
          "no coroutine")),
      connections_total(r.add_counter("cbagate_connections_total", "Accepted client connections")),
      handshakes_total(r.add_counter("cbagate_tls_handshakes_total", "Completed TLS handshakes")),
      handshakes_resumed(r.add_counter("cbagate_tls_handshakes_resumed_total",
                                       "TLS handshakes that resumed a session")),
      handshake_failures(r.add_counter("cbagate_tls_handshake_failures_total",
                                       "TLS handshakes that failed or were refused")),
      upstream_connect_failures(r.add_counter("cbagate_upstream_connect_failures_total",
                                              "Requests for which no backend could be reached")),
      upstream_private_open(r.add_gauge(
          "cbagate_upstream_private_connections",
          "Backend connections private to one client connection (they carried NTLM, Negotiate "
          "or Persistent-Auth)")),
      upstream_pinned_requests(r.add_counter(
          "cbagate_upstream_pinned_requests_total",
          "Requests sent on a backend connection private to their client connection")),
      bytes_in(r.add_counter("cbagate_request_body_bytes_total", "Request body bytes relayed")),
      bytes_out(r.add_counter("cbagate_response_body_bytes_total", "Response body bytes relayed")),
      request_seconds(r.add_histogram("cbagate_request_duration_seconds",
                                      "Time from request header to the last response byte",
                                      {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300, 3600})),
      delegation_results(r.add_labeled_counter(
          "cbagate_kerberos_tokens_total", "Kerberos token requests, by outcome", "result",
          {"ok", "kdc_unreachable", "unknown_user", "user_disabled", "delegation_refused", "keytab",
           "internal"})),
      delegation_cache_hits(r.add_counter("cbagate_kerberos_cache_hits_total",
                                          "Tokens made from a cached delegated credential")),
      delegation_cache_misses(r.add_counter("cbagate_kerberos_cache_misses_total",
                                            "Tokens that needed S4U2Self + S4U2Proxy at the KDC")),
      delegation_seconds(r.add_histogram("cbagate_kerberos_token_duration_seconds",
                                         "Time to get a Negotiate token, queueing included",
                                         {0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5})),
      kerberos_session_requests(r.add_counter(
          "cbagate_kerberos_session_requests_total",
          "Requests sent without a new token on a backend connection the backend keeps "
          "authenticated for their user (Persistent-Auth: true, kerberos.persistent_auth)")),
      kerberos_session_resends(r.add_counter(
          "cbagate_kerberos_session_resends_total",
          "Such requests the backend answered 401, sent again with a token")) {}

void metrics::count_delegation(const boost::system::error_code& ec, bool warm,
                               std::int64_t micros) noexcept {
  static constexpr std::string_view names[] = {"ok", "kdc_unreachable", "unknown_user",
                                               "user_disabled", "delegation_refused", "keytab",
                                               "internal"};
  const int v = !ec ? 0 : ec.category() == delegation::delegation_category() ? ec.value() : 6;
  delegation_results.inc(v >= 0 && v < 7 ? names[v] : std::string_view("internal"));
  (warm ? delegation_cache_hits : delegation_cache_misses).inc();
  delegation_seconds.observe(static_cast<double>(micros) / 1e6);
}

void metrics::count_rejection(identity::rejection r) noexcept {
  cert_rejections.inc(identity::to_string(r));
}

void metrics::observe(const observability::access_record& rec) noexcept {
  static constexpr std::string_view classes[] = {"none", "1xx", "2xx", "3xx", "4xx", "5xx"};
  const int cls = rec.status >= 100 && rec.status < 600 ? rec.status / 100 : 0;
  responses.inc(classes[cls]);
  if (!rec.error.empty()) {
    std::string_view fam = error_family(rec.error);
    if (rec.status == 403 && rec.substatus) fam = "certificate";
    errors.inc(fam);
  }
  bytes_in.inc(rec.bytes_in);
  bytes_out.inc(rec.bytes_out);
  request_seconds.observe(static_cast<double>(rec.total_us) / 1e6);
}

}  // namespace cbagate::http
