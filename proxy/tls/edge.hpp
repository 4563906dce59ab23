#pragma once
// What happens to an accepted connection before TLS (DESIGN.md step 1): the PROXY header from a
// trusted balancer (server.proxy_protocol), then the per-address limits on the client address
// it names. Either the connection is admitted with its client address, or it is refused: closed
// by the caller, counted, and logged (refusals of one address at most once a minute).
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "config/snapshot.hpp"
#include "observability/metrics.hpp"
#include "tls/address_limiter.hpp"
#include "tls/proxy_protocol.hpp"

namespace cbagate::tls {

/** The counters of this step, registered once per process. */
struct edge_metrics {
  explicit edge_metrics(observability::registry& r);

  observability::labeled_counter& proxy_headers;  ///< accepted headers: v1, v2, local
  observability::labeled_counter& proxy_refused;  ///< untrusted_source, malformed, truncated, timeout, io_error
  observability::labeled_counter& limit_refused;  ///< connections, handshakes
};

/** A connection that may go on to the TLS handshake. */
struct admitted_connection {
  net_address peer;    ///< the TCP peer (the balancer, behind one)
  net_address client;  ///< the client: the PROXY header's source, else the peer
  bool proxied = false;  ///< the client address came from a PROXY header
  address_limiter::slot slot;  ///< holds the client's connection count while alive

  /** "203.0.113.7" / "2001:db8::1" (v4-mapped shown as IPv4). */
  std::string client_ip() const { return client.address_string(); }
  /** "203.0.113.7:51000" / "[2001:db8::1]:51000". */
  std::string client_address() const;
};

/** Process-wide state of the step: the limiter (survives reloads) and the counters. */
class edge {
 public:
  explicit edge(observability::registry& r) : metrics_(r) {}

  /**
   * Runs the pre-TLS step on `socket` under `cfg` (the snapshot current at accept). Returns the
   * admitted connection, or nullopt when it was refused (the caller closes the socket). Never
   * throws. With proxy_protocol on, a peer outside proxy_protocol_from is refused before any
   * byte is read.
   */
  boost::asio::awaitable<std::optional<admitted_connection>> admit(
      boost::asio::ip::tcp::socket& socket, const config::snapshot& cfg);

  edge_metrics& metrics() noexcept { return metrics_; }
  address_limiter& limiter() noexcept { return limiter_; }

 private:
  edge_metrics metrics_;
  address_limiter limiter_;
};

/** The socket's peer as a net_address (family none when it cannot be read). */
net_address peer_of(const boost::asio::ip::tcp::socket& socket);

}  // namespace cbagate::tls
