#include "admin/admin_server.hpp"

#include "admin/endpoints.hpp"
#include "admin/error.hpp"
#include "observability/log.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <charconv>
#include <chrono>
#include <exception>
#include <list>

namespace cbagate::admin {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

// Room for a full header plus what a pipelining client sends behind it; the parser's
// header_limit fires first, so an oversized header gets 431 and not a buffer error.
constexpr std::size_t read_buffer_limit = 2 * admin_header_limit;

constexpr auto accept_retry_delay = std::chrono::milliseconds(100);

}  // namespace

namespace detail {

// Everything the admin coroutines touch, shared with them so that destroying the admin_server
// object while they wind down is harmless.
struct admin_state {
  admin_state(net::any_io_executor ex, const observability::registry& reg, std::function<bool()> rdy,
        std::function<std::string()> cfg, std::function<std::string()> certs, admin_options opts)
      : strand(net::make_strand(std::move(ex))),
        acceptor(strand),
        registry(reg),
        ready(std::move(rdy)),
        config_json(std::move(cfg)),
        certs_json(std::move(certs)),
        options(opts),
        log(observability::logger("admin")) {}

  net::strand<net::any_io_executor> strand;
  tcp::acceptor acceptor;
  const observability::registry& registry;
  std::function<bool()> ready;
  std::function<std::string()> config_json;
  std::function<std::string()> certs_json;
  std::function<std::string()> not_ready_reason;  // set before start(); empty = use `ready`
  admin_options options;
  std::shared_ptr<spdlog::logger> log;
  std::atomic<bool> draining{false};
  // Touched on the strand only.
  std::list<beast::tcp_stream*> sessions;
  bool stopped = false;
  std::uint64_t next_conn_id = 1;
  // Accept errors are logged at most once a second, with the count held back (issue 13).
  std::chrono::steady_clock::time_point last_accept_log{};
  std::uint64_t accept_suppressed = 0;
};

}  // namespace detail

namespace {

using detail::admin_state;
using state_ptr = std::shared_ptr<admin_state>;

// Removes a session from the open list when its coroutine frame goes away, however it ends.
class session_entry {
 public:
  session_entry(std::list<beast::tcp_stream*>& list, beast::tcp_stream& s)
      : list_(list), it_(list.insert(list.end(), &s)) {}
  session_entry(const session_entry&) = delete;
  session_entry& operator=(const session_entry&) = delete;
  ~session_entry() { list_.erase(it_); }

 private:
  std::list<beast::tcp_stream*>& list_;
  std::list<beast::tcp_stream*>::iterator it_;
};

http::response<http::string_body> make_response(reply r, unsigned version, bool keep_alive) {
  http::response<http::string_body> res{static_cast<http::status>(r.status), version};
  res.set(http::field::content_type, r.content_type);
  res.set(http::field::cache_control, "no-store");
  if (!r.allow.empty()) {
    res.set(http::field::allow, r.allow);
  }
  res.keep_alive(keep_alive);
  res.body() = std::move(r.body);
  res.prepare_payload();
  return res;
}

net::awaitable<beast::error_code> send(beast::tcp_stream& stream, const admin_state& st,
                                       http::response<http::string_body> res) {
  stream.expires_after(st.options.io_timeout);
  auto [ec, n] = co_await http::async_write(stream, res, use_tuple);
  co_return ec;
}

bool is_parse_error(const beast::error_code& ec) {
  return ec.category() == beast::http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

net::awaitable<void> run_session(state_ptr st, tcp::socket socket, std::uint64_t conn_id) {
  beast::tcp_stream stream(std::move(socket));
  const session_entry entry(st->sessions, stream);
  beast::flat_buffer buffer(read_buffer_limit);

  for (;;) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(admin_header_limit));
    stream.expires_after(st->options.io_timeout);
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      reply r{431, "text/plain; charset=utf-8", "request header too large\n", {}};
      co_await send(stream, *st, make_response(std::move(r), 11, false));
      break;
    }
    if (is_parse_error(ec)) {
      st->log->debug("conn={} admin: bad request: {}", conn_id, ec.message());
      reply r{400, "text/plain; charset=utf-8", "bad request\n", {}};
      co_await send(stream, *st, make_response(std::move(r), 11, false));
      break;
    }
    if (ec) {
      // Peer closed, idle timeout, or stop(): all expected ends of an admin connection.
      st->log->debug("conn={} admin: connection ends: {}", conn_id, ec.message());
      break;
    }

    const auto& req = parser.get();
    const endpoint_sources src{st->registry, st->ready, st->config_json, st->certs_json,
                               st->draining.load(std::memory_order_relaxed), &st->not_ready_reason};
    reply r = answer(req.method_string(), req.target(), src);
    // A body we do not read would be parsed as the next request: answer, then close.
    const bool keep_alive = req.keep_alive() && parser.is_done() && !st->stopped;
    st->log->debug("conn={} admin: {} {} -> {}", conn_id, req.method_string(), req.target(), r.status);
    const auto wec = co_await send(stream, *st, make_response(std::move(r), req.version(), keep_alive));
    if (wec) {
      st->log->debug("conn={} admin: write failed: {}", conn_id, wec.message());
      break;
    }
    if (!keep_alive) {
      break;
    }
  }
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

void on_coroutine_end(const state_ptr& st, std::string_view what, std::exception_ptr e) {
  if (!e) {
    return;
  }
  // An exception reaching here is a bug (STYLE.md 5.2): log it, the listener keeps going.
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    st->log->error("admin: {} ended with an exception: {}", what, ex.what());
  } catch (...) {
    st->log->error("admin: {} ended with an unknown exception", what);
  }
}

net::awaitable<void> accept_loop(state_ptr st) {
  for (;;) {
    auto [ec, socket] = co_await st->acceptor.async_accept(use_tuple);
    if (st->stopped || !st->acceptor.is_open()) {
      co_return;
    }
    if (ec) {
      // EMFILE/ENFILE/ENOBUFS: back off instead of spinning; the loop ends once stop() closed
      // the acceptor.
      // Logged at most once a second (out of descriptors, every retry fails).
      const auto now = std::chrono::steady_clock::now();
      if (now - st->last_accept_log < std::chrono::seconds(1)) {
        ++st->accept_suppressed;
      } else {
        st->last_accept_log = now;
        if (st->accept_suppressed > 0)
          st->log->warn("admin: accept failed: {}; retrying ({} more in the last second)",
                        ec.message(), st->accept_suppressed);
        else
          st->log->warn("admin: accept failed: {}; retrying", ec.message());
        st->accept_suppressed = 0;
      }
      net::steady_timer timer(st->strand, accept_retry_delay);
      co_await timer.async_wait(use_tuple);
      continue;
    }
    const std::uint64_t conn_id = st->next_conn_id++;
    if (st->sessions.size() >= st->options.max_connections) {
      st->log->warn("conn={} admin: {} connections open, closing the new one", conn_id,
                    st->sessions.size());
      beast::error_code ignored;
      socket.close(ignored);
      continue;
    }
    net::co_spawn(st->strand, run_session(st, std::move(socket), conn_id),
                  [st](std::exception_ptr e) { on_coroutine_end(st, "session", e); });
  }
}

}  // namespace

expected<tcp::endpoint> parse_endpoint(std::string_view s) noexcept {
  std::string_view host;
  std::string_view port;
  if (s.starts_with('[')) {
    const auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return make_error_code(errc::bad_endpoint);
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos || s.find(':') != colon) {
      return make_error_code(errc::bad_endpoint);
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  unsigned value = 0;
  const auto [end, perr] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || perr != std::errc{} || end != port.data() + port.size() || value > 65535) {
    return make_error_code(errc::bad_endpoint);
  }
  boost::system::error_code ec;
  const auto addr = net::ip::make_address(std::string(host), ec);
  if (ec) {
    return make_error_code(errc::bad_endpoint);
  }
  return tcp::endpoint(addr, static_cast<unsigned short>(value));
}

admin_server::admin_server(net::any_io_executor executor, std::string endpoint,
                           const observability::registry& metrics, std::function<bool()> ready,
                           std::function<std::string()> config_json,
                           std::function<std::string()> certs_json, admin_options options)
    : endpoint_(std::move(endpoint)),
      state_(std::make_shared<detail::admin_state>(std::move(executor), metrics, std::move(ready),
                                     std::move(config_json), std::move(certs_json), options)) {}

admin_server::~admin_server() { stop(); }

expected<void> admin_server::listen() {
  auto ep = parse_endpoint(endpoint_);
  if (!ep) {
    return ep.error();
  }
  auto& acceptor = state_->acceptor;
  boost::system::error_code ec;
  const auto fail = [&](boost::system::error_code e) -> expected<void> {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    state_->log->error("admin: cannot listen on {}: {}", endpoint_, e.message());
    return e;
  };
  if (acceptor.open(ep->protocol(), ec); ec) {
    return fail(ec);
  }
  if (acceptor.set_option(net::socket_base::reuse_address(true), ec); ec) {
    return fail(ec);
  }
  if (acceptor.bind(*ep, ec); ec) {
    return fail(ec);
  }
  if (acceptor.listen(net::socket_base::max_listen_connections, ec); ec) {
    return fail(ec);
  }
  local_ = acceptor.local_endpoint(ec);
  if (ec) {
    return fail(ec);
  }
  state_->log->info("admin: listening on {}:{}", local_.address().to_string(), local_.port());
  return {};
}

void admin_server::start() {
  if (!state_->acceptor.is_open()) {
    state_->log->warn("admin: start() without a successful listen(); not serving");
    return;
  }
  net::co_spawn(state_->strand, accept_loop(state_),
                [st = state_](std::exception_ptr e) { on_coroutine_end(st, "accept loop", e); });
}

void admin_server::stop() {
  net::dispatch(state_->strand, [st = state_] {
    if (st->stopped) {
      return;
    }
    st->stopped = true;
    boost::system::error_code ignored;
    st->acceptor.close(ignored);
    for (beast::tcp_stream* s : st->sessions) {
      s->close();
    }
  });
}

void admin_server::set_readiness(std::function<std::string()> reason) {
  state_->not_ready_reason = std::move(reason);
}

void admin_server::set_draining(bool draining) noexcept {
  state_->draining.store(draining, std::memory_order_relaxed);
}

}  // namespace cbagate::admin
