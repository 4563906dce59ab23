#pragma once
// Whether the proxy holds its own Kerberos credential right now (issue 13: /readyz is not ready
// without it). A background thread repeats the keytab's AS exchange (acquire_proxy_credential):
// every `retry` while it fails, every `recheck` while it works, so a KDC that comes back or a
// keytab that is replaced turns readiness back on without any request having to try first.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "config/snapshot.hpp"
#include "delegation/keytab.hpp"

namespace cbagate::delegation {

class credential_probe {
 public:
  /**
   * @param initial the start-up result (preflight): the state until the first probe.
   * @param on_change called on the probe thread when the state flips (for a log line).
   */
  credential_probe(config::kerberos_section section, credential_result initial,
                   std::chrono::seconds retry = std::chrono::seconds(30),
                   std::chrono::seconds recheck = std::chrono::seconds(600),
                   std::function<void(const credential_result&)> on_change = {});
  credential_probe(const credential_probe&) = delete;
  credential_probe& operator=(const credential_probe&) = delete;
  /** Stops and joins the thread (waits for a probe in progress: bounded by krb5's timeouts). */
  ~credential_probe();

  /** "" while the credential is held; else why not. Thread-safe, non-blocking. */
  std::string problem() const;

  /** The section probed from now on (reload). Thread-safe. */
  void set_section(config::kerberos_section section);

 private:
  void run();

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  config::kerberos_section section_;
  credential_result last_;
  std::chrono::seconds retry_, recheck_;
  std::function<void(const credential_result&)> on_change_;
  bool stop_ = false;
  std::thread thread_;  // last: started after everything above exists
};

}  // namespace cbagate::delegation
