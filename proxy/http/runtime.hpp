#pragma once
// Everything one configuration snapshot builds that a session reads: immutable, shared by all
// I/O threads, replaced whole on reload while live sessions keep the one they started with.
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>

#include "config/snapshot.hpp"
#include "delegation/kerberos.hpp"
#include "http/metrics.hpp"
#include "identity/verifier.hpp"
#include "observability/access_log.hpp"
#include "routing/route_table.hpp"
#include "tls/server_context.hpp"
#include "upstream/pool.hpp"

namespace cbagate::http {

struct runtime {
  std::shared_ptr<const config::snapshot> cfg;
  std::shared_ptr<const identity::verifier> verifier;
  std::unique_ptr<tls::server_context> tls;
  routing::route_table routes;
  std::shared_ptr<upstream::client_tls> upstream_tls;
  std::shared_ptr<delegation::kerberos_delegator> kerberos;  // identity.mode = "kerberos" only
  observability::access_log* access_log = nullptr;  // owned by the server, outlives runtimes
  http::metrics* metrics = nullptr;                 // owned by the server, outlives runtimes
};

/** What a session registers with its I/O thread so that a drain can reach it. */
struct session_handle {
  boost::asio::ip::tcp::socket* socket = nullptr;
  bool idle = true;        // between requests: a drain may close it at once
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
};

}  // namespace cbagate::http
