#pragma once
// The proxy's request and connection metrics: declared once here, registered with the server's
// registry, exported by admin/ (STYLE.md 5.8). No label carries a user, a client address or a
// path: every label set is fixed up front.
#include <boost/system/error_code.hpp>

#include "identity/client_identity.hpp"
#include "observability/access_log.hpp"
#include "observability/metrics.hpp"

namespace cbagate::http {

struct metrics {
  explicit metrics(observability::registry& r);

  observability::counter& requests_total;
  observability::labeled_counter& responses;          // by status class
  observability::labeled_counter& errors;             // by stable error code family
  observability::labeled_counter& cert_rejections;    // by rejection reason
  observability::gauge& connections_active;
  observability::gauge& requests_parked;  // held by the backend, parked without coroutines
  observability::counter& connections_total;
  observability::counter& handshakes_total;
  observability::counter& handshakes_resumed;
  observability::counter& handshake_failures;
  observability::counter& upstream_connect_failures;
  observability::gauge& upstream_private_open;      // pinned backend connections (issue 10)
  observability::counter& upstream_pinned_requests;  // requests sent on a pinned connection
  observability::counter& bytes_in;
  observability::counter& bytes_out;
  observability::histogram& request_seconds;
  observability::labeled_counter& delegation_results;  // Kerberos: by outcome
  observability::counter& delegation_cache_hits;
  observability::counter& delegation_cache_misses;
  observability::histogram& delegation_seconds;
  observability::counter& kerberos_session_requests;  // sent without a token (persistent_auth)
  observability::counter& kerberos_session_resends;   // ... answered 401, sent again with one

  /** Counts a refused certificate by its reason. */
  void count_rejection(identity::rejection r) noexcept;

  /** Everything a finished request contributes (status class, error family, bytes, time). */
  void observe(const observability::access_record& rec) noexcept;

  /** One Kerberos token request: its outcome (an error of "proxy.delegation" or none), whether
   *  the user's delegated credential was cached, and how long it took. */
  void count_delegation(const boost::system::error_code& ec, bool warm,
                        std::int64_t micros) noexcept;
};

}  // namespace cbagate::http
