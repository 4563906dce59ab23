#include "directory/service.hpp"

#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <list>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "identity/ad_certificate.hpp"
#include "observability/log.hpp"

namespace cbagate::directory {
namespace {

namespace net = boost::asio;
using clock = std::chrono::steady_clock;

std::vector<std::string> verdict_names() {
  std::vector<std::string> out;
  for (int v = 0; v <= static_cast<int>(last_verdict); ++v)
    out.emplace_back(to_string(static_cast<verdict>(v)));
  return out;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

mapping_result unavailable(std::string detail) {
  mapping_result r;
  r.outcome = verdict::unavailable;
  r.detail = std::move(detail);
  return r;
}

struct issuer_less {
  bool operator()(const identity::issuer_id& a, const identity::issuer_id& b) const {
    return a.name_hash != b.name_hash ? a.name_hash < b.name_hash : a.key_hash < b.key_hash;
  }
};

}  // namespace

bool options_from_config(const config::snapshot& cfg, service_options& out, std::string& error) {
  const config::directory_section& d = cfg.directory;
  out.ldap.uris = d.uris;
  out.ldap.base_dn = d.base_dn;
  out.ldap.bind = d.bind;
  out.ldap.bind_dn = d.bind_dn;
  out.ldap.tls = d.tls;
  out.ldap.ca = d.ca;
  out.ldap.timeout = std::chrono::ceil<std::chrono::milliseconds>(d.timeout);
  out.connections = d.connections;
  out.cache_ttl = std::chrono::ceil<std::chrono::milliseconds>(d.cache_ttl);
  out.negative_ttl = std::chrono::ceil<std::chrono::milliseconds>(d.negative_ttl);
  out.cache_max = d.cache_max;
  out.ntauth = d.ntauth;
  out.ntauth_refresh = std::chrono::ceil<std::chrono::milliseconds>(d.ntauth_refresh);
  out.lockout_duration = std::chrono::ceil<std::chrono::seconds>(d.lockout_duration);
  if (d.bind == config::directory_bind::simple) {
    std::ifstream in(d.password_file, std::ios::binary);
    if (!in) {
      error = "directory.password_file '" + d.password_file + "': cannot read it";
      return false;
    }
    std::ostringstream text;
    text << in.rdbuf();
    std::string pw = text.str();
    while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) pw.pop_back();
    if (pw.empty()) {
      error = "directory.password_file '" + d.password_file + "': empty";
      return false;
    }
    out.ldap.password = std::move(pw);
  }
  return true;
}

void apply_gssapi_environment(const config::snapshot& cfg) {
  if (cfg.directory.bind != config::directory_bind::sasl_gssapi) return;
  const std::string& keytab =
      cfg.directory.keytab.empty() ? cfg.kerberos.keytab : cfg.directory.keytab;
  if (!keytab.empty()) ::setenv("KRB5_CLIENT_KTNAME", keytab.c_str(), 1);
  // The initiator credentials MIT gets from the client keytab land in the default cache: keep
  // them in this process, never in a file cache of the user the proxy runs as.
  if (::getenv("KRB5CCNAME") == nullptr) ::setenv("KRB5CCNAME", "MEMORY:cbagate-directory", 1);
  if (!cfg.kerberos.krb5_config.empty())
    ::setenv("KRB5_CONFIG", cfg.kerberos.krb5_config.c_str(), 1);
}

certificate_view view_of(const identity::client_identity& id) {
  certificate_view v;
  v.upn = id.upn;
  v.issuer_dn = id.ad.issuer_dn;
  v.subject_dn = id.ad.subject_dn;
  v.serial = id.serial;
  v.ski = id.ad.ski;
  v.sha1 = id.ad.sha1;
  v.sid = id.ad.sid;
  v.sid_error = id.ad.sid_error;
  return v;
}

// ------------------------------------------------------------------------------------------------

struct service::state {
  service_options options;
  std::unique_ptr<observability::registry> own_registry;
  observability::labeled_counter& lookups;
  observability::histogram& lookup_seconds;
  observability::counter& cache_hits;
  observability::counter& cache_misses;
  observability::counter& coalesced;
  observability::labeled_counter& errors;
  observability::gauge& cache_entries;

  struct waiter {
    explicit waiter(const net::any_io_executor& ex) : timer(ex) {}
    std::optional<mapping_result> result;  // guarded by state::mu
    net::steady_timer timer;
  };
  struct job {
    std::string key;
    identity::client_identity id;
  };
  struct cache_entry {
    mapping_result result;
    clock::time_point expires;
    std::list<std::string>::iterator order;
  };

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::deque<job> queue;
  std::unordered_map<std::string, std::vector<std::shared_ptr<waiter>>> pending;
  std::unordered_map<std::string, cache_entry> cache;
  std::list<std::string> order;  // oldest first

  std::mutex ntauth_mu;
  std::set<identity::issuer_id, issuer_less> ntauth;
  clock::time_point ntauth_loaded{};
  bool ntauth_ok = false;

  std::vector<std::thread> workers;

  state(service_options o, observability::registry* r)
      : options(std::move(o)),
        own_registry(r ? nullptr : std::make_unique<observability::registry>()),
        lookups(reg(r).add_labeled_counter("cbagate_directory_lookups_total",
                                           "Directory lookups (LDAP), by verdict", "verdict",
                                           verdict_names())),
        lookup_seconds(reg(r).add_histogram("cbagate_directory_lookup_duration_seconds",
                                            "Time of one directory lookup (connect, bind, search)",
                                            {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25, 0.5, 1, 2.5, 5})),
        cache_hits(reg(r).add_counter("cbagate_directory_cache_hits_total",
                                      "Requests answered from the verdict cache")),
        cache_misses(reg(r).add_counter("cbagate_directory_cache_misses_total",
                                        "Requests that needed a directory lookup")),
        coalesced(reg(r).add_counter("cbagate_directory_coalesced_total",
                                     "Requests that joined a lookup already running for the same "
                                     "certificate")),
        errors(reg(r).add_labeled_counter("cbagate_directory_errors_total",
                                          "Failed connections, binds or searches, by server",
                                          "uri", options.ldap.uris)),
        cache_entries(reg(r).add_gauge("cbagate_directory_cache_entries",
                                       "Verdicts in the directory cache")) {}

  observability::registry& reg(observability::registry* r) {
    return r ? *r : *own_registry;
  }

  static void count_failure(void* self, std::size_t uri_index) {
    auto* s = static_cast<state*>(self);
    if (uri_index < s->options.ldap.uris.size()) s->errors.inc(s->options.ldap.uris[uri_index]);
  }

  // Under mu.
  std::optional<mapping_result> cached_locked(const std::string& key, clock::time_point now) {
    auto it = cache.find(key);
    if (it == cache.end()) return std::nullopt;
    if (now >= it->second.expires) {
      order.erase(it->second.order);
      cache.erase(it);
      cache_entries.set(static_cast<std::int64_t>(cache.size()));
      return std::nullopt;
    }
    return it->second.result;
  }

  // Under mu.
  void remember_locked(const std::string& key, const mapping_result& r) {
    if (r.outcome == verdict::unavailable) return;  // never cached: fail closed, retry next time
    const auto ttl = r.allowed() ? options.cache_ttl : options.negative_ttl;
    if (ttl.count() <= 0) return;
    if (auto it = cache.find(key); it != cache.end()) {
      order.erase(it->second.order);
      cache.erase(it);
    }
    while (cache.size() >= options.cache_max && !order.empty()) {
      cache.erase(order.front());
      order.pop_front();
    }
    order.push_back(key);
    cache.emplace(key, cache_entry{r, clock::now() + ttl, std::prev(order.end())});
    cache_entries.set(static_cast<std::int64_t>(cache.size()));
  }

  // The NTAuth set, read again every ntauth_refresh (on a worker thread). False when it was
  // never read successfully.
  bool refresh_ntauth(ldap_client& client, std::string& detail) {
    std::lock_guard lock(ntauth_mu);
    const auto now = clock::now();
    if (ntauth_ok && now - ntauth_loaded < options.ntauth_refresh) return true;
    std::vector<std::vector<std::uint8_t>> ders;
    ldap_failure failure;
    if (!client.read_ntauth(ders, failure)) {
      detail = "NTAuth store: " + failure.message;
      if (ntauth_ok) {
        observability::logger("directory")
            ->warn("NTAuth store not refreshed, keeping the previous one: {}", failure.message);
        ntauth_loaded = now;  // retry after another refresh period
        return true;
      }
      return false;
    }
    std::set<identity::issuer_id, issuer_less> ids;
    for (const auto& der : ders)
      if (auto id = identity::issuer_id_of_der(der)) ids.insert(*id);
    ntauth = std::move(ids);
    ntauth_loaded = now;
    ntauth_ok = true;
    observability::logger("directory")->info("NTAuth store read: {} CA certificate(s)", ntauth.size());
    return true;
  }

  mapping_result run(ldap_client& client, const identity::client_identity& id) {
    const auto t0 = clock::now();
    mapping_result r = [&] {
      if (options.ntauth) {
        std::string detail;
        if (!refresh_ntauth(client, detail)) return unavailable(detail);
        // The leaf's issuer (chain[0].issuer) must be a CA of the store.
        bool in = false;
        if (!id.chain.empty()) {
          std::lock_guard lock(ntauth_mu);
          in = ntauth.count(id.chain.front().issuer) > 0;
        }
        if (!in) {
          mapping_result d;
          d.outcome = verdict::issuer_not_in_ntauth;
          d.detail = "the issuing CA [" + id.issuer + "] is not in the NTAuth store";
          return d;
        }
      }
      const certificate_view view = view_of(id);
      std::vector<account> found;
      ldap_failure failure;
      // No UPN in the certificate (auth.upn_sources "directory"): located by its strong strings.
      const bool found_ok = view.upn.empty()
                                ? client.find_by_strong_strings(strong_strings(view), found, failure)
                                : client.find_by_upn(view.upn, found, failure);
      if (!found_ok) return unavailable(failure.message);
      return decide(view, found, unix_now(), options.lockout_duration);
    }();
    lookup_seconds.observe(std::chrono::duration<double>(clock::now() - t0).count());
    lookups.inc(to_string(r.outcome));
    return r;
  }

  void worker_loop() {
    ldap_client client(options.ldap);
    client.on_failure(&state::count_failure, this);
    while (true) {
      job j;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop || !queue.empty(); });
        if (stop) return;
        j = std::move(queue.front());
        queue.pop_front();
      }
      mapping_result r = run(client, j.id);
      if (r.outcome == verdict::unavailable)
        observability::logger("directory")
            ->warn("lookup for {} ({}) failed: {}", j.id.upn, j.id.subject, r.detail);
      std::vector<std::shared_ptr<waiter>> waiters;
      {
        std::lock_guard lock(mu);
        remember_locked(j.key, r);
        auto it = pending.find(j.key);
        if (it != pending.end()) {
          waiters = std::move(it->second);
          pending.erase(it);
        }
        for (auto& w : waiters) w->result = r;
      }
      for (auto& w : waiters) net::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
    }
  }
};

service::service(service_options options, observability::registry* metrics)
    : state_(std::make_shared<state>(std::move(options), metrics)) {
  const std::size_t n = std::max<std::size_t>(1, state_->options.connections);
  for (std::size_t i = 0; i < n; ++i)
    state_->workers.emplace_back([s = state_.get()] { s->worker_loop(); });
}

service::~service() {
  {
    std::lock_guard lock(state_->mu);
    state_->stop = true;
  }
  state_->cv.notify_all();
  for (auto& t : state_->workers) t.join();
}

std::optional<mapping_result> service::try_lookup(const identity::client_identity& id) {
  std::lock_guard lock(state_->mu);
  auto r = state_->cached_locked(id.sha256, clock::now());
  if (r) state_->cache_hits.inc();
  return r;
}

net::awaitable<mapping_result> service::async_lookup(identity::client_identity id) {
  auto ex = co_await net::this_coro::executor;
  state& s = *state_;
  auto w = std::make_shared<state::waiter>(ex);
  {
    std::lock_guard lock(s.mu);
    if (auto hit = s.cached_locked(id.sha256, clock::now())) {
      s.cache_hits.inc();
      co_return std::move(*hit);
    }
    s.cache_misses.inc();
    auto it = s.pending.find(id.sha256);
    if (it != s.pending.end()) {
      s.coalesced.inc();
      it->second.push_back(w);
    } else {
      if (s.queue.size() >= s.options.max_pending) {
        s.lookups.inc(to_string(verdict::unavailable));
        co_return unavailable("too many directory lookups queued (" +
                              std::to_string(s.queue.size()) + ")");
      }
      s.pending[id.sha256].push_back(w);
      std::string key = id.sha256;
      s.queue.push_back(state::job{std::move(key), std::move(id)});
      s.cv.notify_one();
    }
  }
  w->timer.expires_after(s.options.ldap.timeout);
  co_await w->timer.async_wait(net::as_tuple(net::use_awaitable));
  std::lock_guard lock(s.mu);
  if (w->result) co_return std::move(*w->result);
  co_return unavailable("no directory answer within directory.timeout (" +
                        std::to_string(s.options.ldap.timeout.count()) + " ms)");
}

mapping_result service::lookup_now(const identity::client_identity& id) {
  ldap_client client(state_->options.ldap);
  client.on_failure(&state::count_failure, state_.get());
  return state_->run(client, id);
}

std::size_t service::cached() const {
  std::lock_guard lock(state_->mu);
  return state_->cache.size();
}

}  // namespace cbagate::directory
