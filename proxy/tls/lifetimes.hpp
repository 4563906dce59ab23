#pragma once
// When the certificates and CRL files of the running configuration run out (issue 13): gauges
// for alerting, and log warnings as each one comes close. Updated at start-up and on every
// reload from tls::inspect; read at each scrape and by a periodic check on the main thread.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "observability/metrics.hpp"
#include "tls/inspect.hpp"

namespace cbagate::tls {

/**
 * The lifetimes of the running configuration's files.
 *
 * Metrics (unix timestamps, so an alert reads `... - time() < 7 * 86400`):
 *   cbagate_certificate_expiry_seconds{kind, subject}  notAfter of each server, SNI and CA
 *       certificate (kind: server, sni, client_ca, client_intermediate, upstream_ca); the
 *       earliest when two certificates share kind and subject.
 *   cbagate_crl_next_update_seconds{issuer}  nextUpdate of the tls.crl files' CRLs (the
 *       earliest per issuer; a CRL without nextUpdate is left out).
 * Warnings (due()): once per file and threshold, when a certificate or CRL is within 7 days,
 * within 1 day, and past its end. The 30-day notice of certificates and the "loaded stale"
 * warning come from tls::inspect at load time.
 *
 * Thread-safe (one mutex; the scrape copies nothing bigger than the lists).
 */
class lifetimes {
 public:
  /** Replaces the lists (start-up, reload) at `now`. What is already due at `now` counts as
   *  announced: tls::inspect's load-time warnings have said it. */
  void update(const inspection& files, std::int64_t now);

  /** Registers the two gauge families (once, at start-up). `this` must outlive `r`'s scrapes. */
  void register_metrics(observability::registry& r);

  /**
   * "" unless stale tls.crl CRLs refuse every client certificate at `now` (under fail closed):
   * each issuing CA of the configuration (a client_ca / client_intermediate certificate that
   * issued no other configured CA) has, on its path up to its root, a CA whose CRL file is
   * past nextUpdate. Then the reason, naming the stale CRLs. A CRL that the checker might
   * download fresh from a CDP is not considered: the files are what this knows.
   */
  std::string every_issuer_blocked_by_stale_crls(std::int64_t now) const;

  /** The warnings newly due at `now` (each returned once). Call periodically. */
  std::vector<std::string> due(std::int64_t now);

 private:
  // (what, file, name) -> last threshold announced: 0 none, 1 7 days, 2 1 day, 3 past.
  using key = std::tuple<std::string, std::string, std::string, std::int64_t>;

  mutable std::mutex mutex_;
  std::vector<lifetime> certificates_;
  std::vector<crl_lifetime> crls_;
  std::map<key, int> announced_;
};

}  // namespace cbagate::tls
