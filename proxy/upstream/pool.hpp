#pragma once
// Backend servers and their keep-alive connection pools. One pool per I/O thread: every
// operation runs on that thread's io_context, so the pool needs no lock (STYLE.md 5.4, the
// per-event-loop option). Connections are keyed: header mode uses one key for all users;
// Kerberos mode keys by user, so a connection authenticated for one user never serves another.
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "common/expected.hpp"
#include "config/snapshot.hpp"
#include "observability/metrics.hpp"

namespace cbagate::upstream {

namespace net = boost::asio;
namespace beast = boost::beast;
using clock = std::chrono::steady_clock;

using plain_stream = beast::tcp_stream;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

/** Errors of this module, category "proxy.upstream". */
enum class errc {
  connect_failed = 1,   // every server refused or timed out
  tls_failed,           // TLS handshake with the backend failed (certificate, protocol)
  resolve_failed,       // the backend's name did not resolve
};
const boost::system::error_category& category() noexcept;
inline error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/** One backend connection, owned by exactly one session while checked out. */
struct connection {
  connection(std::variant<plain_stream, tls_stream> s, std::size_t srv, std::string k,
             std::uint64_t serial)
      : stream(std::move(s)), server(srv), key(std::move(k)), id(serial) {}
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  std::variant<plain_stream, tls_stream> stream;
  std::size_t server = 0;        // index into upstream.servers
  std::string key;               // pool key ("" in header mode, the user in Kerberos mode)
  std::uint64_t id = 0;          // per-process serial, for logs
  unsigned requests = 0;         // requests served so far
  clock::time_point idle_since{};
  // RFC 5929 tls-server-end-point of a TLS backend: the hash of its certificate with the hash
  // of the certificate's signature (SHA-256 for MD5/SHA-1). Empty for plain HTTP. Kerberos
  // tokens carry it as channel binding (Exchange Extended Protection).
  std::vector<unsigned char> tls_server_end_point{};
  // Private to the one client connection that used it (connection-bound authentication,
  // pinning.hpp): it serves only that client's later requests, never goes back to a pool and
  // is closed with that client connection. Set by make_private(), never cleared.
  bool pinned = false;
  // Kerberos mode (kerberos.persistent_auth): the backend answered cbagate's token for `key`
  // with Persistent-Auth: true, so it keeps this connection authenticated as that user (IIS
  // authPersistNonNTLM) and, until this time (the user's delegated credential's cache expiry),
  // later requests of that user on it need no new token. {} = no session; also reset when the
  // backend says otherwise (a 401, Persistent-Auth: false).
  clock::time_point kerberos_session_until{};
  observability::gauge* private_open = nullptr;  // decremented when a pinned connection closes

  template <class F>
  decltype(auto) visit(F&& f) { return std::visit(std::forward<F>(f), stream); }
  beast::tcp_stream& tcp() noexcept;
};

/**
 * Makes `c` private to the client connection that holds it (idempotent). `open`, if given, is
 * the gauge of private connections open: incremented now, decremented when `c` is destroyed;
 * it must outlive `c`.
 */
void make_private(connection& c, observability::gauge* open) noexcept;

/** The outcome of acquire(). */
struct lease {
  std::unique_ptr<connection> conn;   // null on failure
  bool reused = false;
  std::chrono::microseconds connect_time{0};
  std::string detail;                 // on failure: every server tried and why
};

/** TLS client settings shared by every pool (built once per snapshot). */
class client_tls {
 public:
  /** Builds the client context: TLS >= 1.2, peer verification against upstream.ca (or the
   *  system store), hostname verification against upstream.server_name or the URL host. */
  static std::shared_ptr<client_tls> make(const config::upstream_section& cfg, std::string& error);
  net::ssl::context& context() noexcept { return ctx_; }
  const std::string& server_name_override() const noexcept { return server_name_; }
  /** Before a handshake to `host` (a server's URL host): SNI and the name the backend's
   *  certificate must carry (upstream.server_name when set), checked as an IP address when it
   *  is an IP literal. Every upstream TLS client (the pools, the health checks) calls this. */
  void expect_peer(SSL* ssl, const std::string& host) const;

 private:
  client_tls() : ctx_(net::ssl::context::tls_client) {}
  net::ssl::context ctx_;
  std::string server_name_;
};

class health;

/** Per-I/O-thread pool over the configured servers. Not thread-safe by design. */
class pool {
 public:
  pool(net::any_io_executor ex, std::shared_ptr<const config::snapshot> cfg,
       std::shared_ptr<client_tls> tls);

  /**
   * A connection for `key`: an idle one still alive, or a new one. New connections try the
   * servers round-robin; a server whose connect failed is skipped for a short while unless all
   * are failing (failover). Each connect and TLS handshake has the upstream_connect deadline.
   */
  net::awaitable<lease> acquire(std::string key);

  /** The idle connection for `key` that acquire() would reuse, without suspending (the
   *  keep-alive fast path: no coroutine frame); null when a new connection is needed. Idle
   *  ones found dead or out of rotation on the way are closed, as acquire() does. */
  std::unique_ptr<connection> take_idle(const std::string& key);

  /** Gives a connection back after a clean exchange; it is kept idle if the pool has room.
   *  A pinned (private) connection is never kept: it is closed here. */
  void release(std::unique_ptr<connection> conn);

  /** Whether an idle connection held outside the pool (a client's private connection) can
   *  carry another request: within upstream.idle_timeout and not closed by the backend. */
  bool reusable(connection& conn) const;

  /** Closes idle connections older than upstream.idle_timeout. Cheap; called periodically. */
  void sweep();

  const config::upstream_server& server(std::size_t i) const { return cfg_->upstream.servers[i]; }
  std::size_t idle_count() const noexcept { return idle_.size(); }

  /** New connections skip servers `h` reports unusable (all are tried when none is usable),
   *  idle ones to them are not reused, and connect failures are reported to it
   *  (upstream/health.hpp). Null = no health. */
  void set_health(std::shared_ptr<health> h) noexcept { health_ = std::move(h); }

 private:
  net::awaitable<error_code> connect_one(std::size_t server, connection& out, std::string& why);

  net::any_io_executor ex_;
  std::shared_ptr<const config::snapshot> cfg_;
  std::shared_ptr<client_tls> tls_;
  std::deque<std::unique_ptr<connection>> idle_;     // most recently used at the back
  std::vector<clock::time_point> down_until_;
  std::shared_ptr<health> health_;
  std::size_t next_ = 0;
  std::uint64_t next_id_ = 1;
};

}  // namespace cbagate::upstream

template <>
struct boost::system::is_error_code_enum<cbagate::upstream::errc> : std::true_type {};
