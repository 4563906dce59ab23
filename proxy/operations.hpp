#pragma once
// Day-two operations of the running process (issue 13), kept out of server.cpp so that the
// composition root only calls it: lifetimes of certificates and CRLs (gauges, warnings), process
// metrics, the Kerberos credential probe, readiness with its reason, log reopening, the
// descriptor limit, and rate-limited accept errors.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <boost/system/error_code.hpp>

#include "config/snapshot.hpp"
#include "delegation/credential_probe.hpp"
#include "observability/access_log.hpp"
#include "observability/metrics.hpp"
#include "tls/lifetimes.hpp"

namespace cbagate {

class operations {
 public:
  /** Registers process_*, cbagate_build_info, the lifetime gauges and the accept error counter. */
  explicit operations(observability::registry& r);

  /**
   * A configuration is now running (start-up or an accepted reload): reads its files'
   * lifetimes (on reload: logs the load-time warnings, e.g. a CRL loaded stale; start-up's
   * were logged by preflight), points the Kerberos probe at its keytab (starting the probe in
   * Kerberos mode; `initial` is the start-up result of preflight), and remembers what
   * readiness depends on.
   */
  void running(const config::snapshot& cfg, bool reload,
               const delegation::credential_result* initial = nullptr);

  /**
   * Why the process should not get traffic now, "" when it should: stale CRLs blocking every
   * issuing CA under fail closed, or no Kerberos credential. (Draining and upstream health are
   * the caller's: it knows them.) Cheap; thread-safe.
   */
  std::string not_ready_reason() const;

  /** Periodic (about once a minute, main thread): logs the certificate and CRL warnings due. */
  void tick();

  /**
   * An accept failed: counted (cbagate_accept_errors_total); logged at most once per second
   * per process, with how many were suppressed since. Thread-safe.
   */
  void accept_failed(const boost::system::error_code& ec);

  /** Raises the soft RLIMIT_NOFILE to the hard limit and logs both (start-up). */
  static void raise_descriptor_limit();

  /**
   * Reopens the process log (log.path, at log.level) and the access log, e.g. after logrotate
   * renamed them (SIGHUP and SIGUSR1). Errors are logged; the old files stay in use then.
   */
  static void reopen_logs(const config::snapshot& cfg, observability::access_log* access);

 private:
  tls::lifetimes lifetimes_;
  observability::counter& accept_errors_;
  std::atomic<std::int64_t> last_accept_log_ms_{0};
  std::atomic<std::uint64_t> accept_suppressed_{0};
  mutable std::mutex mutex_;
  bool crl_readiness_ = false;  // fail closed with CRL checks: stale CRLs can block everyone
  std::unique_ptr<delegation::credential_probe> kerberos_;
};

}  // namespace cbagate
