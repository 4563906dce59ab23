#pragma once
// The listening sockets of the traffic listeners (server.listen): bound once per I/O thread
// with SO_REUSEPORT, so the kernel spreads connections and no accept is shared across threads;
// each accepted connection goes through the edge step (tls/edge.hpp: PROXY header, per-address
// limits) and then becomes an http::run_session on its thread (STYLE.md 4 step 1).
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "config/snapshot.hpp"
#include "http/metrics.hpp"
#include "http/runtime.hpp"
#include "io_thread.hpp"
#include "operations.hpp"
#include "tls/edge.hpp"

namespace cbagate {

/** What the accept loops read for each new connection; owned by the server, outlives them. */
struct listener_env {
  const std::atomic<std::shared_ptr<const http::runtime>>& runtime;  // the current one
  http::metrics& metrics;  // connections_active (server.max_connections), connections_total
  tls::edge& edge;         // before TLS: the PROXY header, the per-address limits
  operations* ops = nullptr;  // accept errors: counted, logged at most once a second
};

/**
 * Opens every address of cfg.server.listen on every I/O thread (an acceptor each, in
 * `io_thread::acceptors`). Port 0 is resolved by the first bind and reused for the others.
 * @param bound receives the bound endpoint of each address, in configuration order.
 * @return false with `error` ("server.listen: cannot listen on host:port: reason") when an
 *   address is bad or cannot be bound; nothing is accepting yet either way.
 * Call before the threads run.
 */
bool bind_listeners(const config::snapshot& cfg, std::vector<std::unique_ptr<io_thread>>& threads,
                    std::vector<boost::asio::ip::tcp::endpoint>& bound, std::string& error);

/** Starts the accept loops of `t`'s acceptors on its io_context. `env` must outlive them. */
void start_listeners(io_thread& t, const listener_env& env);

/** Closes `t`'s acceptors (a drain): their accept loops end. Run on `t`'s thread. */
void close_listeners(io_thread& t);

}  // namespace cbagate
