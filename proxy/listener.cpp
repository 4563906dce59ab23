#include "listener.hpp"

#include <sys/socket.h>

#include <chrono>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "http/session.hpp"
#include "observability/log.hpp"

namespace cbagate {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

tcp::endpoint to_endpoint(const config::endpoint& e, error_code& ec) {
  std::string host = e.host;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto addr = net::ip::make_address(host.empty() ? std::string("0.0.0.0") : host, ec);
  return {addr, e.port};
}

net::awaitable<void> accept_loop(io_thread& t, tcp::acceptor& acc, const listener_env& env) {
  auto& log = *observability::logger("main");
  net::steady_timer backoff(t.ioc);
  for (;;) {
    auto [ec, socket] = co_await acc.async_accept(use_tuple);
    if (ec) {
      if (ec == net::error::operation_aborted || !acc.is_open()) co_return;
      // Out of descriptors or memory: say so (at most once a second, counted) and breathe,
      // rather than spin.
      if (env.ops != nullptr)
        env.ops->accept_failed(ec);
      else
        log.error("accept failed: {}", ec.message());
      backoff.expires_after(std::chrono::milliseconds(50));
      co_await backoff.async_wait(use_tuple);
      continue;
    }
    auto rt = env.runtime.load();
    const auto max_conn = rt->cfg->server.max_connections;
    if (max_conn && env.metrics.connections_active.value() >= static_cast<std::int64_t>(max_conn)) {
      log.warn("server.max_connections ({}) reached: connection refused", max_conn);
      continue;  // the socket closes here
    }
    env.metrics.connections_total.inc();
    // The upstream pool of this thread belongs to one runtime: a reload starts a new one.
    if (t.state.pool_runtime != rt.get()) {
      t.state.pool = std::make_shared<upstream::pool>(t.ioc.get_executor(), rt->cfg, rt->upstream_tls);
      t.state.pool->set_health(rt->health);
      t.state.pool_runtime = rt.get();
    }
    // The connection's own coroutine: the edge step (PROXY header, per-address limits), the
    // handshake and its requests (http/session.hpp).
    http::spawn_session(std::move(socket), std::move(rt), t.state, env.edge);
  }
}

}  // namespace

bool bind_listeners(const config::snapshot& cfg, std::vector<std::unique_ptr<io_thread>>& threads,
                    std::vector<tcp::endpoint>& bound, std::string& error) {
  for (const auto& listen : cfg.server.listen) {
    error_code ec;
    tcp::endpoint ep = to_endpoint(listen, ec);
    if (ec) {
      error = "server.listen: bad address '" + listen.host + "': " + ec.message();
      return false;
    }
    for (auto& t : threads) {
      auto acc = std::make_unique<tcp::acceptor>(t->ioc);
      acc->open(ep.protocol(), ec);
      if (!ec) acc->set_option(tcp::acceptor::reuse_address(true), ec);
      if (!ec) {
        int one = 1;
        if (::setsockopt(acc->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
          ec = error_code(errno, boost::system::system_category());
      }
      if (!ec) acc->bind(ep, ec);
      if (!ec) acc->listen(net::socket_base::max_listen_connections, ec);
      if (ec) {
        error = "server.listen: cannot listen on " + listen.host + ":" + std::to_string(ep.port()) +
                ": " + ec.message();
        return false;
      }
      ep = acc->local_endpoint();  // the real port, for the next threads
      t->acceptors.push_back(std::move(acc));
    }
    bound.push_back(ep);
  }
  return true;
}

void start_listeners(io_thread& t, const listener_env& env) {
  for (auto& acc : t.acceptors) net::co_spawn(t.ioc, accept_loop(t, *acc, env), net::detached);
}

void close_listeners(io_thread& t) {
  for (auto& acc : t.acceptors) {
    error_code ec;
    acc->close(ec);
  }
}

}  // namespace cbagate
