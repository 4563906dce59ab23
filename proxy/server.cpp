#include "server.hpp"

#include <sys/stat.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "admin/admin_server.hpp"
#include "config/load.hpp"
#include "http/metrics.hpp"
#include "http/relay.hpp"
#include "http/runtime.hpp"
#include "io_thread.hpp"
#include "listener.hpp"
#include "observability/access_log.hpp"
#include "observability/log.hpp"
#include "observability/metrics.hpp"
#include "operations.hpp"
#include "revocation/checker.hpp"
#include "service_notify.hpp"
#include "tls/edge.hpp"
#include "tls/ticket_keys.hpp"

namespace cbagate {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// The process-wide checker settings of a snapshot's [revocation]. Sub-second durations round
// up (never to 0: "retry after 0 s" would hammer a dead responder).
revocation::options revocation_options(const config::snapshot& cfg) {
  const auto& r = cfg.revocation;
  const auto secs = [](config::seconds_f d) { return std::chrono::ceil<std::chrono::seconds>(d); };
  revocation::options o;
  o.timeout = std::chrono::ceil<std::chrono::milliseconds>(r.timeout);
  o.max_crl_bytes = static_cast<std::size_t>(r.max_crl_bytes);
  o.max_ocsp_bytes = static_cast<std::size_t>(r.max_ocsp_bytes);
  o.refresh_ahead = secs(r.refresh_ahead);
  o.retry_after = secs(r.retry_after);
  o.default_lifetime = secs(r.default_lifetime);
  o.max_clock_skew = secs(r.max_clock_skew);
  o.cache_max_crls = r.cache_max_crls;
  o.cache_max_ocsp = r.cache_max_ocsp;
  return o;
}

// The "default mode" of docs/revocation.md: [revocation] mode absent -> "crl", strict when
// tls.crl names files (every certificate of the chain needs a status), otherwise only for
// certificates that carry an http:// CDP. An explicit mode is strict.
revocation::policy revocation_policy(const config::snapshot& cfg) {
  revocation::policy p;
  const auto& r = cfg.revocation;
  if (r.mode) {
    switch (*r.mode) {
      case config::revocation_mode::off: p.checks = revocation::mode::off; break;
      case config::revocation_mode::crl: p.checks = revocation::mode::crl; break;
      case config::revocation_mode::ocsp: p.checks = revocation::mode::ocsp; break;
      case config::revocation_mode::crl_and_ocsp: p.checks = revocation::mode::crl_and_ocsp; break;
    }
    p.strict = true;
  } else {
    p.checks = revocation::mode::crl;
    p.strict = !cfg.tls.crl.empty();
  }
  p.fetch_cdp = r.fetch_cdp;
  p.ocsp_responder = r.ocsp_responder;
  return p;
}

// tls.ocsp_stapling = "auto" (issue 16): one refresh per server certificate with an OCSP URL,
// on the revocation fetch thread; each good response goes into the context's staple.
std::vector<std::unique_ptr<revocation::staple_feed>> start_stapling(
    revocation::checker& checker, const tls::server_context& ctx) {
  std::vector<std::string> skipped;
  std::vector<std::unique_ptr<revocation::staple_feed>> feeds;
  for (auto& src : ctx.staple_sources(skipped)) {
    const std::size_t index = src.index;
    feeds.push_back(checker.keep_stapled(
        {std::move(src.leaf_der), std::move(src.issuer_der), std::move(src.ocsp_url),
         std::move(src.name)},
        [&ctx, index](std::shared_ptr<const std::string> der) { ctx.set_staple(index, std::move(der)); }));
  }
  for (const std::string& s : skipped)
    observability::logger("main")->info("ocsp stapling: {}: served without a staple", s);
  return feeds;
}

// Builds the runtime of one snapshot: verifier, TLS contexts, routes, upstream TLS, CRL files.
// Every failure is a precise message; nothing is bound yet.
std::shared_ptr<const http::runtime> build_runtime(std::shared_ptr<const config::snapshot> cfg,
                                                   observability::access_log* access_log,
                                                   http::metrics* metrics,
                                                   const std::shared_ptr<identity::issuer_registry>& issuers,
                                                   revocation::checker* checker,
                                                   http::revocation_live* live,
                                                   std::shared_ptr<tls::ticket_key_store> ticket_keys,
                                                   std::shared_ptr<tls::session_cache> sessions,
                                                   observability::registry& registry,
                                                   std::string& error) {
  auto rt = std::make_shared<http::runtime>();
  rt->cfg = cfg;
  rt->access_log = access_log;
  rt->metrics = metrics;

  identity::verifier_options vo;
  vo.client_ca_file = cfg->tls.client_ca;
  vo.client_intermediates_file = cfg->tls.client_intermediates;
  // CRL files are not OpenSSL's business any more: the revocation check decides per request
  // (a kept-alive connection sees a new CRL), so the chain verification is trust, validity,
  // EKU and UPN only.
  vo.issuers = issuers;
  vo.upn.from_san = cfg->auth.upn_from_san;
  vo.upn.from_subject = cfg->auth.upn_from_subject;
  vo.upn.from_directory = cfg->auth.upn_from_directory;
  vo.upn.max_length = cfg->auth.max_upn_length;
  vo.verify_depth = cfg->tls.verify_depth;
  vo.issuing_cas_file = cfg->auth.issuing_cas;  // the trust limits of [auth] (issue 12)
  vo.upn_suffixes = cfg->auth.upn_suffixes;
  vo.certificate_templates = cfg->auth.certificate_templates;
  std::string detail;
  auto verifier = identity::verifier::make(vo, &detail);
  if (!verifier) {
    error = "identity: " + (detail.empty() ? verifier.error().message() : detail);
    return nullptr;
  }
  rt->verifier = *verifier;
  // After the verifier: it has put the configured anchors and intermediates in the registry
  // that CRL signatures are verified against.
  auto current = std::make_shared<http::revocation_current>();
  current->policy = revocation_policy(*cfg);
  current->fail = cfg->revocation.fail;
  if (!cfg->tls.crl.empty()) {
    auto files = revocation::crl_files::load(cfg->tls.crl, *issuers, &detail);
    if (!files) {
      error = detail.empty() ? "crl: " + files.error().message() : detail;
      return nullptr;
    }
    current->policy.files = *files;
  }
  rt->revocation = std::move(current);
  rt->revocation_checker = checker;
  rt->revocation_now = live;
  rt->tls = tls::server_context::make(*cfg, rt->verifier, error, std::move(ticket_keys),
                                      std::move(sessions));
  if (!rt->tls) return nullptr;
  if (checker != nullptr && cfg->tls.stapling == config::ocsp_stapling::auto_fetch)
    rt->staples = start_stapling(*checker, *rt->tls);
  if (checker != nullptr && live != nullptr) {
    // tls.client_cert = "require": a certificate already known to be revoked fails the
    // handshake; only what the caches answer without waiting (try_check).
    rt->tls->set_handshake_revocation_check([checker, live](const identity::client_identity& id) {
      const auto now_rv = live->current.load(std::memory_order_acquire);
      if (!now_rv || now_rv->policy.checks == revocation::mode::off) return false;
      const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count();
      const auto v = checker->try_check(id.chain, now_rv->policy, now);
      if (!v || v->state != revocation::status::revoked) return false;
      checker->count(*v, false);
      return true;
    });
  }
  auto routes = routing::route_table::make(cfg->routes);
  if (!routes) {
    error = "routing: " + routes.error().message();
    return nullptr;
  }
  rt->routes = std::move(*routes);
  if (cfg->identity.mode == config::identity_mode::kerberos) {
    // The proxy's own credential comes from the keytab now: a bad keytab or principal stops
    // startup (or a reload) with GSSAPI's reason instead of failing every request later.
    auto krb = delegation::kerberos_delegator::create(cfg->kerberos);
    if (!krb) {
      error = "kerberos: cannot use keytab " + cfg->kerberos.keytab + " as " +
              cfg->kerberos.principal + ": " + krb.error().message();
      return nullptr;
    }
    rt->kerberos = std::shared_ptr<delegation::kerberos_delegator>(std::move(*krb));
  }
  if (cfg->auth.mapping == config::mapping_mode::directory) {
    // Certificate -> AD account over LDAP (issue 12); the workers connect at the first lookup,
    // so a directory down at startup gives 503s, not a failed start.
    directory::service_options so;
    if (!directory::options_from_config(*cfg, so, error)) return nullptr;
    rt->directory = std::make_shared<directory::service>(std::move(so), &registry);
  }
  rt->routes_metrics = std::make_shared<const http::route_metrics>(registry, cfg->routes);
  {
    std::string perr;
    rt->custom_pages = http::error_pages::load(*cfg, perr);
    if (!perr.empty()) {
      error = perr;
      return nullptr;
    }
  }
  rt->health = std::make_shared<upstream::health>(cfg->upstream, registry);
  bool any_tls_upstream = false;
  for (const auto& s : cfg->upstream.servers) any_tls_upstream |= s.tls;
  std::string uerr;
  rt->upstream_tls = upstream::client_tls::make(cfg->upstream, uerr);
  if (!rt->upstream_tls && any_tls_upstream) {
    error = uerr;
    return nullptr;
  }
  return rt;
}

// The session-ticket keys a snapshot asks for: the file's (read and checked now, applied only
// once the whole configuration is accepted) or none (process-local keys).
struct ticket_key_plan {
  bool from_file = false;
  std::vector<tls::ticket_key> keys;
};

bool plan_ticket_keys(const config::snapshot& cfg, ticket_key_plan& plan, std::string& error) {
  plan = {};
  if (cfg.tls.ticket_keys.empty()) return true;
  plan.from_file = true;
  return tls::load_ticket_key_file(cfg.tls.ticket_keys, plan.keys, error);
}

void apply_ticket_keys(const config::snapshot& cfg, ticket_key_plan plan, tls::ticket_key_store& store) {
  auto& log = *observability::logger("tls");
  if (plan.from_file) {
    log.info("tls.ticket_keys: {} key(s) from {}; the first encrypts new tickets", plan.keys.size(),
             cfg.tls.ticket_keys);
    store.use_file_keys(std::move(plan.keys));
  } else {
    store.use_local_keys(std::chrono::ceil<std::chrono::seconds>(cfg.tls.ticket_key_rotation),
                         std::chrono::ceil<std::chrono::seconds>(cfg.tls.session_timeout),
                         std::chrono::steady_clock::now());
  }
}

// What the file watch compares (docs/revocation.md "Reload"): a replaced file (new inode), a
// rewritten one (mtime, size) and a removed one all count as a change.
struct file_stamp {
  std::string path;
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  std::int64_t mtime_ns = 0;

  bool operator==(const file_stamp&) const = default;
};

file_stamp stamp_of(const std::string& path) {
  file_stamp s;
  s.path = path;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = st.st_size;
  s.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return s;
}

// The [tls] files of a snapshot: certificates, keys, client CAs, intermediates, CRLs, SNI.
std::vector<file_stamp> stamp_files(const config::snapshot& cfg) {
  std::vector<std::string> paths = {cfg.tls.certificate, cfg.tls.private_key, cfg.tls.client_ca,
                                    cfg.tls.client_intermediates, cfg.tls.ocsp_response};
  paths.insert(paths.end(), cfg.tls.crl.begin(), cfg.tls.crl.end());
  paths.push_back(cfg.tls.ticket_keys);  // rotation by replacing the file
  for (const auto& sni : cfg.tls.sni) {
    paths.push_back(sni.certificate);
    paths.push_back(sni.private_key);
  }
  std::vector<file_stamp> out;
  for (const std::string& p : paths)
    if (!p.empty()) out.push_back(stamp_of(p));
  return out;
}

class server {
 public:
  server(std::shared_ptr<const config::snapshot> cfg, server_options options)
      : options_(std::move(options)),
        metrics_(registry_),
        reloads_(registry_.add_labeled_counter("cbagate_reloads_total",
                                               "Configuration reloads (SIGHUP or file watch)",
                                               "result", {"ok", "failed"})) {
    cfg_.store(std::move(cfg));
  }

  int run() {
    auto cfg = cfg_.load();
    auto& log = *observability::logger("main");
    auto access = observability::access_log::open(cfg->access_log.path, cfg->access_log.log_upn);
    if (!access) {
      log.critical("access_log: cannot open '{}': {}", cfg->access_log.path, access.error().message());
      return 1;
    }
    access_log_ = std::move(*access);
    std::string error;
    if (cfg->identity.mode == config::identity_mode::kerberos) {
      // KRB5_CONFIG is process-wide: set once, before any thread calls GSSAPI; a reload that
      // changes kerberos.krb5_config takes effect on restart only.
      if (auto kr = delegation::apply_krb5_config(cfg->kerberos); !kr) {
        log.critical("kerberos: krb5_config {}: {}", cfg->kerberos.krb5_config, kr.error().message());
        return 1;
      }
    }
    // The SASL GSSAPI bind of [directory] reads its keytab and cache from the environment:
    // set once, before any thread exists (a reload's changes take effect on restart only).
    if (cfg->auth.mapping == config::mapping_mode::directory) directory::apply_gssapi_environment(*cfg);
    // Process-wide revocation state (survives reloads): the CA registry the verifiers fill and
    // the checker with the CDP/OCSP caches and its fetch thread.
    checker_ = std::make_unique<revocation::checker>(revocation_options(*cfg), issuers_, registry_);
    watched_ = stamp_files(*cfg);
    ticket_key_plan keys;
    auto sessions = sessions_for(*cfg);
    std::shared_ptr<const http::runtime> rt;
    if (plan_ticket_keys(*cfg, keys, error))
      rt = build_runtime(cfg, access_log_.get(), &metrics_, issuers_, checker_.get(),
                         &revocation_live_, ticket_keys_, sessions, registry_, error);
    if (!rt) {
      log.critical("startup: {}", error);
      std::fprintf(stderr, "cbagate: %s\n", error.c_str());
      return 1;
    }
    apply_ticket_keys(*cfg, std::move(keys), *ticket_keys_);
    sessions_ = std::move(sessions);
    runtime_.store(rt);
    publish_revocation(*rt);
    operations::raise_descriptor_limit();
    ops_.running(*cfg, false, &options_.kerberos);

    unsigned n = cfg->server.threads ? cfg->server.threads : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) {
      auto w = std::make_unique<io_thread>();
      w->state.index = i;
      w->state.count = n;
      workers_.push_back(std::move(w));
    }
    if (!bind_listeners(*cfg, workers_, bound_, error)) {
      log.critical("startup: {}", error);
      std::fprintf(stderr, "cbagate: %s\n", error.c_str());
      return 1;
    }
    if (!start_admin(*cfg, error)) {
      log.critical("startup: {}", error);
      std::fprintf(stderr, "cbagate: %s\n", error.c_str());
      return 1;
    }
    for (auto& w : workers_) {
      start_listeners(*w, listeners_);
      net::co_spawn(w->ioc, sweep_loop(*w), net::detached);
    }
    // Signals on the main thread's own io_context: SIGHUP reloads, SIGTERM/SIGINT drain.
    // Installed before the ready file is written: a supervisor (or test) that signals as soon
    // as it sees the file must get a reload or a drain, not the default action (termination).
    net::io_context main_ioc{1};
    net::signal_set signals(main_ioc, SIGHUP, SIGTERM, SIGINT);
    signals.add(SIGUSR1);  // reopen both logs (logrotate), like nginx
    std::function<void()> arm;
    arm = [&] {
      signals.async_wait([&](error_code ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          reload();
          operations::reopen_logs(*cfg_.load(), access_log_.get());
          arm();
        } else if (sig == SIGUSR1) {
          operations::reopen_logs(*cfg_.load(), access_log_.get());
          arm();
        } else {
          drain();
        }
      });
    };
    arm();
    // The file watch: a timer on this (main) thread, never an I/O thread; reload() runs here
    // for SIGHUP too, so the two never overlap.
    net::steady_timer watch(main_ioc);
    watch_ = &watch;
    arm_watch();
    // Backend health checks and the lifetime warnings (issue 13): on this (main) thread too,
    // never an I/O thread; both end with the drain.
    main_ioc_ = &main_ioc;
    start_health(*rt);
    net::steady_timer tick(main_ioc);
    tick_ = &tick;
    arm_tick();
    net::steady_timer drain_notice(main_ioc);
    drain_notice_ = &drain_notice;
    write_ready_file();
    log.info("cbagate {} listening on {} with {} I/O threads", CBAGATE_VERSION, bound_list(), n);
    // Listening already (the acceptors are bound and listen(2)ed; the loops start with the
    // threads just below, and the kernel queues connections until then).
    service::ready("listening on " + bound_list());

    std::vector<std::thread> threads;
    for (auto& w : workers_) threads.emplace_back([&ioc = w->ioc] { ioc.run(); });
    std::thread admin_thread([this] { admin_ioc_.run(); });
    main_ioc.run();  // returns after drain() has stopped the signal wait and the watch
    watch_ = nullptr;
    tick_ = nullptr;
    main_ioc_ = nullptr;
    drain_notice_ = nullptr;
    for (auto& t : threads) t.join();
    admin_ioc_.stop();
    admin_thread.join();
    log.info("cbagate stopped");
    return 0;
  }

 private:
  bool start_admin(const config::snapshot& cfg, std::string& error) {
    if (cfg.server.admin_listen.empty()) return true;
    admin_ = std::make_unique<admin::admin_server>(
        admin_ioc_.get_executor(), cfg.server.admin_listen, registry_,
        [this] { return !draining_.load(); }, [this] { return config_json(); },
        std::function<std::string()>{});
    auto r = admin_->listen();
    if (!r) {
      error = "server.admin_listen: cannot listen on " + cfg.server.admin_listen + ": " +
              r.error().message();
      return false;
    }
    admin_->set_readiness([this] { return not_ready_reason(); });
    admin_->start();
    return true;
  }

  std::string config_json() const {
    // Only what is safe to show: addresses, modes and routes; never key material paths' contents.
    auto cfg = cfg_.load();
    boost::json::object o;
    boost::json::array listen;
    for (const auto& ep : bound_) listen.emplace_back(ep.address().to_string() + ":" + std::to_string(ep.port()));
    o["listen"] = std::move(listen);
    o["source"] = cfg->source;
    o["identity_mode"] = cfg->identity.mode == config::identity_mode::kerberos ? "kerberos" : "header";
    boost::json::array routes;
    for (const auto& r : cfg->routes) {
      boost::json::object ro;
      ro["prefix"] = r.prefix;
      ro["client_cert"] = r.client_cert == config::route_cert_policy::require    ? "require"
                          : r.client_cert == config::route_cert_policy::optional ? "optional"
                                                                                 : "none";
      routes.emplace_back(std::move(ro));
    }
    o["routes"] = std::move(routes);
    boost::json::array ups;
    for (const auto& s : cfg->upstream.servers) ups.emplace_back(s.url);
    o["upstream"] = std::move(ups);
    return boost::json::serialize(o);
  }

  // Each I/O thread's tick: every 5 s it sweeps the idle backend connections past their idle
  // timeout. It runs every 500 ms, shorter than http::park_after (1 s), for another reason:
  // Asio re-arms its timerfd (one system call) whenever a new timer becomes the earliest, and a
  // request waiting for its response arms a timer park_after ahead. With the tick always due
  // sooner, that timer never is the earliest: at one connection this saved 0.8 system calls
  // per request (issue 14); the tick itself costs about two wake-ups a second per thread.
  net::awaitable<void> sweep_loop(io_thread& w) {
    static_assert(std::chrono::milliseconds(500) < http::park_after);
    net::steady_timer t(w.ioc);
    for (unsigned tick = 1; !w.state.draining; ++tick) {
      t.expires_after(std::chrono::milliseconds(500));
      auto [ec] = co_await t.async_wait(use_tuple);
      if (ec) co_return;
      if (tick % 10 == 0 && w.state.pool) w.state.pool->sweep();
    }
  }

  void publish_revocation(const http::runtime& rt) {
    const auto& files = rt.revocation->policy.files;
    checker_->set_file_crl_count(files ? files->size() : 0);
    revocation_live_.publish(rt.revocation);
  }

  // Polls the [tls] files every revocation.watch_interval (of the running configuration; 0 =
  // off, looked at again every second so a reload can turn it on).
  void arm_watch() {
    if (watch_ == nullptr || draining_.load()) return;
    const auto interval = cfg_.load()->revocation.watch_interval;
    const bool on = interval.count() > 0;
    watch_->expires_after(on ? std::chrono::ceil<std::chrono::milliseconds>(interval)
                             : std::chrono::milliseconds(1000));
    watch_->async_wait([this, on](error_code ec) {
      if (ec || draining_.load()) return;
      if (on) check_files();
      arm_watch();
    });
  }

  void check_files() {
    for (const file_stamp& old : watched_) {
      if (stamp_of(old.path) == old) continue;
      observability::logger("main")->info("reload: {} changed", old.path);
      reload();  // re-stamps
      return;
    }
  }

  void reload() {
    // The service manager hears of the reload and of its end, applied or refused: the running
    // configuration serves either way (READY again).
    service::reloading();
    reload_config();
    service::ready("listening on " + bound_list());
  }

  void reload_config() {
    auto& log = *observability::logger("main");
    auto result = config::load_file(options_.config_path);
    if (!result.ok()) {
      for (const auto& d : result.errors) log.error("reload: {}", d.to_string());
      log.error("reload: configuration {} rejected; keeping the running one", options_.config_path);
      watched_ = stamp_files(*cfg_.load());
      reloads_.inc("failed");
      return;
    }
    auto cfg = result.value;
    auto current = cfg_.load();
    if (cfg->server.listen.size() != current->server.listen.size() ||
        cfg->server.threads != current->server.threads ||
        cfg->server.admin_listen != current->server.admin_listen)
      log.warn("reload: server.listen, server.threads and server.admin_listen take effect on restart only");
    std::string error;
    // Stamped before the files are read: a change made while they load triggers another reload.
    // Also on failure: the files of the rejected configuration are watched, so fixing the
    // broken one reloads.
    watched_ = stamp_files(*cfg);
    ticket_key_plan keys;
    auto sessions = sessions_for(*cfg);
    std::shared_ptr<const http::runtime> rt;
    if (plan_ticket_keys(*cfg, keys, error))
      rt = build_runtime(cfg, access_log_.get(), &metrics_, issuers_, checker_.get(),
                         &revocation_live_, ticket_keys_, sessions, registry_, error);
    if (!rt) {
      log.error("reload: {}; keeping the running configuration", error);
      reloads_.inc("failed");
      return;
    }
    apply_ticket_keys(*cfg, std::move(keys), *ticket_keys_);
    sessions_ = std::move(sessions);
    checker_->set_options(revocation_options(*cfg));
    if (auto lr = observability::set_level(cfg->log.level); !lr)
      log.error("reload: log.level: {}", lr.error().message());
    cfg_.store(cfg);
    runtime_.store(rt);  // new connections get it; live ones keep theirs
    publish_revocation(*rt);  // ... but their next request is checked against the new CRLs
    log.info("reload: configuration {} loaded", options_.config_path);
    reloads_.inc("ok");
    ops_.running(*cfg, true);  // lifetimes, Kerberos probe, readiness (after the count)
    start_health(*rt);
  }

  // Why /readyz should say "not ready" ("" = ready; draining is the admin server's own).
  std::string not_ready_reason() const {
    if (auto rt = runtime_.load(); rt && rt->health) {
      if (std::string why = rt->health->problem(); !why.empty()) return why;
    }
    return ops_.not_ready_reason();
  }

  // The active checks of a runtime's upstream servers; those of the previous runtime stop.
  void start_health(const http::runtime& rt) {
    if (health_stop_) health_stop_->store(true);
    health_stop_ = std::make_shared<std::atomic<bool>>(false);
    if (main_ioc_ == nullptr || !rt.health || draining_.load()) return;
    net::co_spawn(*main_ioc_, upstream::health::run_checks(rt.health, rt.upstream_tls, health_stop_),
                  net::detached);
  }

  // Once a minute: the certificate and CRL warnings that came due (7 days, 1 day, past).
  void arm_tick() {
    if (tick_ == nullptr || draining_.load()) return;
    tick_->expires_after(std::chrono::seconds(60));
    tick_->async_wait([this](error_code ec) {
      if (ec || draining_.load()) return;
      ops_.tick();
      arm_tick();
    });
  }

  void drain() {
    if (draining_.exchange(true)) return;
    if (watch_ != nullptr) watch_->cancel();  // main_ioc.run() may return
    if (tick_ != nullptr) tick_->cancel();
    if (health_stop_) health_stop_->store(true);
    if (admin_) admin_->set_draining(true);  // /readyz says "draining" to the balancer
    service::stopping("draining");
    // Behind a balancer: /readyz answers 503 for timeouts.drain_notice while the listeners still
    // accept, so the health check takes this instance out before a connection is refused.
    const auto notice = cfg_.load()->timeouts.drain_notice;
    if (notice.count() > 0 && drain_notice_ != nullptr) {
      observability::logger("main")->info("drain: /readyz answers 503; listeners close in {}s",
                                          notice.count());
      drain_notice_->expires_after(std::chrono::ceil<std::chrono::milliseconds>(notice));
      drain_notice_->async_wait([this](error_code) { close_and_drain(); });
      return;
    }
    close_and_drain();
  }

  void close_and_drain() {
    auto cfg = cfg_.load();
    auto& log = *observability::logger("main");
    log.info("drain: no new connections; waiting up to {}s for {} open connections", cfg->timeouts.drain.count(),
             metrics_.connections_active.value());
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::steady_clock::duration>(cfg->timeouts.drain);
    for (auto& w : workers_) {
      net::co_spawn(w->ioc, drain_worker(*w, deadline), net::detached);
    }
  }

  static bool bytes_waiting(tcp::socket& socket) {
    char byte = 0;
    return ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
  }

  static net::awaitable<void> drain_worker(io_thread& w, std::chrono::steady_clock::time_point deadline) {
    w.state.draining = true;
    close_listeners(w);
    net::steady_timer t(w.ioc);
    while (std::chrono::steady_clock::now() < deadline) {
      // Idle keep-alive connections end now; busy ones end after their current response. Not
      // ended: a connection that has not had its first request yet (accepted just before the
      // listener closed: it gets one), and an idle one whose next request has already arrived
      // (it is served): behind a balancer neither is a failed request.
      for (auto* h : w.state.sessions) {
        if (h->idle && !h->fresh && h->socket && !bytes_waiting(*h->socket)) {
          error_code ec;
          h->socket->cancel(ec);
        }
      }
      if (w.state.sessions.empty()) break;
      t.expires_after(std::chrono::milliseconds(50));
      co_await t.async_wait(use_tuple);
    }
    for (auto* h : w.state.sessions) {
      error_code ec;
      if (h->socket) h->socket->close(ec);
    }
    w.state.pool.reset();
    w.ioc.stop();
  }

  std::string bound_list() const {
    std::string s;
    for (const auto& ep : bound_) {
      if (!s.empty()) s += ", ";
      s += ep.address().to_string() + ":" + std::to_string(ep.port());
    }
    return s;
  }

  void write_ready_file() {
    if (options_.ready_file.empty()) return;
    boost::json::object o;
    boost::json::array listen;
    for (const auto& ep : bound_) listen.emplace_back(ep.address().to_string() + ":" + std::to_string(ep.port()));
    o["listen"] = std::move(listen);
    if (admin_) {
      auto ep = admin_->local_endpoint();
      o["admin"] = ep.address().to_string() + ":" + std::to_string(ep.port());
    }
    o["pid"] = static_cast<std::int64_t>(::getpid());
    const std::string tmp = options_.ready_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << boost::json::serialize(o) << "\n";
    }
    std::error_code ec;
    std::filesystem::rename(tmp, options_.ready_file, ec);
  }

  server_options options_;
  observability::registry registry_;
  http::metrics metrics_;
  observability::labeled_counter& reloads_;
  std::shared_ptr<identity::issuer_registry> issuers_ = std::make_shared<identity::issuer_registry>();
  std::unique_ptr<revocation::checker> checker_;  // after registry_: it holds metric references
  http::revocation_live revocation_live_;         // outlives every runtime (declared before)
  std::vector<file_stamp> watched_;               // main thread only
  net::steady_timer* watch_ = nullptr;            // main thread only
  net::steady_timer* drain_notice_ = nullptr;     // main thread only
  net::steady_timer* tick_ = nullptr;             // main thread only
  net::io_context* main_ioc_ = nullptr;           // main thread only
  std::shared_ptr<std::atomic<bool>> health_stop_;  // of the running health checks
  tls::edge edge_{registry_};                     // after registry_: PROXY header, per-address limits
  operations ops_{registry_};                     // after registry_: it registers metrics
  std::shared_ptr<tls::ticket_key_store> ticket_keys_ = std::make_shared<tls::ticket_key_store>();
  // tls.session_cache: kept across reloads; a reload that changes its size starts a new one.
  std::shared_ptr<tls::session_cache> sessions_;
  std::shared_ptr<tls::session_cache> sessions_for(const config::snapshot& cfg) const {
    if (sessions_ && sessions_->capacity() == std::max<std::size_t>(cfg.tls.session_cache, 1))
      return sessions_;
    return std::make_shared<tls::session_cache>(cfg.tls.session_cache);
  }
  std::atomic<std::shared_ptr<const config::snapshot>> cfg_;
  std::atomic<std::shared_ptr<const http::runtime>> runtime_;
  listener_env listeners_{runtime_, metrics_, edge_, &ops_};  // what the accept loops read
  std::unique_ptr<observability::access_log> access_log_;
  std::vector<std::unique_ptr<io_thread>> workers_;
  std::vector<tcp::endpoint> bound_;
  net::io_context admin_ioc_{1};
  std::unique_ptr<admin::admin_server> admin_;
  std::atomic<bool> draining_{false};
};

}  // namespace

int run_server(std::shared_ptr<const config::snapshot> cfg, const server_options& options) {
  server s(std::move(cfg), options);
  return s.run();
}

}  // namespace cbagate
