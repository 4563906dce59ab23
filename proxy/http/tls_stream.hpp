#pragma once
// The client side TLS stream: OpenSSL reads and writes the TCP socket itself (a small BIO over
// recv/send), Asio only waits for readiness. Unlike net::ssl::stream it keeps no buffers of its
// own: Asio's stream holds four 17 KiB buffers per connection (two vectors plus a BIO pair),
// which made a held ActiveSync Ping cost ~110 KiB. With SSL_MODE_RELEASE_BUFFERS an idle
// connection keeps only OpenSSL's session state.
//
// Deadlines work like beast::tcp_stream's: expires_after/expires_at/expires_never set the
// deadline of the operations that follow; an operation still waiting when it passes completes
// with beast::error::timeout and the socket is closed.
#include "tls/server_context.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <type_traits>

#include <sys/socket.h>

#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http/read_wait.hpp"

namespace cbagate::http {

namespace detail {

// Freed blocks of exact_allocator, per I/O thread, each kept with its size: an operation type
// always has the same size, so the next operation of a kind takes the block the last one
// left, and a keep-alive request costs no malloc for these.
struct exact_block_cache {
  static constexpr std::size_t slots = 8;
  std::size_t size[slots]{};
  void* block[slots]{};

  void* take(std::size_t bytes) noexcept {
    for (std::size_t i = 0; i < slots; ++i) {
      if (block[i] != nullptr && size[i] == bytes) {
        void* p = block[i];
        block[i] = nullptr;
        return p;
      }
    }
    return nullptr;
  }
  bool keep(void* p, std::size_t bytes) noexcept {
    for (std::size_t i = 0; i < slots; ++i) {
      if (block[i] == nullptr) {
        block[i] = p;
        size[i] = bytes;
        return true;
      }
    }
    return false;
  }
  exact_block_cache() = default;
  exact_block_cache(const exact_block_cache&) = delete;
  exact_block_cache& operator=(const exact_block_cache&) = delete;
  ~exact_block_cache() {
    for (void* p : block) ::operator delete(p);
  }
};

inline exact_block_cache& exact_blocks() noexcept {
  thread_local exact_block_cache cache;
  return cache;
}

}  // namespace detail

/**
 * An allocator for operations that may stay pending for long (a parked connection's readiness
 * wait and its deadline): each gets a block of exactly its size. Asio's default recycles
 * blocks per thread first fit, so such an operation otherwise keeps whatever larger block the
 * last request left (issue 14: ~1 KB per idle connection). Freed blocks are kept per thread
 * by exact size (detail::exact_block_cache), so the common short wait costs no malloc either.
 */
template <class T>
struct exact_allocator {
  using value_type = T;
  exact_allocator() noexcept = default;
  template <class U>
  exact_allocator(const exact_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (void* p = detail::exact_blocks().take(bytes)) return static_cast<T*>(p);
    return static_cast<T*>(::operator new(bytes));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (!detail::exact_blocks().keep(p, n * sizeof(T))) ::operator delete(p);
  }
  template <class U>
  bool operator==(const exact_allocator<U>&) const noexcept {
    return true;
  }
};

/** A server-side TLS stream over a TCP socket (AsyncReadStream, AsyncWriteStream). */
class tls_stream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using steady = std::chrono::steady_clock;

  /** Takes ownership of `ssl` (freed with the stream); puts it in server (accept) mode. */
  tls_stream(boost::asio::ip::tcp::socket socket, SSL* ssl)
      : s_(std::make_shared<state>(std::move(socket), ssl)) {
    SSL_set_accept_state(ssl);
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    // One recv for as many records as have come (not two per record: header, then body);
    // the read buffer is still released whenever it is empty.
    SSL_set_read_ahead(ssl, 1);
    BIO* bio = BIO_new(bio_method());
    BIO_set_data(bio, s_.get());
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio);
    boost::system::error_code ec;
    s_->sock.non_blocking(true, ec);
  }
  tls_stream(const tls_stream&) = delete;
  tls_stream& operator=(const tls_stream&) = delete;
  ~tls_stream() {
    // Discard what the peer sent and nobody read (a TLS 1.3 client sends its request right after
    // its Finished, before it hears of a refused certificate): closing with unread bytes would
    // send RST, which can destroy the alert in flight to the client. Bounded.
    if (s_->sock.is_open()) {
      char sink[4096];
      for (int i = 0; i < 16; ++i)
        if (::recv(s_->sock.native_handle(), sink, sizeof sink, MSG_DONTWAIT) <= 0) break;
    }
    boost::system::error_code ec;
    s_->sock.close(ec);
    s_->timer.cancel();
  }

  executor_type get_executor() noexcept { return s_->sock.get_executor(); }
  SSL* native_handle() noexcept { return s_->ssl; }
  boost::asio::ip::tcp::socket& socket() noexcept { return s_->sock; }

  void expires_after(steady::duration d) { set_deadline(steady::now() + d, false); }
  void expires_at(steady::time_point t) { set_deadline(t, false); }
  void expires_never() { set_deadline(steady::time_point::max(), false); }
  /** As expires_after, for a wait that may last minutes (a parked idle connection): the
   *  deadline's watchdog operation is allocated exactly (exact_allocator), not recycled. */
  void idle_after(steady::duration d) { set_deadline(steady::now() + d, true); }

  template <class Token>
  auto async_handshake(Token&& token) {
    return async_io<false>([](SSL* ssl, std::size_t&) { return tls::server_context::handshake(ssl); },
                           std::forward<Token>(token));
  }

  /** Sends close_notify; does not wait for the peer's. */
  template <class Token>
  auto async_shutdown(Token&& token) {
    return async_io<false>(
        [](SSL* ssl, std::size_t&) {
          const int r = SSL_shutdown(ssl);
          return r >= 0 ? 1 : r;
        },
        std::forward<Token>(token));
  }

  /**
   * Completes when application data can be read without waiting (it may already be inside
   * OpenSSL), under the deadline; reads nothing. Lets an idle connection wait without a
   * buffer.
   */
  template <class Token>
  auto async_wait_readable(Token&& token) {
    // Peeking allocates OpenSSL's read buffer (about 7 KiB, heaptrack), which would then stay
    // for the whole idle time: with nothing inside OpenSSL yet, the socket is waited on first.
    return async_io<false>(
        [](SSL* ssl, std::size_t&) {
          unsigned char byte = 0;
          std::size_t n = 0;
          return SSL_peek_ex(ssl, &byte, 1, &n);
        },
        std::forward<Token>(token), /*socket_first=*/SSL_has_pending(s_->ssl) == 0);
  }

  /** What OpenSSL gives at once, without waiting and without an asynchronous hop: bytes it
      holds decrypted already, or what one non-blocking read of the socket brings. 0 when
      nothing is there now, and also on the end of the stream or an error: the next
      asynchronous read meets the same and reports it. No operation may be in progress. */
  std::size_t read_now(boost::asio::mutable_buffer b) noexcept {
    if (b.size() == 0 || s_->fatal || !s_->sock.is_open()) return 0;
    if (ERR_peek_error() != 0) ERR_clear_error();
    std::size_t n = 0;
    if (SSL_read_ex(s_->ssl, b.data(), b.size(), &n) == 1) return n;
    ERR_clear_error();
    return 0;
  }

  /**
   * Copies application data OpenSSL has already decrypted into `b`, without waiting and
   * without a system call: the bytes copied, 0 when none are pending (or on any error, which
   * the next asynchronous operation then reports).
   */
  std::size_t read_pending(boost::asio::mutable_buffer b) noexcept {
    return SSL_pending(s_->ssl) > 0 ? read_now(b) : 0;
  }

  /**
   * Writes what OpenSSL and the socket take at once, without waiting and without an
   * asynchronous operation (whose completion Asio would post: a trip through the scheduler,
   * and on a quiet connection an extra epoll_wait): the bytes written, all of `b` on a
   * keep-alive response. 0 or a part when the socket is full or on an error; the caller writes
   * the rest with async_write_some, which waits, or reports the error. A record OpenSSL could
   * not finish stays pending inside it and goes first with that rest (partial writes and
   * moving buffers are on: the constructor).
   */
  std::size_t write_now(boost::asio::const_buffer b) noexcept {
    if (b.size() == 0 || s_->fatal || s_->waiting || !s_->sock.is_open()) return 0;
    const auto* p = static_cast<const unsigned char*>(b.data());
    std::size_t total = 0;
    while (total < b.size()) {
      if (ERR_peek_error() != 0) ERR_clear_error();
      std::size_t n = 0;
      if (SSL_write_ex(s_->ssl, p + total, b.size() - total, &n) != 1) {
        ERR_clear_error();  // the asynchronous write that follows sees the cause again
        break;
      }
      total += n;
    }
    return total;
  }

  template <class MutableBuffers, class Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    boost::asio::mutable_buffer b;
    for (auto it = boost::asio::buffer_sequence_begin(buffers);
         it != boost::asio::buffer_sequence_end(buffers); ++it) {
      if (boost::asio::mutable_buffer(*it).size() != 0) {
        b = *it;
        break;
      }
    }
    return async_io<true>(
        [b](SSL* ssl, std::size_t& n) {
          if (b.size() == 0) return 1;
          return SSL_read_ex(ssl, b.data(), b.size(), &n);
        },
        std::forward<Token>(token));
  }

  template <class ConstBuffers, class Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    // Several small buffers (a serialized header) go out as one record: copied together, as
    // Asio's stream does, up to one linearisation buffer.
    return async_io<true>(
        [buffers](SSL* ssl, std::size_t& n) {
          constexpr std::size_t linear_max = 8192;
          auto it = boost::asio::buffer_sequence_begin(buffers);
          const auto end = boost::asio::buffer_sequence_end(buffers);
          while (it != end && boost::asio::const_buffer(*it).size() == 0) ++it;
          if (it == end) return 1;
          boost::asio::const_buffer first = *it;
          auto next = it;
          ++next;
          while (next != end && boost::asio::const_buffer(*next).size() == 0) ++next;
          if (next == end || first.size() >= linear_max)
            return SSL_write_ex(ssl, first.data(), first.size(), &n);
          unsigned char storage[linear_max];
          std::size_t len = 0;
          for (; it != end && len < linear_max; ++it) {
            boost::asio::const_buffer piece = *it;
            const std::size_t take = std::min(piece.size(), linear_max - len);
            std::memcpy(storage + len, piece.data(), take);
            len += take;
          }
          return SSL_write_ex(ssl, storage, len, &n);
        },
        std::forward<Token>(token));
  }

 private:
  struct state {
    boost::asio::ip::tcp::socket sock;
    boost::asio::steady_timer timer;
    SSL* ssl;
    steady::time_point deadline = steady::time_point::max();
    steady::time_point armed_for = steady::time_point::max();  // the timer's pending expiry
    bool waiting = false;
    bool fatal = false;      // an SSL error happened: no more SSL_shutdown
    bool long_wait = false;  // the deadline's watchdog operation may wait for minutes
    bool armed_exact = false;  // the pending watchdog operation was allocated exactly
    // The BIO's last recv did not end in EAGAIN: bytes, an end of stream or an error may be
    // waiting with no readiness event to come, so a read wait looks before it waits
    // (read_wait.hpp).
    bool maybe_pending = true;
#if CBAGATE_HAS_READ_WAIT
    detail::ad::epoll_reactor* reactor;
#endif

    state(boost::asio::ip::tcp::socket s, SSL* ssl_)
        : sock(std::move(s)),
          timer(sock.get_executor()),
          ssl(ssl_)
#if CBAGATE_HAS_READ_WAIT
          ,
          reactor(&detail::reactor_of(sock))
#endif
    {
    }
    state(const state&) = delete;
    state& operator=(const state&) = delete;
    ~state() {
      // A connection that ends without our close_notify (a timeout, a device gone) leaves its
      // session resumable (tls.session_cache), as nginx does: SSL_free would otherwise drop it.
      // A fatal alert, sent or received, has already dropped it inside OpenSSL (RFC 5246 7.2.2).
      if (SSL_is_init_finished(ssl)) SSL_set_shutdown(ssl, SSL_get_shutdown(ssl) | SSL_SENT_SHUTDOWN);
      SSL_free(ssl);
    }
  };

  void set_deadline(steady::time_point t, bool long_wait) {
    s_->deadline = t;
    s_->long_wait = long_wait;
  }

  // The deadline watchdog: armed while an operation waits for readiness and the deadline is
  // set. A watchdog already armed for no later than the deadline stays (nginx's lazy timers):
  // when it fires before the deadline it arms itself again for it, so a keep-alive connection
  // whose idle deadline moves on with every request costs one timer operation per idle period,
  // not a cancel and a new wait per request. Only an earlier deadline re-arms at once, and a
  // parked connection's watchdog is one allocated exactly (exact_allocator).
  static void arm(const std::shared_ptr<state>& s) {
    if (s->deadline == steady::time_point::max()) return;
    if (s->armed_for <= s->deadline && (s->armed_exact || !s->long_wait)) return;
    s->armed_for = s->deadline;
    s->armed_exact = s->long_wait;
    s->timer.expires_at(s->deadline);
    auto on_expiry = [w = std::weak_ptr<state>(s)](boost::system::error_code ec) {
      if (ec) return;
      auto p = w.lock();
      if (!p) return;
      p->armed_for = steady::time_point::max();
      if (steady::now() >= p->deadline) {
        boost::system::error_code ig;
        if (p->waiting) p->sock.close(ig);  // as beast::tcp_stream: a timeout closes
      } else if (p->waiting) {
        arm(p);  // the deadline moved while waiting
      }
    };
    if (s->long_wait)
      s->timer.async_wait(boost::asio::bind_allocator(exact_allocator<void>(), std::move(on_expiry)));
    else
      s->timer.async_wait(std::move(on_expiry));
  }

  static boost::system::error_code error_for(state& s, int ssl_error, int ret) {
    namespace net = boost::asio;
    s.fatal = true;
    if (ssl_error == SSL_ERROR_ZERO_RETURN) return net::error::eof;
    if (ssl_error == SSL_ERROR_SYSCALL) {
      const unsigned long e = ERR_get_error();
      if (e != 0) return {static_cast<int>(e), net::error::get_ssl_category()};
      if (ret == 0 || errno == 0) return net::ssl::error::stream_truncated;
      return {errno, net::error::get_system_category()};
    }
    const unsigned long e = ERR_get_error();
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
      return net::ssl::error::stream_truncated;
    return {static_cast<int>(e), net::error::get_ssl_category()};
  }

  template <bool WithSize, class Action>
  struct io_op {
    std::shared_ptr<state> s;
    Action act;
    enum class phase { start, waiting, posted } at = phase::start;
    bool socket_first = false;  // wait for the socket before the first call of `act`
    boost::system::error_code result{};
    std::size_t n = 0;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}) {
      namespace net = boost::asio;
      if (at == phase::posted) return done(self);
      if (at == phase::waiting) {
        s->waiting = false;
        if (ec) {
          if (steady::now() >= s->deadline) {
            boost::system::error_code ig;
            s->sock.close(ig);
            ec = boost::beast::error::timeout;
          }
          return finish(self, ec, 0);
        }
      }
      if (!s->sock.is_open()) return finish(self, net::error::bad_descriptor, 0);
      if (at == phase::start && s->deadline != steady::time_point::max() &&
          steady::now() >= s->deadline) {
        boost::system::error_code ig;
        s->sock.close(ig);
        return finish(self, boost::beast::error::timeout, 0);
      }
      if (s->fatal) return finish(self, net::ssl::error::stream_truncated, 0);
      if (at == phase::start && socket_first) {
        at = phase::waiting;
        s->waiting = true;
        arm(s);
        return wait_readable(*s, false, std::move(self));
      }
      if (ERR_peek_error() != 0) ERR_clear_error();  // SSL_get_error needs an empty queue
      errno = 0;
      std::size_t got = 0;
      const int r = act(s->ssl, got);
      if (r > 0) return finish(self, {}, got);
      const int e = SSL_get_error(s->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        at = phase::waiting;
        s->waiting = true;
        arm(s);
        // WANT_READ: the BIO's recv just ended in EAGAIN (or was interrupted: maybe_pending).
        if (e == SSL_ERROR_WANT_READ) return wait_readable(*s, true, std::move(self));
        s->sock.async_wait(net::socket_base::wait_write, std::move(self));
        return;
      }
      return finish(self, error_for(*s, e, r), 0);
    }

    // `just_read`: the BIO's last recv was made in this handler run (SSL_ERROR_WANT_READ), so
    // a drained socket cannot have had an event harvested since (read_wait.hpp).
    template <class Self>
    static void wait_readable(state& st, bool just_read, Self&& self) {
#if CBAGATE_HAS_READ_WAIT
      detail::async_read_wait(st.sock, *st.reactor,
                              st.maybe_pending ? detail::recv_state::maybe_pending
                              : just_read      ? detail::recv_state::drained_now
                                               : detail::recv_state::drained,
                              /*sole_reader=*/true, std::move(self));
#else
      (void)just_read;
      st.sock.async_wait(boost::asio::socket_base::wait_read, std::move(self));
#endif
    }

    template <class Self>
    void finish(Self& self, boost::system::error_code ec, std::size_t bytes) {
      result = ec;
      n = bytes;
      if (at == phase::waiting) return done(self);  // a continuation: complete now
      at = phase::posted;                              // never from the initiating call
      boost::asio::post(std::move(self));
    }

    template <class Self>
    void done(Self& self) {
      if constexpr (WithSize)
        self.complete(result, n);
      else
        self.complete(result);
    }
  };

  template <bool WithSize, class Action, class Token>
  auto async_io(Action act, Token&& token, bool socket_first = false) {
    using sig = std::conditional_t<WithSize, void(boost::system::error_code, std::size_t),
                                   void(boost::system::error_code)>;
    io_op<WithSize, Action> op{s_, std::move(act)};
    op.socket_first = socket_first;
    return boost::asio::async_compose<Token, sig>(std::move(op), token, s_->sock);
  }

  // recv/send on the socket (MSG_NOSIGNAL: a peer gone away is an error, not SIGPIPE). Never
  // touches a socket that was closed (drain, timeout): its descriptor number may be reused.
  static int bio_read(BIO* b, char* out, int len) {
    BIO_clear_retry_flags(b);
    auto* st = static_cast<state*>(BIO_get_data(b));
    auto* sock = &st->sock;
    if (!sock->is_open()) {
      errno = EBADF;
      return -1;
    }
    const ssize_t n = ::recv(sock->native_handle(), out, static_cast<std::size_t>(len), 0);
    // Only EAGAIN says the socket is drained. A full read may have left bytes behind, and a
    // short one an end of stream or a reset that came with the data: their readiness event was
    // the data's, so no new one comes and the next read wait must look first (read_wait.hpp).
    st->maybe_pending = n != 0 && !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      BIO_set_retry_read(b);
    return static_cast<int>(n);
  }
  static int bio_write(BIO* b, const char* in, int len) {
    BIO_clear_retry_flags(b);
    auto* sock = &static_cast<state*>(BIO_get_data(b))->sock;
    if (!sock->is_open()) {
      errno = EBADF;
      return -1;
    }
    const ssize_t n =
        ::send(sock->native_handle(), in, static_cast<std::size_t>(len), MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      BIO_set_retry_write(b);
    return static_cast<int>(n);
  }
  static long bio_ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
  static BIO_METHOD* bio_method() {
    static BIO_METHOD* const method = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cbagate-socket");
      BIO_meth_set_read(m, &bio_read);
      BIO_meth_set_write(m, &bio_write);
      BIO_meth_set_ctrl(m, &bio_ctrl);
      return m;
    }();
    return method;
  }

  std::shared_ptr<state> s_;
};

}  // namespace cbagate::http
