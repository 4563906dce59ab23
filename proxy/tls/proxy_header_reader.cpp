#include "tls/proxy_header_reader.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <memory>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace cbagate::tls {
namespace {

namespace net = boost::asio;
using outcome = proxy_read::outcome;

// The deadline's shared state: the timer's handler may run after the read has returned (it was
// already queued), so it must not touch the socket then.
struct watchdog {
  net::ip::tcp::socket* socket = nullptr;
  bool fired = false;
};

// The peer has shut down its sending side (FIN seen) while bytes are still unread: a peek shows
// the same bytes forever, so this is how a truncated header is told from a slow one.
bool peer_closed(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

}  // namespace

std::string proxy_read::describe() const {
  switch (result) {
    case outcome::ok: return "ok";
    case outcome::invalid: return "malformed:" + std::string(to_string(error));
    case outcome::truncated: return "truncated";
    case outcome::timeout: return "timeout";
    case outcome::io_error: return "io_error";
  }
  return "io_error";
}

net::awaitable<proxy_read> read_proxy_header(net::ip::tcp::socket& socket,
                                             std::chrono::steady_clock::duration timeout,
                                             std::size_t max_length) {
  proxy_read out;
  auto dog = std::make_shared<watchdog>();
  dog->socket = &socket;
  net::steady_timer timer(socket.get_executor());
  timer.expires_after(timeout);
  timer.async_wait([dog](boost::system::error_code ec) {
    if (ec || dog->socket == nullptr) return;
    dog->fired = true;
    boost::system::error_code ignored;
    dog->socket->cancel(ignored);
  });
  struct disarm {
    watchdog& d;
    net::steady_timer& t;
    ~disarm() {
      d.socket = nullptr;
      t.cancel();
    }
  } guard{*dog, timer};

  const int fd = socket.native_handle();
  std::vector<std::uint8_t> buf(max_length);
  for (;;) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) {
      out.result = outcome::truncated;
      co_return out;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      out.result = outcome::io_error;
      co_return out;
    }
    if (n > 0) {
      out.bytes_seen = static_cast<std::size_t>(n);
      const proxy_parse p = parse_proxy_header(std::span(buf.data(), out.bytes_seen), max_length);
      if (p.status == proxy_parse::state::invalid) {
        out.result = outcome::invalid;
        out.error = p.error;
        co_return out;
      }
      if (p.status == proxy_parse::state::complete) {
        // The peeked bytes are in the socket: consume exactly the header's.
        std::size_t left = p.header.length;
        while (left > 0) {
          const ssize_t r = ::recv(fd, buf.data(), left, MSG_DONTWAIT);
          if (r < 0 && errno == EINTR) continue;
          if (r <= 0) {
            out.result = outcome::io_error;
            co_return out;
          }
          left -= static_cast<std::size_t>(r);
        }
        out.result = outcome::ok;
        out.header = p.header;
        co_return out;
      }
      if (peer_closed(fd)) {
        out.result = outcome::truncated;
        co_return out;
      }
    }
    auto [ec] = co_await socket.async_wait(net::socket_base::wait_read, net::as_tuple(net::use_awaitable));
    if (dog->fired) {
      out.result = outcome::timeout;
      co_return out;
    }
    if (ec) {
      out.result = outcome::io_error;
      co_return out;
    }
  }
}

}  // namespace cbagate::tls
