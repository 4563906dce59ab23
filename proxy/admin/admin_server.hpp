#pragma once
// The admin listener: plain HTTP/1.1 on its own socket (never a traffic listener), serving
// /healthz, /readyz, /metrics, /config and /certs (see endpoints.hpp).
#include "common/expected.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace cbagate::observability {
class registry;
}

namespace cbagate::admin {

namespace detail {
struct admin_state;
}

/** Limits of the admin listener. Every wait has a deadline and the connection count is capped. */
struct admin_options {
  /** Deadline for reading one request header (also the keep-alive idle time) and for writing
   *  one reply. */
  std::chrono::milliseconds io_timeout{10'000};
  /** Connections served at once; further ones are closed right after accept. */
  std::size_t max_connections = 16;
};

/** Request headers larger than this get 431 and the connection is closed. */
inline constexpr std::size_t admin_header_limit = 8 * 1024;

/**
 * Parses "ip:port" or "[ipv6]:port" (IP literals only: no DNS lookups; port 0 = any).
 * @return errc::bad_endpoint otherwise. Pure.
 */
expected<boost::asio::ip::tcp::endpoint> parse_endpoint(std::string_view s) noexcept;

/**
 * The admin HTTP server.
 *
 * Any address is accepted, but the endpoints are unauthenticated and /config and /certs show the
 * deployment's layout: keep the default 127.0.0.1 (or a management network behind a firewall);
 * binding a public address exposes them to everyone who can reach the port.
 *
 * All sockets and sessions run on one strand of the given executor. Each connection serves
 * requests with keep-alive; header limit admin_header_limit; a request with a body is answered
 * and the connection closed (the body is not read). HTTP/1.0 and 1.1.
 *
 * Lifetime: the registry and whatever the callbacks capture must outlive the server's work on
 * the executor, i.e. until stop() has been called and the io_context has run the admin
 * coroutines to completion (or has been destroyed). Destroy the server before its io_context.
 * Thread-safety: listen(), local_endpoint() and start() from one control thread, in that order;
 * stop() and set_draining() from any thread.
 */
class admin_server {
 public:
  /**
   * @param endpoint    "127.0.0.1:9100", "[::1]:9100"; port 0 picks a free port.
   * @param metrics     rendered on GET /metrics.
   * @param ready       GET /readyz: 200 when it returns true. Called on the admin strand:
   *                    cheap, non-blocking, thread-safe. Empty = never ready.
   * @param config_json GET /config body (already redacted); empty callback = 404.
   * @param certs_json  GET /certs body; empty callback = 404.
   */
  admin_server(boost::asio::any_io_executor executor, std::string endpoint,
               const observability::registry& metrics, std::function<bool()> ready,
               std::function<std::string()> config_json = {},
               std::function<std::string()> certs_json = {}, admin_options options = {});
  admin_server(const admin_server&) = delete;
  admin_server& operator=(const admin_server&) = delete;
  /** Calls stop(). */
  ~admin_server();

  /**
   * Opens, binds and listens (SO_REUSEADDR). Call once before start().
   * @return errc::bad_endpoint for a malformed endpoint, or the system error of the socket call
   *         (address in use, permission denied, address not available).
   */
  expected<void> listen();

  /** The bound endpoint (the actual port when 0 was asked). Valid after a successful listen(). */
  boost::asio::ip::tcp::endpoint local_endpoint() const { return local_; }

  /** Starts the accept loop on the strand. Does nothing unless listen() succeeded. */
  void start();

  /**
   * Closes the acceptor and every open admin connection (in-flight replies are abandoned).
   * Afterwards the server holds no work on the executor. Idempotent; thread-safe.
   */
  void stop();

  /**
   * Makes /readyz answer from `reason` ("" = ready, else 503 "not ready: <reason>") instead of
   * the ready callback. Call before start(); `reason` runs on the admin strand: cheap,
   * non-blocking, thread-safe.
   */
  void set_readiness(std::function<std::string()> reason);

  /** While set, /readyz answers 503 "draining" whatever the ready callback says. Thread-safe. */
  void set_draining(bool draining) noexcept;

 private:
  std::string endpoint_;
  boost::asio::ip::tcp::endpoint local_;
  std::shared_ptr<detail::admin_state> state_;  // shared with the coroutines, so they never outlive it
};

}  // namespace cbagate::admin
