#pragma once
// A read-readiness wait on a TCP socket without a system call per wait (issue 14).
//
// basic_socket::async_wait takes Asio's non-speculative path: each wait re-arms the descriptor
// with epoll_ctl(EPOLL_CTL_MOD), one system call per keep-alive request and per handshake
// round trip, because Asio cannot know whether an earlier readiness event was consumed while
// nobody waited. The stream knows more: OpenSSL reads the socket itself (tls_stream's BIO),
// and the BIO records whether its last recv drained the socket, which only EAGAIN proves (a
// short read may leave the peer's end of stream or a reset that came with the data, and their
// event was the data's). This wait is a reactor operation that takes the speculative path:
//  - the socket may not be drained (the last recv returned bytes): one peek decides; so a
//    keep-alive request costs a peek here instead of epoll_ctl, while the waits after EAGAIN
//    (each round trip of a handshake, a body still coming) cost nothing;
//  - an event came since the last completed wait (Asio's per-descriptor "try speculative"
//    flag): Asio calls perform() at once, which peeks, unless the socket was found drained
//    (EAGAIN, by that first peek or by the caller's own recv) in this same handler run: no
//    event can have been harvested since, as the reactor runs only between handlers, so an
//    arrival after that EAGAIN has its event still to come. (The flag stays set after an op
//    that completed speculatively with bytes; without this, such a socket paid two peeks per
//    wait.)
//  - otherwise the operation is queued on the descriptor, already registered for EPOLLIN in
//    edge-triggered mode: nothing arrived since the socket was drained and no event was
//    missed, so the next arrival's event completes it. No system call.
// On an event, perform() reports "done and exhausted" without a call when the waiter is the
// socket's sole reader (tls_stream: its BIO's recv and these waits, no Asio read operation):
// Asio then knows the descriptor has no news until its next event. A wake-up for bytes
// somebody else has read meanwhile only costs a spurious wait (the next OpenSSL call says
// WANT_READ again). A socket that Asio's own read operations also read (a plain backend
// connection, read by Beast) must not be marked so: an operation started after the waiter's
// own recv would trust the mark and skip its first look, and sleep on an end of stream or a
// reset whose event this wait consumed. There the event reports "done", as Asio's async_wait
// does.
//
// It reaches into Asio's reactor (boost/asio/detail), so it is compiled only for the Asio this
// project builds with (Debian 12: Boost 1.81, epoll); elsewhere the wait is async_wait.
#include <cerrno>
#include <memory>
#include <type_traits>
#include <utility>

#include <sys/socket.h>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#define CBAGATE_HAS_READ_WAIT 1
#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/execution/context.hpp>
#include <boost/asio/query.hpp>
#else
#define CBAGATE_HAS_READ_WAIT 0
#endif

namespace cbagate::http::detail {

/** What the waiter knows of the socket's receive side when it starts a read wait. */
enum class recv_state {
  /** The last recv returned bytes (or none was made): bytes, an end of stream or an error may
      be there without a readiness event to come. The wait looks first (one peek). */
  maybe_pending,
  /** The last recv ended in EAGAIN, in an earlier handler run: events may have been harvested
      since (the reactor's flag says; a peek then). */
  drained,
  /** A recv ended in EAGAIN in this same handler run (nothing ran the reactor since): nothing
      is pending that an event will not report. No system call. */
  drained_now,
};

#if CBAGATE_HAS_READ_WAIT

namespace ad = boost::asio::detail;
static_assert(std::is_same_v<ad::reactor, ad::epoll_reactor>);

// The socket's reactor registration. basic_socket keeps it in a protected member; a pointer to
// that member formed in a derived class may be applied to any socket ([class.protected]).
struct socket_registration : boost::asio::ip::tcp::socket {
  static auto& of(boost::asio::ip::tcp::socket& s) {
    return (s.*(&socket_registration::impl_)).get_implementation();
  }
};

/** The reactor of the io_context `s` belongs to (look it up once per stream). */
inline ad::epoll_reactor& reactor_of(boost::asio::ip::tcp::socket& s) {
  return boost::asio::use_service<ad::epoll_reactor>(
      boost::asio::query(s.get_executor(), boost::asio::execution::context));
}

template <class Handler, class IoExecutor>
class read_wait_op : public ad::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(read_wait_op);

  read_wait_op(int fd, Handler& handler, const IoExecutor& io_ex)
      : ad::reactor_op(boost::system::error_code(), &read_wait_op::do_perform,
                       &read_wait_op::do_complete),
        fd_(fd),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  bool initiating = true;  // perform() called from start_op (speculatively), not on an event
  bool drained_now = false;  // found drained in this handler run: start_op need not look
  bool sole_reader = false;  // no Asio read operation reads this socket (see above)

  /** One peek: whether bytes, an end of stream or an error are there to be read. */
  static bool ready_now(int fd) noexcept {
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
  }

  static status do_perform(ad::reactor_op* base) {
    auto* o = static_cast<read_wait_op*>(base);
    if (!o->initiating)  // readiness event: EPOLLIN, ERR or HUP
      return o->sole_reader ? done_and_exhausted : done;
    if (o->drained_now) return not_done;             // queued without a look (see above)
    return ready_now(o->fd_) ? done : not_done;
  }

  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&,
                          std::size_t) {
    // As Asio's reactive_wait_op: the handler is moved out and the memory freed before the
    // upcall.
    auto* o = static_cast<read_wait_op*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    ad::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    ad::binder1<Handler, boost::system::error_code> handler(o->handler_, o->ec_);
    p.h = std::addressof(handler.handler_);
    p.reset();
    if (owner) {
      ad::fenced_block b(ad::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  int fd_;
  Handler handler_;
  ad::handler_work<Handler, IoExecutor> work_;
};

// Per-operation cancellation (a wait under awaitable operators ||), as Asio's own ops do it.
class read_wait_cancellation {
 public:
  read_wait_cancellation(ad::epoll_reactor* r, ad::epoll_reactor::per_descriptor_data* d, int fd)
      : reactor_(r), data_(d), fd_(fd) {}
  void operator()(boost::asio::cancellation_type_t type) {
    using ct = boost::asio::cancellation_type;
    if (!!(type & (ct::terminal | ct::partial | ct::total)))
      reactor_->cancel_ops_by_key(fd_, *data_, ad::epoll_reactor::read_op, this);
  }

 private:
  ad::epoll_reactor* reactor_;
  ad::epoll_reactor::per_descriptor_data* data_;
  int fd_;
};

/**
 * Completes `handler(error_code)` when `sock` can be read (bytes, end of stream or an error),
 * or with operation_aborted when the socket is cancelled or closed. `st`: what the caller
 * knows of the socket (recv_state); `drained_now` is trusted, so a caller that says so
 * wrongly would wait for the next arrival with bytes already there. `sole_reader`: no Asio
 * read operation ever reads this socket (see the top of this file).
 */
template <class Handler>
void async_read_wait(boost::asio::ip::tcp::socket& sock, ad::epoll_reactor& reactor,
                     recv_state st, bool sole_reader, Handler&& handler) {
  using handler_type = std::decay_t<Handler>;
  using op = read_wait_op<handler_type, boost::asio::any_io_executor>;
  auto& impl = socket_registration::of(sock);
  const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
  auto slot = boost::asio::get_associated_cancellation_slot(handler);
  typename op::ptr p = {std::addressof(handler), op::ptr::allocate(handler), nullptr};
  p.p = new (p.v) op(impl.socket_, handler, sock.get_executor());
  op* const o = p.p;
  p.v = p.p = nullptr;
  if (st == recv_state::maybe_pending) {
    if (op::ready_now(impl.socket_)) {
      reactor.post_immediate_completion(o, is_continuation);
      return;
    }
    st = recv_state::drained_now;
  }
  o->drained_now = st == recv_state::drained_now;
  o->sole_reader = sole_reader;
  if (slot.is_connected())
    o->cancellation_key_ =
        &slot.template emplace<read_wait_cancellation>(&reactor, &impl.reactor_data_, impl.socket_);
  // The io_context runs on one thread, so the operation is still ours after start_op (queued,
  // or posted for completion): only the event-driven calls of perform() come later.
  reactor.start_op(ad::epoll_reactor::read_op, impl.socket_, impl.reactor_data_, o, is_continuation,
                   /*allow_speculative=*/true);
  o->initiating = false;
}

#endif  // CBAGATE_HAS_READ_WAIT

/**
 * A read-readiness wait on a plain TCP socket that Asio's (Beast's) read operations may also
 * read, as an asynchronous operation (any completion token; signature void(error_code)):
 * async_read_wait where it is compiled, else Asio's async_wait(wait_read), which re-arms the
 * descriptor with epoll_ctl.
 */
template <class Token>
auto async_wait_readable(boost::asio::ip::tcp::socket& sock, recv_state st, Token&& token) {
  return boost::asio::async_initiate<Token, void(boost::system::error_code)>(
      [&sock, st](auto handler) {
#if CBAGATE_HAS_READ_WAIT
        async_read_wait(sock, reactor_of(sock), st, /*sole_reader=*/false, std::move(handler));
#else
        (void)st;
        sock.async_wait(boost::asio::socket_base::wait_read, std::move(handler));
#endif
      },
      token);
}

}  // namespace cbagate::http::detail
