#include "revocation/checker.hpp"

#include "observability/log.hpp"
#include "revocation/crl_index.hpp"
#include "revocation/fetch.hpp"
#include "revocation/ocsp.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/bio.h>

namespace cbagate::revocation {
namespace {

namespace net = boost::asio;
using detail::fetch_error;
using clock = std::chrono::steady_clock;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// One request waiting for fetches: the timer runs on the request's (serialized) executor;
// every fetch completion posts a decrement there and the last one cancels the timer.
struct fetch_slot;
struct waiter {
  explicit waiter(const net::any_io_executor& ex) : timer(ex) {}
  net::steady_timer timer;
  std::size_t pending = 0;               // only touched on the timer's executor
  std::vector<fetch_slot*> registered;   // under the state's mutex
};

// State shared by the CDP and OCSP cache entries: one fetch in flight at most, a failure
// remembered for retry_after, the requests waiting, and a use stamp for LRU eviction.
struct fetch_slot {
  bool in_flight = false;
  std::int64_t error_until = 0;
  std::string error;  // "cdp <url>: timeout"
  std::vector<std::shared_ptr<waiter>> waiters;
  mutable std::atomic<std::int64_t> last_used{0};

  void touch(std::int64_t now) const noexcept {
    if (last_used.load(std::memory_order_relaxed) != now)
      last_used.store(now, std::memory_order_relaxed);
  }
  bool may_start(std::int64_t now) const noexcept { return !in_flight && now >= error_until; }
};

struct cdp_entry : fetch_slot {
  std::shared_ptr<const detail::crl_index> crl;
  std::int64_t refresh_at = 0;
};

struct ocsp_entry : fetch_slot {
  bool has_answer = false;
  status st = status::unknown;
  std::string_view reason;  // static strings only
  std::int64_t expires = 0;
  std::int64_t refresh_at = 0;
};

struct ocsp_key {
  identity::issuer_id issuer;
  std::string serial;
};
struct ocsp_key_view {
  const identity::issuer_id& issuer;
  std::string_view serial;
};
struct ocsp_key_hash {
  using is_transparent = void;
  std::size_t operator()(const ocsp_key_view& k) const noexcept {
    return identity::issuer_id_hash{}(k.issuer) ^ (std::hash<std::string_view>{}(k.serial) * 31);
  }
  std::size_t operator()(const ocsp_key& k) const noexcept {
    return (*this)(ocsp_key_view{k.issuer, k.serial});
  }
};
struct ocsp_key_eq {
  using is_transparent = void;
  static ocsp_key_view view(const ocsp_key& k) noexcept { return {k.issuer, k.serial}; }
  static ocsp_key_view view(const ocsp_key_view& k) noexcept { return k; }
  template <class A, class B>
  bool operator()(const A& a, const B& b) const noexcept {
    const ocsp_key_view x = view(a);
    const ocsp_key_view y = view(b);
    return x.serial == y.serial && x.issuer == y.issuer;
  }
};

struct string_hash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// A fetch the evaluation asks for: wait = a request needs its answer; !wait = a refresh
// ahead of nextUpdate while the cached answer still serves.
struct need {
  bool ocsp = false;
  bool wait = true;
  std::string_view url;
  const identity::cert_ref* ref = nullptr;
};

// The status of one certificate from one source family.
struct part {
  status st = status::unknown;
  source from = source::none;
  bool pending = false;    // a fetch is in flight (or must start) for this answer
  bool unchecked = false;  // non-strict crl: no source for this certificate
  std::string_view reason;
  std::string_view url;  // pending: what it waits for
};

part known(status st, source from, std::string_view reason = {}) {
  part p;
  p.st = st;
  p.from = from;
  p.reason = reason;
  return p;
}

part waiting(source from, std::string_view url) {
  part p;
  p.from = from;
  p.pending = true;
  p.url = url;
  return p;
}

enum class freshness { ok, stale, not_yet_valid };

freshness fresh(const detail::crl_index& c, std::int64_t now, std::int64_t skew) {
  if (c.this_update > now + skew) return freshness::not_yet_valid;
  if (c.next_update && now > *c.next_update + skew) return freshness::stale;
  return freshness::ok;
}

part lookup(const detail::crl_index& c, std::string_view serial, source from) {
  if (const std::uint8_t* reason = c.find(serial))
    return known(status::revoked, from, detail::reason_name(*reason));
  return known(status::good, from);
}

std::string reason_text(const part& p) {
  if (p.pending)
    return std::string(p.from == source::ocsp ? "ocsp " : "cdp ") + std::string(p.url) +
           ": timeout";
  return std::string(p.reason);
}

constexpr std::array<std::string_view, 4> outcome_names{"good", "revoked", "unknown",
                                                        "unknown_allowed"};
constexpr std::array<std::string_view, 4> source_names{"none", "crl_file", "cdp", "ocsp"};

}  // namespace

struct checker::state {
  state(options o, std::shared_ptr<const identity::issuer_registry> reg,
        observability::registry& metrics)
      : opts(o),
        issuers(std::move(reg)),
        log(observability::logger("revocation")),
        work(net::make_work_guard(ioc)) {
    for (std::size_t s = 0; s < source_names.size(); ++s)
      for (std::size_t o2 = 0; o2 < outcome_names.size(); ++o2)
        checks[s][o2] = &metrics.add_counter(
            "cbagate_revocation_checks_total", "Revocation checks of requests, by source and outcome",
            {{"source", std::string(source_names[s])}, {"outcome", std::string(outcome_names[o2])}});
    std::vector<std::string> reasons;
    for (std::size_t e = 1; e < detail::fetch_error_count; ++e)
      reasons.emplace_back(detail::to_string(static_cast<fetch_error>(e)));
    const std::array<std::string, 2> kinds{"crl", "ocsp"};
    for (std::size_t k = 0; k < 2; ++k) {
      fetches[k] = &metrics.add_counter("cbagate_revocation_fetches_total",
                                        "CRL downloads and OCSP exchanges started",
                                        {{"kind", kinds[k]}});
      fetch_errors[k] = &metrics.add_labeled_counter(
          "cbagate_revocation_fetch_errors_total", "Failed CRL downloads and OCSP exchanges",
          "reason", reasons, {{"kind", kinds[k]}});
    }
    const std::array<std::string, 3> cache_kinds{"crl_file", "cdp", "ocsp"};
    for (std::size_t k = 0; k < 3; ++k)
      entries[k] = &metrics.add_gauge("cbagate_revocation_cache_entries",
                                      "CRLs and OCSP answers held", {{"kind", cache_kinds[k]}});
  }

  // ---- evaluation (shared lock held) -------------------------------------------------------

  const detail::crl_index* file_crl(const policy& p, const identity::issuer_id& issuer) const {
    if (!p.files || !p.files->impl_) return nullptr;
    const auto& m = p.files->impl_->by_issuer;
    const auto it = m.find(issuer);
    return it == m.end() ? nullptr : it->second.get();
  }

  part crl_part(const identity::cert_ref& ref, std::size_t index, const policy& p,
                std::int64_t now, std::vector<need>& needs) const {
    const std::int64_t skew = opts.max_clock_skew.count();
    const detail::crl_index* file = file_crl(p, ref.issuer);
    if (file && !file->covers(index)) file = nullptr;
    std::string_view file_problem;
    if (file) {
      const freshness f = fresh(*file, now, skew);
      if (f == freshness::ok) return lookup(*file, ref.serial, source::crl_file);
      file_problem = f == freshness::stale ? "stale_crl" : "crl_not_yet_valid";
    }
    if (!p.fetch_cdp || ref.cdp_urls.empty()) {
      if (file) return known(status::unknown, source::crl_file, file_problem);
      if (!p.strict) {
        part u = known(status::good, source::none);
        u.unchecked = true;
        return u;
      }
      return known(status::unknown, source::none, "no_crl");
    }
    std::string_view first_error;
    std::string_view waiting_for;
    std::string_view to_start;
    for (const std::string& url : ref.cdp_urls) {
      const auto it = cdp.find(url);
      if (it == cdp.end()) {
        if (to_start.empty()) to_start = url;
        continue;
      }
      const cdp_entry& e = *it->second;
      e.touch(now);
      const bool matches = e.crl && e.crl->issuer == ref.issuer && e.crl->covers(index);
      if (matches && fresh(*e.crl, now, skew) == freshness::ok) {
        if (now >= e.refresh_at && e.may_start(now)) needs.push_back({false, false, url, &ref});
        return lookup(*e.crl, ref.serial, source::cdp);
      }
      if (e.in_flight) {
        if (waiting_for.empty()) waiting_for = url;
        needs.push_back({false, true, url, &ref});
      } else if (now < e.error_until) {
        if (first_error.empty()) first_error = e.error;
      } else if (e.crl && !matches && now < e.refresh_at) {
        if (first_error.empty()) first_error = "cdp CRL is not from the certificate's issuer";
      } else if (to_start.empty()) {
        to_start = url;
      }
    }
    if (!waiting_for.empty()) return waiting(source::cdp, waiting_for);
    if (!to_start.empty()) {
      needs.push_back({false, true, to_start, &ref});
      return waiting(source::cdp, to_start);
    }
    if (!first_error.empty()) return known(status::unknown, source::cdp, first_error);
    return known(status::unknown, file ? source::crl_file : source::cdp,
                 file ? file_problem : std::string_view("stale_crl"));
  }

  part ocsp_part(const identity::cert_ref& ref, const policy& p, std::int64_t now,
                 std::vector<need>& needs) const {
    std::string_view url = p.ocsp_responder;
    if (url.empty() && !ref.ocsp_urls.empty()) url = ref.ocsp_urls.front();
    if (url.empty()) return known(status::unknown, source::ocsp, "no_ocsp_url");
    const auto it = ocsp.find(ocsp_key_view{ref.issuer, ref.serial});
    if (it == ocsp.end()) {
      needs.push_back({true, true, url, &ref});
      return waiting(source::ocsp, url);
    }
    const ocsp_entry& e = *it->second;
    e.touch(now);
    if (e.has_answer && now <= e.expires) {
      if (now >= e.refresh_at && e.may_start(now)) needs.push_back({true, false, url, &ref});
      return known(e.st, source::ocsp, e.reason);
    }
    if (e.in_flight || e.may_start(now)) {
      needs.push_back({true, true, url, &ref});
      return waiting(source::ocsp, url);
    }
    return known(status::unknown, source::ocsp, e.error);
  }

  /**
   * The chain's verdict from the caches, or nullopt when a fetch must be awaited (`needs`
   * names it). `final`: nothing more will be awaited, pending answers count as timeouts.
   */
  std::optional<verdict> evaluate(const identity::chain_refs& chain, const policy& p,
                                  std::int64_t now, std::vector<need>& needs, bool final) const {
    if (p.checks == mode::off) return verdict{status::good, source::none, 0, {}};
    bool pending = false;
    std::optional<std::size_t> unknown_at;
    part unknown_a;
    part unknown_b;
    source good_from = source::none;
    for (std::size_t i = 0; i < chain.size(); ++i) {
      const identity::cert_ref& ref = chain[i];
      part a;
      part b;
      bool has_b = false;
      if (p.checks == mode::crl || p.checks == mode::crl_and_ocsp) {
        a = crl_part(ref, i, p, now, needs);
        if (p.checks == mode::crl_and_ocsp) {
          b = ocsp_part(ref, p, now, needs);
          has_b = true;
          if (a.unchecked) a = known(status::unknown, source::none, "no_crl");
        }
      } else {
        a = ocsp_part(ref, p, now, needs);
      }
      for (const part* x : {&a, has_b ? &b : nullptr}) {
        if (x && !x->pending && x->st == status::revoked)
          return verdict{status::revoked, x->from, i, std::string(x->reason)};
      }
      if (!final && (a.pending || (has_b && b.pending))) {
        pending = true;
        continue;
      }
      const part* good = !a.pending && a.st == status::good ? &a
                         : has_b && !b.pending && b.st == status::good ? &b
                                                                       : nullptr;
      if (good) {
        if (good_from == source::none) good_from = good->from;
        continue;
      }
      if (!unknown_at) {
        unknown_at = i;
        unknown_a = a;
        if (has_b) unknown_b = b;
        else unknown_b = part{};
        if (!has_b) unknown_b.st = status::good;  // marks "no second reason"
      }
    }
    if (pending) return std::nullopt;
    if (unknown_at) {
      verdict v{status::unknown, unknown_a.from, *unknown_at, reason_text(unknown_a)};
      if (unknown_b.st == status::unknown) {
        if (v.from == source::none) v.from = unknown_b.from;
        v.reason += "; " + reason_text(unknown_b);
      }
      return v;
    }
    return verdict{status::good, good_from, 0, {}};
  }

  // ---- fetches -----------------------------------------------------------------------------

  // Creates the entries `needs` names, starts the fetches that may start, and registers `w`
  // as a waiter of every awaited one. Exclusive lock.
  void start(const std::vector<need>& needs, std::int64_t now, const std::shared_ptr<waiter>& w) {
    // (registration and notification both happen under `mu`, and a waiter is deregistered
    // under `mu` before its coroutine ends: a post never targets a caller that is gone)
    std::unique_lock lock(mu);
    if (stopped) return;
    bool grew = false;
    for (const need& n : needs) {
      fetch_slot* slot = nullptr;
      bool fresh_entry = false;
      if (n.ocsp) {
        auto it = ocsp.find(ocsp_key_view{n.ref->issuer, n.ref->serial});
        if (it == ocsp.end()) {
          it = ocsp.emplace(ocsp_key{n.ref->issuer, n.ref->serial}, std::make_unique<ocsp_entry>())
                   .first;
          grew = fresh_entry = true;
        }
        slot = it->second.get();
      } else {
        auto it = cdp.find(n.url);
        if (it == cdp.end()) {
          it = cdp.emplace(std::string(n.url), std::make_unique<cdp_entry>()).first;
          grew = fresh_entry = true;
        }
        slot = it->second.get();
      }
      slot->touch(now);
      if (slot->may_start(now) || fresh_entry) {
        slot->in_flight = true;
        launch(n);
      }
      if (w && n.wait && slot->in_flight) {
        slot->waiters.push_back(w);
        w->registered.push_back(slot);
        ++w->pending;
      }
    }
    if (grew) {
      evict(cdp, opts.cache_max_crls);
      evict(ocsp, opts.cache_max_ocsp);
      entries[1]->set(static_cast<std::int64_t>(cdp.size()));
      entries[2]->set(static_cast<std::int64_t>(ocsp.size()));
    }
  }

  // Drops the least recently used entries that nothing waits for, down to 15/16 of `max`
  // (in batches: eviction scans the map).
  template <class Map>
  static void evict(Map& m, std::size_t max) {
    if (m.size() <= max) return;
    const std::size_t target = max - max / 16;
    std::vector<std::pair<std::int64_t, typename Map::iterator>> candidates;
    for (auto it = m.begin(); it != m.end(); ++it)
      if (!it->second->in_flight && it->second->waiters.empty())
        candidates.emplace_back(it->second->last_used.load(std::memory_order_relaxed), it);
    const std::size_t drop = std::min(candidates.size(), m.size() - target);
    std::nth_element(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(drop),
                     candidates.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 0; i < drop; ++i) m.erase(candidates[i].second);
  }

  void launch(const need& n) {
    const std::size_t k = n.ocsp ? 1 : 0;
    fetches[k]->inc();
    auto fetch = n.ocsp ? fetch_ocsp(std::string(n.url), n.ref->issuer, n.ref->serial, opts)
                        : fetch_cdp(std::string(n.url), opts);
    net::co_spawn(ioc, std::move(fetch), [](const std::exception_ptr&) {});
  }

  // Precondition: `mu` held exclusively.
  static void notify(fetch_slot& slot) {
    for (auto& w : slot.waiters) {
      std::erase(w->registered, &slot);
      net::post(w->timer.get_executor(), [w] {
        if (w->pending > 0 && --w->pending == 0) w->timer.cancel();
      });
    }
    slot.waiters.clear();
  }

  void deregister(waiter& w) {
    std::unique_lock lock(mu);
    for (fetch_slot* slot : w.registered)
      std::erase_if(slot->waiters, [&w](const auto& p) { return p.get() == &w; });
    w.registered.clear();
  }

  void fetch_failed(std::size_t kind, fetch_slot& e, std::string_view what, fetch_error why,
                    const std::string& message, std::int64_t now) {
    e.error = std::string(what) + ": " + message;
    e.error_until = now + opts.retry_after.count();
    fetch_errors[kind]->inc(detail::to_string(why));
    log->warn("revocation: {}; status unknown, retry after {}s", e.error, opts.retry_after.count());
  }

  net::awaitable<void> fetch_cdp(std::string url, options o) {
    std::shared_ptr<const detail::crl_index> crl;
    fetch_error why = fetch_error::none;
    std::string message;
    try {
      auto r = co_await detail::http_exchange(url, {}, {}, o.max_crl_bytes, o.timeout);
      why = r.error;
      message = std::move(r.message);
      if (why == fetch_error::none) {
        ossl::bio_ptr bio{BIO_new_mem_buf(r.body.data(), static_cast<int>(r.body.size()))};
        std::string err;
        auto crls = bio ? detail::parse_crls(bio.get(), err) : decltype(detail::parse_crls(nullptr, err)){};
        if (crls.size() != 1) {
          why = fetch_error::malformed;
          message = crls.empty() ? err : "more than one CRL";
        } else if (crl = detail::index_crl(crls.front().get(), *issuers, url, err); !crl) {
          why = err.starts_with("bad signature") ? fetch_error::signature : fetch_error::other;
          message = err;
        } else if (fresh(*crl, unix_now(), o.max_clock_skew.count()) != freshness::ok) {
          why = fetch_error::stale;
          message = "stale: the CRL served is past its nextUpdate (or not yet valid)";
          crl = nullptr;
        }
      }
    } catch (const std::exception& e) {
      why = fetch_error::other;
      message = e.what();
      crl = nullptr;
    }
    const std::int64_t now = unix_now();
    {
      std::unique_lock lock(mu);
      const auto it = cdp.find(url);
      if (it == cdp.end()) co_return;
      cdp_entry& e = *it->second;
      e.in_flight = false;
      if (crl) {
        if (!e.crl || e.crl->issuer != crl->issuer || crl->this_update >= e.crl->this_update)
          e.crl = crl;
        e.error.clear();
        e.error_until = 0;
        const std::int64_t until =
            e.crl->next_update ? *e.crl->next_update : now + o.default_lifetime.count();
        e.refresh_at = std::max(until - o.refresh_ahead.count(), now + o.retry_after.count());
      } else {
        fetch_failed(0, e, "cdp " + url, why, message, now);
      }
      notify(e);
    }
    if (crl)
      log->info("revocation: cdp {}: CRL with {} entries, nextUpdate {}", url, crl->serials.size(),
                crl->next_update ? std::to_string(*crl->next_update) : std::string("none"));
  }

  net::awaitable<void> fetch_ocsp(std::string url, identity::issuer_id issuer, std::string serial,
                                  options o) {
    detail::ocsp_result res;
    try {
      ossl::x509_ptr ca = issuers->find(issuer);
      std::string err;
      std::string req = ca ? detail::make_ocsp_request(ca.get(), serial, err) : std::string();
      if (!ca) {
        res.error = fetch_error::other;
        res.message = "the certificate's issuer is not a known CA";
      } else if (req.empty()) {
        res.error = fetch_error::other;
        res.message = err;
      } else {
        auto r = co_await detail::http_exchange(url, std::move(req), "application/ocsp-request",
                                                o.max_ocsp_bytes, o.timeout);
        if (r.error != fetch_error::none) {
          res.error = r.error;
          res.message = std::move(r.message);
        } else {
          res = detail::read_ocsp_response(r.body, ca.get(), serial,
                                           static_cast<long>(o.max_clock_skew.count()));
        }
      }
    } catch (const std::exception& e) {
      res.error = fetch_error::other;
      res.message = e.what();
    }
    const std::int64_t now = unix_now();
    {
      std::unique_lock lock(mu);
      const auto it = ocsp.find(ocsp_key_view{issuer, serial});
      if (it == ocsp.end()) co_return;
      ocsp_entry& e = *it->second;
      e.in_flight = false;
      if (res.error == fetch_error::none) {
        e.has_answer = true;
        e.st = res.st;
        e.reason = res.reason;
        e.error.clear();
        e.error_until = 0;
        e.expires = res.next_update ? *res.next_update : now + o.default_lifetime.count();
        e.refresh_at = std::max(e.expires - o.refresh_ahead.count(), now + o.retry_after.count());
      } else {
        fetch_failed(1, e, "ocsp " + url, res.error, res.message, now);
      }
      notify(e);
    }
    if (res.error == fetch_error::none)
      log->debug("revocation: ocsp {}: {}", url, to_string(res.st));
  }

  // ---- OCSP stapling (issue 16) -----------------------------------------------------------

  static void publish_to(staple_feed::state& feed, std::shared_ptr<const std::string> der);

  net::awaitable<void> staple_loop(std::shared_ptr<staple_feed::state> feed, staple_target t);

  void stop() {
    {
      std::unique_lock lock(mu);
      stopped = true;  // no new fetches
    }
    work.reset();
    ioc.stop();
    if (thread.joinable()) thread.join();
    std::unique_lock lock(mu);
    for (auto& [k, e] : cdp) notify(*e);
    for (auto& [k, e] : ocsp) notify(*e);
  }

  mutable std::shared_mutex mu;
  options opts;
  bool stopped = false;
  std::unordered_map<std::string, std::unique_ptr<cdp_entry>, string_hash, std::equal_to<>> cdp;
  std::unordered_map<ocsp_key, std::unique_ptr<ocsp_entry>, ocsp_key_hash, ocsp_key_eq> ocsp;
  std::shared_ptr<const identity::issuer_registry> issuers;
  std::shared_ptr<spdlog::logger> log;

  std::array<std::array<observability::counter*, 4>, 4> checks{};
  std::array<observability::counter*, 2> fetches{};
  std::array<observability::labeled_counter*, 2> fetch_errors{};
  std::array<observability::gauge*, 3> entries{};

  net::io_context ioc{1};
  net::executor_work_guard<net::io_context::executor_type> work;
  std::thread thread;
};

// The feed's side shared by its owner (any thread) and its loop (the fetch thread).
struct staple_feed::state {
  std::mutex mu;
  bool stopped = false;               // under mu
  staple_publish publish;             // under mu; cleared on stop
  std::weak_ptr<void> checker;        // the checker's state: where to post the cancel
  net::io_context* ioc = nullptr;     // the fetch thread's context (valid while `checker` is)
  net::steady_timer* timer = nullptr; // the loop's wait; touched on the fetch thread only
};

staple_feed::~staple_feed() {
  {
    std::lock_guard lock(state_->mu);
    state_->stopped = true;
    state_->publish = nullptr;
  }
  // Wake the loop so that it ends now rather than at its next refresh (it may sleep hours).
  if (auto alive = state_->checker.lock())
    net::post(*state_->ioc, [s = state_] {
      if (s->timer) s->timer->cancel();
    });
}

void checker::state::publish_to(staple_feed::state& feed, std::shared_ptr<const std::string> der) {
  std::lock_guard lock(feed.mu);
  if (!feed.stopped && feed.publish) feed.publish(std::move(der));
}

// GCC 12 reports a false -Wmismatched-new-delete on this coroutine's frame (as in fetch.cpp:
// Asio's awaitable frames pair their own operator new and delete).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
net::awaitable<void> checker::state::staple_loop(std::shared_ptr<staple_feed::state> feed,
                                                 staple_target t) {
  net::steady_timer timer(co_await net::this_coro::executor);
  feed->timer = &timer;
  struct detach {
    staple_feed::state& f;
    ~detach() { f.timer = nullptr; }
  } const detached{*feed};

  const auto* p = reinterpret_cast<const unsigned char*>(t.leaf_der.data());
  ossl::x509_ptr leaf{d2i_X509(nullptr, &p, static_cast<long>(t.leaf_der.size()))};
  p = reinterpret_cast<const unsigned char*>(t.issuer_der.data());
  ossl::x509_ptr issuer{d2i_X509(nullptr, &p, static_cast<long>(t.issuer_der.size()))};
  if (!leaf || !issuer) {
    log->error("ocsp stapling: {}: unreadable certificate; no staple", t.name);
    co_return;
  }
  const std::string serial = identity::serial_octets(X509_get0_serialNumber(leaf.get()));
  std::int64_t good_until = 0;  // nextUpdate of the response being stapled; 0 = none
  while (true) {
    options o;
    {
      std::shared_lock lock(mu);
      if (stopped) co_return;
      o = opts;
    }
    {
      std::lock_guard lock(feed->mu);
      if (feed->stopped) co_return;
    }
    detail::ocsp_result res;
    std::string body;
    std::string err;
    std::string req = detail::make_ocsp_request(issuer.get(), serial, err);
    if (req.empty()) {
      res.error = fetch_error::other;
      res.message = err;
    } else {
      auto r = co_await detail::http_exchange(t.url, std::move(req), "application/ocsp-request",
                                              o.max_ocsp_bytes, o.timeout);
      if (r.error != fetch_error::none) {
        res.error = r.error;
        res.message = std::move(r.message);
      } else {
        res = detail::read_ocsp_response(r.body, issuer.get(), serial,
                                         static_cast<long>(o.max_clock_skew.count()));
        body = std::move(r.body);
      }
    }
    const std::int64_t now = unix_now();
    std::int64_t wait = o.retry_after.count();
    if (res.error == fetch_error::none && res.st == status::good) {
      const std::int64_t expires =
          res.next_update ? *res.next_update : now + o.default_lifetime.count();
      // Refresh well before clients would reject it: refresh_ahead before nextUpdate, or
      // halfway through its validity when that is earlier (short-lived responses).
      const std::int64_t halfway = res.this_update + (expires - res.this_update) / 2;
      const std::int64_t refresh = std::min(expires - o.refresh_ahead.count(), halfway);
      wait = std::max(refresh - now, o.retry_after.count());
      good_until = expires;
      publish_to(*feed, std::make_shared<const std::string>(std::move(body)));
      log->info("ocsp stapling: {}: good response from {}, nextUpdate {}, refresh in {}s",
                t.name, t.url, expires, wait);
    } else if (res.error == fetch_error::none) {
      // The responder says revoked or unknown: stapling that would only make clients refuse
      // us with a proof; serve without a staple and say so loudly.
      good_until = 0;
      publish_to(*feed, nullptr);
      log->error("ocsp stapling: {}: responder {} says {}{}; no staple", t.name, t.url,
                 to_string(res.st), res.reason.empty() ? "" : " (" + std::string(res.reason) + ")");
    } else {
      if (good_until != 0 && now >= good_until) {
        good_until = 0;
        publish_to(*feed, nullptr);
      }
      // Retry soon, and never sleep past the expiry of what is stapled.
      if (good_until != 0) wait = std::max<std::int64_t>(1, std::min(wait, good_until - now));
      log->warn("ocsp stapling: {}: {}: {}; {}, retry in {}s", t.name, t.url, res.message,
                good_until ? "keeping the last good response" : "no staple", wait);
    }
    timer.expires_after(std::chrono::seconds(wait));
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
  }
}
#pragma GCC diagnostic pop

checker::checker(options opts, std::shared_ptr<const identity::issuer_registry> issuers,
                 observability::registry& metrics)
    : state_(std::make_shared<state>(opts, std::move(issuers), metrics)) {
  state_->thread = std::thread([st = state_.get()] { st->ioc.run(); });
}

checker::~checker() { state_->stop(); }

void checker::set_options(const options& opts) {
  std::unique_lock lock(state_->mu);
  state_->opts = opts;
}

std::optional<verdict> checker::try_check(const identity::chain_refs& chain, const policy& p,
                                          std::int64_t now) const {
  std::vector<need> needs;
  std::optional<verdict> v;
  {
    std::shared_lock lock(state_->mu);
    v = state_->evaluate(chain, p, now, needs, false);
  }
  if (!needs.empty()) state_->start(needs, now, nullptr);
  return v;
}

boost::asio::awaitable<verdict> checker::async_check(identity::chain_refs chain, policy p,
                                                     boost::asio::any_io_executor ex) {
  const std::shared_ptr<state> st = state_;  // the coroutine may outlive the checker
  clock::time_point deadline;
  {
    std::shared_lock lock(st->mu);
    deadline = clock::now() + st->opts.timeout;
  }
  auto w = std::make_shared<waiter>(ex);
  struct deregistration {
    state& s;
    waiter& w;
    ~deregistration() { s.deregister(w); }
  } const dereg{*st, *w};
  // Each round either answers or waits for at least one fetch; a fetch failure is remembered
  // (retry_after), so the rounds end; the bound is a safety net.
  for (int round = 0; round < 8; ++round) {
    std::vector<need> needs;
    std::optional<verdict> v;
    const std::int64_t now = unix_now();
    {
      std::shared_lock lock(st->mu);
      v = st->evaluate(chain, p, now, needs, false);
    }
    if (!needs.empty()) st->start(needs, now, v ? nullptr : w);
    if (v) co_return std::move(*v);
    if (w->pending == 0) continue;
    if (clock::now() >= deadline) break;
    w->timer.expires_at(deadline);
    auto [ec] = co_await w->timer.async_wait(net::as_tuple(net::use_awaitable));
    if (!ec) break;  // the deadline passed
    std::shared_lock lock(st->mu);
    if (st->stopped) break;
  }
  std::vector<need> ignored;
  std::shared_lock lock(st->mu);
  co_return *st->evaluate(chain, p, unix_now(), ignored, true);
}

void checker::count(const verdict& v, bool allowed_by_fail_open) noexcept {
  std::size_t outcome = static_cast<std::size_t>(v.state);
  if (v.state == status::unknown && allowed_by_fail_open) outcome = 3;
  state_->checks[static_cast<std::size_t>(v.from)][outcome]->inc();
}

void checker::set_file_crl_count(std::size_t n) noexcept {
  state_->entries[0]->set(static_cast<std::int64_t>(n));
}

std::unique_ptr<staple_feed> checker::keep_stapled(staple_target target, staple_publish publish) {
  auto feed = std::make_shared<staple_feed::state>();
  feed->publish = std::move(publish);
  feed->checker = state_;
  feed->ioc = &state_->ioc;
  {
    std::shared_lock lock(state_->mu);
    if (!state_->stopped)
      net::co_spawn(state_->ioc, state_->staple_loop(feed, std::move(target)),
                    [](const std::exception_ptr&) {});
  }
  return std::make_unique<staple_feed>(std::move(feed));
}

std::size_t checker::cdp_entries() const {
  std::shared_lock lock(state_->mu);
  return state_->cdp.size();
}

std::size_t checker::ocsp_entries() const {
  std::shared_lock lock(state_->mu);
  return state_->ocsp.size();
}

}  // namespace cbagate::revocation
