#pragma once
// Everything one configuration snapshot builds that a session reads: immutable, shared by all
// I/O threads, replaced whole on reload while live sessions keep the one they started with.
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "config/snapshot.hpp"
#include "delegation/kerberos.hpp"
#include "directory/service.hpp"
#include "http/error_pages.hpp"
#include "http/flat_fields.hpp"
#include "http/metrics.hpp"
#include "http/route_metrics.hpp"
#include "identity/verifier.hpp"
#include "observability/access_log.hpp"
#include "revocation/checker.hpp"
#include "routing/route_table.hpp"
#include "tls/server_context.hpp"
#include "upstream/health.hpp"
#include "upstream/pool.hpp"

namespace cbagate::http {

/** The revocation settings every request is checked against: those of the newest runtime. */
struct revocation_current {
  revocation::policy policy;  // mode, CDP/OCSP settings, the CRL files of tls.crl
  config::fail_mode fail = config::fail_mode::closed;  // [revocation] fail (routes may override)
};

/**
 * Process-wide (owned by the server, outlives runtimes): the revocation_current of the newest
 * runtime. A kept-alive connection keeps the runtime it started with, but its next request is
 * checked against the newest CRL files (docs/revocation.md "Reload"). `generation` lets each
 * I/O thread keep its own copy and look at the shared one only after a reload.
 */
struct revocation_live {
  std::atomic<std::shared_ptr<const revocation_current>> current;
  std::atomic<std::uint64_t> generation{0};

  /** Publishes `c` (startup, reload). */
  void publish(std::shared_ptr<const revocation_current> c) {
    current.store(std::move(c), std::memory_order_release);
    generation.fetch_add(1, std::memory_order_acq_rel);
  }
};

struct runtime {
  std::shared_ptr<const config::snapshot> cfg;
  std::shared_ptr<const identity::verifier> verifier;
  std::unique_ptr<tls::server_context> tls;
  /** tls.ocsp_stapling = "auto": the refreshes filling tls's staples (declared after `tls`,
   *  so they stop before it goes). */
  std::vector<std::unique_ptr<revocation::staple_feed>> staples;
  routing::route_table routes;
  std::shared_ptr<upstream::client_tls> upstream_tls;
  std::shared_ptr<delegation::kerberos_delegator> kerberos;  // identity.mode = "kerberos" only
  std::shared_ptr<directory::service> directory;  // auth.mapping = "directory" only (issue 12)
  observability::access_log* access_log = nullptr;  // owned by the server, outlives runtimes
  http::metrics* metrics = nullptr;                 // owned by the server, outlives runtimes
  /** Revocation policy of this runtime: [revocation] plus the CRL files of tls.crl, loaded
   *  when the runtime was built (docs/revocation.md). checks == off: no check at all. */
  std::shared_ptr<const revocation_current> revocation;
  revocation::checker* revocation_checker = nullptr;  // process-wide, owned by the server
  revocation_live* revocation_now = nullptr;          // process-wide, owned by the server
  /** Health of upstream.servers (issue 13); null = every server always usable. */
  std::shared_ptr<upstream::health> health;
  /** [errors]: custom pages for cbagate's own answers (issue 13); null = the built-in ones. */
  std::shared_ptr<const error_pages> custom_pages;
  /** Per-route response counters and duration histograms (issue 13); null = none. */
  std::shared_ptr<const route_metrics> routes_metrics;
};

/** What a session registers with its I/O thread so that a drain can reach it. */
struct session_handle {
  boost::asio::ip::tcp::socket* socket = nullptr;
  std::list<session_handle*>::iterator at{};  // its place in worker::sessions (O(1) removal)
  bool idle = true;        // between requests: a drain may close it at once
  bool fresh = true;       // no request served yet: a drain lets it have one (issue 15: a
                           // connection accepted just before the listener closed is no failure)
  bool close_after = false;
};

/**
 * Per-I/O-thread state. Touched only from its own thread (one io_context per thread), so it
 * needs no lock.
 */
struct worker {
  unsigned index = 0;
  unsigned count = 1;
  std::uint64_t next_conn = 0;
  std::shared_ptr<upstream::pool> pool;          // for the current runtime
  const runtime* pool_runtime = nullptr;          // which runtime `pool` was built for
  bool draining = false;
  std::list<session_handle*> sessions;

  /** Process-unique connection ids without a shared counter. */
  std::uint64_t new_conn_id() noexcept { return ++next_conn * count + index; }

  /** This thread's copy of the newest revocation settings: one relaxed-cost load per request,
   *  the shared pointer is copied only after a reload. Null when none was published. */
  const revocation_current* current_revocation(const revocation_live& live) {
    const std::uint64_t g = live.generation.load(std::memory_order_acquire);
    if (g != revocation_generation || !revocation_cache) {
      revocation_cache = live.current.load(std::memory_order_acquire);
      revocation_generation = g;
    }
    return revocation_cache.get();
  }
  std::shared_ptr<const revocation_current> revocation_cache;
  std::uint64_t revocation_generation = 0;

  /** Header storage for this thread's next messages (issue 14): each request and response
   *  header takes one and gives it back when done, so a keep-alive request allocates none for
   *  its headers, and an idle connection holds none. */
  flat_fields take_fields() noexcept {
    if (spare_fields.empty()) return {};
    flat_fields f = std::move(spare_fields.back());
    spare_fields.pop_back();
    return f;
  }
  /** Keeps `f` (cleared) for a later message: at most spare_limit, none over 16 KiB (a rare
   *  large header does not stay allocated). */
  void give_fields(flat_fields&& f) noexcept {
    static constexpr std::size_t spare_limit = 32;
    static constexpr std::size_t largest = 16384;
    if (f.capacity() == 0 || f.capacity() > largest || spare_fields.size() >= spare_limit) return;
    f.clear();
    try {
      spare_fields.push_back(std::move(f));
    } catch (...) {  // out of memory: the storage is just freed
    }
  }
  std::vector<flat_fields> spare_fields;
};

}  // namespace cbagate::http
