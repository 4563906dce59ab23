#include "operations.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <system_error>

#include "observability/log.hpp"
#include "observability/process_metrics.hpp"

namespace cbagate {
namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

operations::operations(observability::registry& r)
    : accept_errors_(r.add_counter("cbagate_accept_errors_total",
                                   "Failed accepts of client connections (out of descriptors, "
                                   "memory, ...)")) {
  observability::register_process_metrics(r, CBAGATE_VERSION);
  lifetimes_.register_metrics(r);
}

void operations::running(const config::snapshot& cfg, bool reload,
                         const delegation::credential_result* initial) {
  const std::int64_t now = unix_now();
  const tls::inspection files = tls::inspect(cfg, now);
  if (reload) {
    // Start-up logged these already (preflight); a reload says them for the new files.
    for (const auto& w : files.warnings) observability::logger("main")->warn("reload: {}", w);
  }
  lifetimes_.update(files, now);
  std::lock_guard lock(mutex_);
  // Stale tls.crl files decide for everyone only when nothing else can: CRL checks that fail
  // closed, without downloads from the certificates' CDPs (a fresh download would let users in).
  crl_readiness_ = cfg.revocation.fail == config::fail_mode::closed && !cfg.tls.crl.empty() &&
                   !cfg.revocation.fetch_cdp &&
                   (!cfg.revocation.mode || *cfg.revocation.mode == config::revocation_mode::crl);
  if (cfg.identity.mode != config::identity_mode::kerberos) {
    kerberos_.reset();
    return;
  }
  if (kerberos_) {
    kerberos_->set_section(cfg.kerberos);
    return;
  }
  delegation::credential_result start = initial ? *initial : delegation::credential_result{};
  kerberos_ = std::make_unique<delegation::credential_probe>(
      cfg.kerberos, std::move(start), std::chrono::seconds(30), std::chrono::seconds(600),
      [](const delegation::credential_result& r) {
        auto& log = *observability::logger("delegation");
        if (r.ok())
          log.info("kerberos: the proxy's credential is back (ticket expires {})",
                   tls::relative(r.expires, unix_now()));
        else
          log.error("{}", r.error);
      });
}

std::string operations::not_ready_reason() const {
  std::lock_guard lock(mutex_);
  if (kerberos_) {
    if (std::string why = kerberos_->problem(); !why.empty()) return "no Kerberos credential: " + why;
  }
  if (crl_readiness_) {
    if (std::string why = lifetimes_.every_issuer_blocked_by_stale_crls(unix_now()); !why.empty())
      return why + " (revocation.fail = \"closed\")";
  }
  return {};
}


void operations::tick() {
  for (const std::string& w : lifetimes_.due(unix_now())) observability::logger("main")->warn("{}", w);
}

void operations::accept_failed(const boost::system::error_code& ec) {
  accept_errors_.inc();
  const std::int64_t now = steady_ms();
  std::int64_t last = last_accept_log_ms_.load(std::memory_order_relaxed);
  if (now - last < 1000 || !last_accept_log_ms_.compare_exchange_strong(last, now)) {
    accept_suppressed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const std::uint64_t suppressed = accept_suppressed_.exchange(0, std::memory_order_relaxed);
  auto& log = *observability::logger("main");
  if (suppressed > 0)
    log.error("accept failed: {} ({} more accept errors in the last second{})", ec.message(), suppressed,
              ec == boost::system::errc::too_many_files_open ? "; raise LimitNOFILE / ulimit -n" : "");
  else
    log.error("accept failed: {}{}", ec.message(),
              ec == boost::system::errc::too_many_files_open ? " (raise LimitNOFILE / ulimit -n)" : "");
}

void operations::raise_descriptor_limit() {
  auto& log = *observability::logger("main");
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    log.warn("startup: getrlimit(RLIMIT_NOFILE) failed: {}", std::system_category().message(errno));
    return;
  }
  const rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      log.warn("startup: cannot raise the descriptor limit from {} to {}: {}", before, rl.rlim_max,
               std::system_category().message(errno));
      return;
    }
  }
  log.info("startup: descriptor limit {} (was {}, hard limit {}){}", rl.rlim_cur, before, rl.rlim_max,
           rl.rlim_cur < 4096 ? "; below 4096: each ActiveSync device holds one or two, raise "
                                "LimitNOFILE"
                              : "");
}

void operations::reopen_logs(const config::snapshot& cfg, observability::access_log* access) {
  auto& log = *observability::logger("main");
  if (auto r = observability::init_logging(cfg.log.level, cfg.log.path); !r)
    log.error("log: cannot reopen {}: {}", cfg.log.path, r.error().message());
  if (access != nullptr) {
    if (auto r = access->reopen(); !r)
      log.error("access_log: cannot reopen {}: {}", cfg.access_log.path, r.error().message());
  }
  log.info("logs reopened");
}

}  // namespace cbagate
