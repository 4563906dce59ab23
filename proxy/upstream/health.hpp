#pragma once
// Backend health (issue 13): which upstream servers take new requests.
//  - Active checks (upstream.health_check = "/owa/healthcheck.htm"): every health_interval a
//    GET of that path on each server (its own connection, TLS as the traffic); 2xx/3xx passes.
//    After unhealthy_threshold failures in a row a server is ejected; after healthy_threshold
//    passes in a row it is back. Exchange answers 503 on healthcheck.htm in maintenance
//    (ServerWideOffline), so a drained server leaves the rotation on its own.
//  - Passive ejection (upstream.max_failures): that many 5xx responses or connect failures in a
//    row eject a server; with active checks it comes back when they pass, without them after
//    upstream.ejection_time (then one request tries it again).
// When no server is usable every server is tried anyway (a broken health check must not take
// the whole service down), and /readyz says not ready. Shared by every I/O thread: atomics and
// one mutex for the reasons.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "config/snapshot.hpp"
#include "observability/metrics.hpp"

namespace cbagate::upstream {

class client_tls;

/** The health of the configured upstream servers; one per running configuration. */
class health {
 public:
  health(const config::upstream_section& cfg, observability::registry& metrics);
  health(const health&) = delete;
  health& operator=(const health&) = delete;

  /** Whether server `i` may take new requests now. Thread-safe, lock-free. */
  bool usable(std::size_t i) const noexcept;

  /** Whether any server is usable (a pool tries every server when none is). */
  bool any_usable() const noexcept;

  /** A request's outcome on server `i`: `failure` = a connect failure or a 5xx response.
   *  Thread-safe. */
  void report(std::size_t i, bool failure) noexcept;

  /** One active check's outcome on server `i`, with its reason when it failed. Thread-safe. */
  void report_check(std::size_t i, bool passed, const std::string& why);

  /** "" when at least one server is usable; else why none is (for /readyz). Thread-safe. */
  std::string problem() const;

  std::size_t size() const noexcept { return servers_.size(); }

  /**
   * Runs the active checks of `self` until `stop` is set (looked at every 100 ms and after each
   * check, so a drain waits at most one check's health_timeout): co_spawn it on an executor
   * that is not an I/O thread's (the main thread). Keeps `self` alive while it runs. Does
   * nothing when upstream.health_check is "".
   */
  static boost::asio::awaitable<void> run_checks(std::shared_ptr<health> self,
                                                 std::shared_ptr<client_tls> tls,
                                                 std::shared_ptr<std::atomic<bool>> stop);

 private:
  struct server {
    std::string url;
    std::atomic<bool> ejected{false};
    std::atomic<unsigned> failures{0};      // passive, consecutive
    std::atomic<unsigned> check_fails{0};   // active, consecutive
    std::atomic<unsigned> check_passes{0};  // active, consecutive
    std::atomic<std::int64_t> ejected_until{0};  // steady ms; 0 = until the checks pass
    observability::gauge* healthy_gauge = nullptr;
    observability::counter* ejections = nullptr;
    observability::counter* checks_ok = nullptr;
    observability::counter* checks_failed = nullptr;
  };

  void eject(server& s, const std::string& why, bool passive);
  void restore(server& s, const std::string& why);

  config::upstream_section cfg_;
  std::vector<std::unique_ptr<server>> servers_;
  mutable std::mutex mutex_;
  std::vector<std::string> reasons_;  // per server, why it is ejected
};

/** One health check: GET `path` on `srv` with a deadline. "" when it passed, else why not. */
boost::asio::awaitable<std::string> check_once(boost::asio::any_io_executor ex,
                                               const config::upstream_server& srv,
                                               const std::string& path, client_tls* tls,
                                               std::chrono::milliseconds timeout);

}  // namespace cbagate::upstream
