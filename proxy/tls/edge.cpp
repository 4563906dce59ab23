#include "tls/edge.hpp"

#include <cstring>

#include "observability/log.hpp"
#include "tls/proxy_header_reader.hpp"

namespace cbagate::tls {
namespace {

namespace net = boost::asio;

std::string with_port(const net_address& a) {
  const std::string ip = a.address_string();
  if (ip.empty()) return "?";
  const bool v6 = a.unmapped().fam == net_address::family::v6;
  return (v6 ? "[" + ip + "]" : ip) + ":" + std::to_string(a.port);
}

}  // namespace

edge_metrics::edge_metrics(observability::registry& r)
    : proxy_headers(r.add_labeled_counter("cbagate_proxy_protocol_headers_total",
                                          "PROXY protocol headers accepted, by kind", "kind",
                                          {"v1", "v2", "local"})),
      proxy_refused(r.add_labeled_counter(
          "cbagate_proxy_protocol_refused_total",
          "Connections closed before TLS for their PROXY header, by reason", "reason",
          {"untrusted_source", "malformed", "truncated", "timeout", "io_error"})),
      limit_refused(r.add_labeled_counter(
          "cbagate_address_limit_refused_total",
          "Connections refused before TLS by a per-address limit", "limit",
          {"connections", "handshakes"})) {}

std::string admitted_connection::client_address() const { return with_port(client); }

net_address peer_of(const net::ip::tcp::socket& socket) {
  net_address a;
  boost::system::error_code ec;
  const auto ep = socket.remote_endpoint(ec);
  if (ec) return a;
  a.port = ep.port();
  const auto addr = ep.address();
  if (addr.is_v4()) {
    a.fam = net_address::family::v4;
    const auto b = addr.to_v4().to_bytes();
    std::memcpy(a.bytes.data(), b.data(), b.size());
  } else {
    a.fam = net_address::family::v6;
    const auto b = addr.to_v6().to_bytes();
    std::memcpy(a.bytes.data(), b.data(), b.size());
  }
  return a.unmapped();
}

net::awaitable<std::optional<admitted_connection>> edge::admit(net::ip::tcp::socket& socket,
                                                               const config::snapshot& cfg) {
  admitted_connection c;
  c.peer = peer_of(socket);
  c.client = c.peer;
  const auto& server = cfg.server;
  if (server.proxy_protocol) {
    // Only the configured balancers may name a client address: from anyone else a PROXY header
    // would let a client choose the address that is logged, forwarded and limited.
    bool trusted = false;
    for (const config::cidr& range : server.proxy_protocol_from) trusted = trusted || c.peer.in(range);
    if (!trusted) {
      metrics_.proxy_refused.inc("untrusted_source");
      if (limiter_.should_log(c.peer, address_limiter::clock::now()))
        observability::logger("tls")->warn(
            "proxy_protocol: connections from {} refused: not in server.proxy_protocol_from "
            "(counted in cbagate_proxy_protocol_refused_total, logged again in a minute)",
            c.peer.address_string());
      co_return std::nullopt;
    }
    const auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(cfg.timeouts.proxy_header);
    const proxy_read r = co_await read_proxy_header(socket, timeout);
    if (r.result != proxy_read::outcome::ok) {
      const std::string why = r.describe();
      metrics_.proxy_refused.inc(why.substr(0, why.find(':')));
      // A balancer that sends bad headers is a configuration problem worth a warning; a peer
      // that went away is not.
      auto& log = *observability::logger("tls");
      if (r.result == proxy_read::outcome::invalid)
        log.warn("proxy_protocol: connection from {} closed: {} header after {} bytes (is the "
                 "balancer set to send-proxy or send-proxy-v2?)",
                 with_port(c.peer), why, r.bytes_seen);
      else
        log.info("proxy_protocol: connection from {} closed: {} before a complete header ({} bytes)",
                 with_port(c.peer), why, r.bytes_seen);
      co_return std::nullopt;
    }
    if (r.header.local) {
      metrics_.proxy_headers.inc("local");
    } else {
      metrics_.proxy_headers.inc(r.header.version == 1 ? "v1" : "v2");
      c.client = r.header.source.unmapped();
      c.proxied = true;
    }
  }
  const address_limiter::limits limits{.max_connections = server.max_connections_per_address,
                                       .handshakes_per_second = server.max_handshakes_per_address};
  auto a = limiter_.admit(c.client, limits, address_limiter::clock::now());
  if (a.result != address_limiter::verdict::admitted) {
    const bool conns = a.result == address_limiter::verdict::too_many_connections;
    metrics_.limit_refused.inc(conns ? "connections" : "handshakes");
    if (a.log)
      observability::logger("tls")->warn(
          "limits: connections from {} refused: {} (further refusals of this address are counted "
          "in cbagate_address_limit_refused_total, logged again in a minute)",
          c.client.address_string(),
          conns ? "server.max_connections_per_address (" + std::to_string(limits.max_connections) +
                      " open) reached"
                : "server.max_handshakes_per_address (" +
                      std::to_string(limits.handshakes_per_second) + " per second) exceeded");
    co_return std::nullopt;
  }
  c.slot = std::move(a.held);
  co_return c;
}

}  // namespace cbagate::tls
