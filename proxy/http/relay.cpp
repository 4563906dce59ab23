#include "http/relay.hpp"

#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "http/flat_parser.hpp"
#include "http/read_wait.hpp"
#include "http/sanitize.hpp"
#include "http/serialize.hpp"
#include "observability/log.hpp"
#include "upstream/pinning.hpp"

namespace cbagate::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using namespace net::experimental::awaitable_operators;
using steady = std::chrono::steady_clock;
using detail::micros;
using detail::ms;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t relay_chunk = 16384;

bool is_disconnect(const error_code& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::operation_aborted || ec == beast::error::timeout;
}

// --- waiting for the response while watching the client ------------------------------------------

// Completes only when the client has gone away (FIN, reset or TLS close) while its request is
// held upstream - the case of a phone dropping a held Ping. Bytes the client sends meanwhile
// (a pipelined request) stay in c.buf for later, and watching stops.
net::awaitable<void> watch_client(connection& c) {
  auto& sock = c.tcp().socket();
  c.tcp().expires_never();
  auto [wec] = co_await sock.async_wait(net::socket_base::wait_read, use_tuple);
  if (!wec) {
    auto [ec, n] = co_await c.stream.async_read_some(c.buf.prepare(relay_chunk), use_tuple);
    if (ec) co_return;  // closed or broken: the client is gone
    c.buf.commit(n);
  } else if (wec == net::error::operation_aborted) {
    co_return;  // cancelled because the response came first; the result is ignored
  }
  net::steady_timer forever(c.stream.get_executor(), steady::time_point::max());
  co_await forever.async_wait(use_tuple);
}

// The lean watch of a held request: shared with the readiness handlers, which may run after the
// exchange has moved on (then `live` is false and they do nothing). `deadline` is the response
// timeout of a plain backend's readiness wait (receive_response_header).
struct client_watch {
  client_watch(beast::tcp_stream* up, const net::any_io_executor& ex) : upstream(up), deadline(ex) {}
  beast::tcp_stream* upstream;
  net::steady_timer deadline;  // park_after first (`grace`), then the response timeout
  steady::time_point until;    // the response timeout
  bool live = true;
  bool fired = false;      // the client showed a sign of life: the backend wait was cancelled
  bool timed_out = false;  // the response timeout passed: the backend wait was cancelled
  bool grace = false;      // the timer runs for park_after, not the response timeout
  bool park = false;       // park_after passed: the backend wait was cancelled, to park
  bool watching = false;   // the readiness wait on the client socket is registered
};

// From here on a sign of life of the client (bytes, FIN, reset) cancels the wait on the backend.
void watch_client_socket(connection& c, const std::shared_ptr<client_watch>& watch) {
  watch->watching = true;
  c.tcp().socket().async_wait(net::socket_base::wait_read,
                              net::bind_allocator(exact_allocator<void>(), [watch](const error_code&) {
                                if (!watch->live) return;
                                watch->fired = true;
                                watch->upstream->cancel();
                              }));
}

// The watch's timer: park_after (a request that may be parked), then the response timeout.
void arm_watch_timer(const std::shared_ptr<client_watch>& watch, steady::time_point at) {
  watch->deadline.expires_at(at);
  watch->deadline.async_wait(
      net::bind_allocator(exact_allocator<void>(), [watch](const error_code& tec) {
        if (tec || !watch->live) return;
        if (watch->grace)
          watch->park = true;
        else
          watch->timed_out = true;
        watch->upstream->cancel();
      }));
}

// True when a whole response header is already at hand for a plain backend connection: in
// ubuf, or in the socket (read into ubuf without waiting). A TLS backend is never asked (its
// bytes go through OpenSSL). `drained`, when given, says whether the look ended in EAGAIN.
template <class Up>
bool response_header_ready(Up& up, beast::flat_buffer& ubuf, bool* drained = nullptr) {
  const auto complete = [&ubuf] {
    const std::string_view d(static_cast<const char*>(ubuf.data().data()), ubuf.size());
    return d.find("\r\n\r\n") != std::string_view::npos;
  };
  if constexpr (std::is_same_v<Up, beast::tcp_stream>) {
    if (complete()) return true;
    auto& sock = up.socket();
    if (!sock.is_open()) return false;
    // Into a stack buffer first: a held request (nothing there yet) must not grow ubuf, which
    // would then stay allocated for the whole hold (4 KiB per held Ping).
    std::array<char, 4096> tmp;
    const ssize_t n = ::recv(sock.native_handle(), tmp.data(), tmp.size(), MSG_DONTWAIT);
    if (drained != nullptr) *drained = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    if (n <= 0) return false;  // nothing yet, or closed: the asynchronous read tells which
    const auto len = static_cast<std::size_t>(n);
    net::buffer_copy(ubuf.prepare(len), net::buffer(tmp.data(), len));
    ubuf.commit(len);
    return complete();
  } else {
    (void)up;
    (void)ubuf;
    return false;
  }
}

template <class Up>
net::awaitable<error_code> read_response_header(Up& up, beast::flat_buffer& ubuf,
                                                flat_response_parser<bhttp::buffer_body>& p) {
  auto [ec, n] = co_await bhttp::async_read_header(up, ubuf, p, use_tuple);
  (void)n;
  co_return ec;
}

// Writes one piece of a buffer_body message through its serializer; size 0 with more == false
// ends the body. An empty piece must be data == nullptr: given a zero-size buffer, Beast's
// chunked serializer writes "0\r\n\r\n" as a chunk and then the last chunk again, and the extra
// bytes desynchronize the peer (a pooled backend answers them as a next request). need_buffer
// is Beast asking for the next piece, not an error.
template <class Stream, class Serializer>
net::awaitable<error_code> write_piece(Stream& stream, Serializer& sr,
                                       bhttp::buffer_body::value_type& body, char* data,
                                       std::size_t size, bool more) {
  body.data = size ? data : nullptr;
  body.size = size;
  body.more = more;
  auto [ec, n] = co_await bhttp::async_write(stream, sr, use_tuple);
  (void)n;
  if (ec == bhttp::error::need_buffer) ec = {};
  co_return ec;
}

// --- one exchange, in three steps ------------------------------------------------------------------

// What the three steps of one exchange share. Lives in run_exchange's frame.
template <class Up>
struct exchange {
  connection& c;
  Up& up;
  beast::tcp_stream& utcp;  // the backend's TCP layer: its deadlines
  flat_request_parser<bhttp::buffer_body>& req_p;
  const relay_plan& plan;
  observability::access_record& rec;
  steady::time_point t0;
  std::chrono::milliseconds body_idle;
  std::unique_ptr<char[]> chunk;  // the relay buffer, request body then response body
  beast::flat_buffer ubuf;        // bytes read from the backend and not yet parsed
  std::optional<flat_response_parser<bhttp::buffer_body>> res_p;
  sent_request* keep = nullptr;   // relay_keeping: the request as sent goes here
  std::size_t server = 0;         // upstream.servers index: passive health
  held_exchange_ptr* park = nullptr;  // where a long hold parks this exchange (null: never)
  std::shared_ptr<client_watch> watch{};  // while parked: the hold's watch
  error_code hold_ec{};                   // how the parked wait on the backend ended

  // The response header's storage goes back to this thread's spares (runtime.hpp worker).
  ~exchange() {
    if (res_p) c.w.give_fields(res_p->release_fields());
    if (watch) {  // ended while parked (the connection is closed): its waits do nothing more
      watch->live = false;
      watch->deadline.cancel();
    }
  }
};

// A parked exchange: only plain backends park (a TLS backend's bytes go through OpenSSL,
// which a readiness wait cannot see).
struct plain_held final : held_exchange {
  explicit plain_held(std::unique_ptr<exchange<beast::tcp_stream>> x_) : x(std::move(x_)) {}
  std::unique_ptr<exchange<beast::tcp_stream>> x;
};

// The length of a request body that may go with its header in one write: a Content-Length body
// of at most one relay chunk, all of it already read (in c.buf), within the route's limit, the
// client not waiting for 100 Continue. 0 otherwise (no body, chunked, large or still coming).
std::size_t whole_small_body(const connection& c, const flat_request_parser<bhttp::buffer_body>& req_p,
                             const relay_plan& plan) {
  if (!plan.request_has_body || plan.send_continue || req_p.get().chunked()) return 0;
  const auto cl = req_p.content_length();
  if (!cl || *cl == 0 || *cl > relay_chunk || *cl > c.buf.size()) return 0;
  if (plan.max_body && *cl > plan.max_body) return 0;  // refused by the streaming path
  return static_cast<std::size_t>(*cl);
}

// Moves the `size` body bytes whole_small_body() found in c.buf into `out` through the parser.
// False if the parser did not end the message there (never for a Content-Length body).
template <class Up>
bool take_whole_body(exchange<Up>& x, char* out, std::size_t size) {
  auto& req = x.req_p.get();
  req.body().data = out;
  req.body().size = size;
  req.body().more = false;
  while (!x.req_p.is_done()) {
    error_code ec;
    const std::size_t used = x.req_p.put(x.c.buf.data(), ec);
    x.c.buf.consume(used);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec || used == 0) break;
  }
  if (!x.req_p.is_done() || req.body().size != 0) return false;
  x.rec.bytes_in += size;
  return true;
}

// Bytes to the backend under the body_idle deadline: the write operation itself, awaited by the
// caller (no coroutine frame of its own on the keep-alive path).
template <class Up>
auto write_upstream(exchange<Up>& x, net::const_buffer bytes) {
  x.utcp.expires_after(x.body_idle);
  return net::async_write(x.up, bytes, use_tuple);
}

// What a plain backend's socket takes at once, written without an asynchronous operation (no
// Beast timer, no completion posted through the scheduler): the bytes written. 0 or a part when
// the socket is full or on an error; the rest goes with write_upstream, which waits, or reports
// the error. A whole request written so is followed by one pass through the scheduler
// (send_request): without it the answer is rarely at hand when the relay looks (62k instead of
// 52k instructions per keep-alive GET, measured without the pass).
std::size_t write_upstream_now(beast::tcp_stream& up, net::const_buffer bytes) noexcept {
  auto& sock = up.socket();
  if (bytes.size() == 0 || !sock.is_open()) return 0;
  const ssize_t n = ::send(sock.native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// A write to the backend failed: the client is answered 502 upstream_reset. Always false.
template <class Up>
net::awaitable<bool> upstream_write_failed(exchange<Up>& x) {
  x.rec.error = "upstream_write_failed";
  co_await send_local(x.c, x.rec, reply::upstream_reset, 0, false);
  co_return false;
}

// A whole request (header and any body) in one write to the backend. False when it failed (the
// client is answered 502 upstream_reset).
template <class Up>
net::awaitable<bool> send_whole(exchange<Up>& x, net::const_buffer bytes) {
  auto [ec, w] = co_await write_upstream(x, bytes);
  (void)w;
  if (ec) co_return co_await upstream_write_failed(x);
  co_return true;
}

template <class Up>
net::awaitable<bool> send_streaming(exchange<Up>& x);

// Step 1: 100 Continue when asked, the request header, then body chunks as they come. False
// when the exchange ended here (recorded in rec, answered when the client can be told).
template <class Up>
net::awaitable<bool> send_request(exchange<Up>& x) {
  connection& c = x.c;
  auto& req_p = x.req_p;
  auto& req = req_p.get();
  auto& rec = x.rec;

  // 100 Continue now that the backend is ready: the client sends its body only from here on.
  if (x.plan.send_continue) {
    bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
    c.tcp().expires_after(x.body_idle);
    auto [ec, n] = co_await bhttp::async_write(c.stream, cont, use_tuple);
    (void)n;
    if (ec) {
      rec.error = "client_closed";
      co_return false;
    }
  }

  // No body (most requests), or a small body that came whole with its header (an ActiveSync
  // Sync or Ping: a few hundred bytes, one TLS record with the header): header and body leave
  // in one write, the header serialized here. The body is taken through the parser, which
  // stays the judge of its framing; a body that is still on its way is streamed below.
  if (const std::size_t body = whole_small_body(c, req_p, x.plan);
      !x.plan.request_has_body || body > 0) {
    const std::size_t n = header_size(req.base());
    auto head = std::make_unique_for_overwrite<char[]>(n + body);
    put_header(req.base(), head.get());
    if (body > 0 && !take_whole_body(x, head.get() + n, body)) {
      rec.error = "bad_request_body";
      co_await send_local(c, rec, reply::bad_request, 0, false);
      co_return false;
    }
    net::const_buffer all(head.get(), n + body);
    if constexpr (std::is_same_v<Up, beast::tcp_stream>) {
      // A plain backend's socket takes the request at once (nearly always): then one pass
      // through the scheduler before the relay looks for the answer, which is what gives the
      // backend its time (without it the answer is rarely at hand), but without the Beast
      // operation, its timer and the cancelled timer's posted handler an asynchronous write
      // costs. What the socket does not take goes as before.
      all += write_upstream_now(x.up, all);
      if (all.size() == 0) co_await net::post(x.up.get_executor(), net::use_awaitable);
    }
    if (all.size() > 0) {
      auto [ec, w] = co_await write_upstream(x, all);
      (void)w;
      if (ec) co_return co_await upstream_write_failed(x);
    }
    if (x.keep != nullptr) *x.keep = sent_request{std::move(head), n, body};
    co_return true;
  }

  co_return co_await send_streaming(x);
}

// Step 1, a body still on its way (large, chunked, or after 100 Continue): the header, then body
// chunks as they come. Its own coroutine: the serializer and the relay loop stay out of the
// frame of every small request (Asio caches frames of at most 1020 bytes).
template <class Up>
net::awaitable<bool> send_streaming(exchange<Up>& x) {
  connection& c = x.c;
  auto& req_p = x.req_p;
  auto& req = req_p.get();
  auto& rec = x.rec;
  bhttp::serializer<true, bhttp::buffer_body, flat_fields> sr{req};
  req.body().data = nullptr;
  req.body().size = 0;
  req.body().more = x.plan.request_has_body;
  x.utcp.expires_after(x.body_idle);
  {
    auto [ec, n] = co_await bhttp::async_write_header(x.up, sr, use_tuple);
    (void)n;
    if (ec) co_return co_await upstream_write_failed(x);
  }

  x.chunk = std::make_unique_for_overwrite<char[]>(relay_chunk);  // not zeroed: 16 KiB memset
  if (c.buf.capacity() < relay_chunk) c.buf.reserve(relay_chunk);  // body reads: full pieces
  // A Content-Length body to a plain backend goes on as it came: each piece straight to the
  // socket when it takes it (write_upstream_now: no Beast operation, timer or posted completion
  // per 16 KiB), past the serializer, which re-frames only chunked bodies.
  const bool raw = std::is_same_v<Up, beast::tcp_stream> && !req.chunked();
  while (!req_p.is_done()) {
    req.body().data = x.chunk.get();
    req.body().size = relay_chunk;
    error_code rec_ec;
    // A Content-Length body's bytes at hand (in c.buf, or what OpenSSL gives at once) go
    // through the parser here, without Beast's read operation and the posted completions it
    // and the stream would cost per piece; the parser still stops at the body's end.
    std::size_t used = 0;
    if (raw && c.buf.size() == 0) c.buf.commit(c.stream.read_now(c.buf.prepare(relay_chunk)));
    if (raw && c.buf.size() > 0) {
      used = req_p.put(c.buf.data(), rec_ec);
      c.buf.consume(used);
      if (rec_ec == bhttp::error::need_more) rec_ec = {};
    }
    if (used == 0 && !rec_ec) {  // nothing at hand (or nothing the parser took): wait
      c.tcp().expires_after(x.body_idle);
      // read_some, not read: relay what has come instead of waiting for a full buffer.
      std::size_t rn = 0;
      std::tie(rec_ec, rn) = co_await bhttp::async_read_some(c.stream, c.buf, req_p, use_tuple);
    }
    if (rec_ec == bhttp::error::need_buffer) rec_ec = {};
    if (rec_ec) {
      rec.error = is_disconnect(rec_ec) ? "client_closed" : "bad_request_body";
      if (!is_disconnect(rec_ec) && rec_ec != bhttp::error::partial_message)
        co_await send_local(c, rec, reply::bad_request, 0, false);
      co_return false;
    }
    const std::size_t got = relay_chunk - req.body().size;
    rec.bytes_in += got;
    if (x.plan.max_body && rec.bytes_in > x.plan.max_body) {
      rec.error = "body_too_large";
      co_await send_local(c, rec, reply::body_too_large, 0, false);
      co_return false;
    }
    if (got == 0 && !req_p.is_done()) continue;  // only framing parsed (a chunk header)
    if constexpr (std::is_same_v<Up, beast::tcp_stream>) {
      if (raw) {
        net::const_buffer b(x.chunk.get(), got);
        b += write_upstream_now(x.up, b);
        if (b.size() > 0) {
          auto [wec, wn] = co_await write_upstream(x, b);
          (void)wn;
          if (wec) co_return co_await upstream_write_failed(x);
        }
        continue;
      }
    }
    x.utcp.expires_after(x.body_idle);
    const error_code wec =
        co_await write_piece(x.up, sr, req.body(), x.chunk.get(), got, !req_p.is_done());
    if (wec) co_return co_await upstream_write_failed(x);
  }
  if (!raw && !sr.is_done()) {
    x.utcp.expires_after(x.body_idle);
    const error_code wec = co_await write_piece(x.up, sr, req.body(), nullptr, 0, false);
    if (wec) co_return co_await upstream_write_failed(x);
  }
  co_return true;
}

// How step 2 ended: a final response header to relay, the exchange over (answered or recorded
// in rec), or the exchange parked (a long hold: exchange::park).
enum class header_step { ready, ended, parked };

// Step 2: the final response header, held as long as the route allows (ActiveSync Ping: up to
// an hour) while watching for the client to go away; interim responses are skipped. A held
// request keeps no relay or read buffer, nor the request header it has sent (the parser's
// state stays: is_done() in step 3). A hold on a plain backend that passes park_after is
// parked when the caller allows it (x.park): its coroutines end, its waits stay, and
// relay_resume comes back here with the result of the backend wait.
template <class Up>
net::awaitable<header_step> receive_response_header(exchange<Up>& x) {
  constexpr bool plain = std::is_same_v<Up, beast::tcp_stream>;
  connection& c = x.c;
  auto& rec = x.rec;
  std::shared_ptr<client_watch> resumed = std::move(x.watch);
  if (!resumed) {
    c.w.give_fields(x.req_p.release_fields());
    x.chunk.reset();
    if (c.buf.size() == 0) c.buf.shrink_to_fit();
  }
  for (;;) {
    error_code ec;
    bool at_hand = false;
    std::shared_ptr<client_watch> watch = std::move(resumed);
    if (watch) {
      ec = x.hold_ec;  // parked: how its wait on the backend ended
    } else {
      flat_fields spare = x.res_p ? x.res_p->release_fields() : c.w.take_fields();
      auto& res_p = x.res_p.emplace(std::move(spare));
      res_p.header_limit(static_cast<std::uint32_t>(c.rt.cfg->limits.max_response_header_bytes));
      res_p.body_limit(boost::none);
      if (x.plan.head) res_p.skip(true);
      const steady::time_point deadline = steady::now() + x.plan.response_timeout;
      x.utcp.expires_at(deadline);
      bool drained = false;
      at_hand = response_header_ready(x.up, x.ubuf, &drained);
      if (!at_hand) {
        // A held request (an ActiveSync Ping, up to an hour) keeps only a wait on the backend
        // and a readiness wait on the client socket, whose handler cancels the backend wait
        // when the client shows a sign of life. Only then (rare) do both sides get a coroutine
        // each (watch_client), which tells a client gone from a pipelined request.
        // Both waits may last an hour: their operations get exactly their size
        // (exact_allocator, tls_stream.hpp), not a larger block from Asio's per-thread cache
        // (issue 14). Nor a header container for a response that may be an hour away: the
        // spare goes back to the thread, the parser grows its own when the response comes.
        // On a plain backend the wait is for readiness only, under a timer of the watch's own:
        // Beast's read (its composed operation, its timer's operation and the 512-byte buffer
        // it prepares) would otherwise stay allocated for the whole hold, about 1.3 KB per held
        // Ping (issue 14, heaptrack). Once the backend has spoken, a whole header is read and
        // parsed as a quick answer's is (no asynchronous hop, no Beast timer); only a partial
        // one is left to Beast's read, under the same deadline and still watched. A TLS
        // backend's bytes go through OpenSSL, which may hold some already: it is read as
        // before.
        c.w.give_fields(res_p.release_fields());
        watch = std::make_shared<client_watch>(&x.utcp, x.utcp.get_executor());
        c.tcp().expires_never();
        if constexpr (plain) {
          // Still unanswered after park_after, the request is parked (x.park): its coroutine
          // frames (a few KB from the connection's loop down to here) are not kept for a hold
          // of minutes (issue 14). Such a request watches the client only from then on: most
          // answers come sooner, and a client gone meanwhile is noticed at that point (its FIN
          // or reset is still there to be seen).
          const bool may_park = x.park != nullptr && x.plan.response_timeout > park_after;
          if (!may_park) watch_client_socket(c, watch);
          watch->until = deadline;
          watch->grace = may_park;
          arm_watch_timer(watch, may_park ? steady::now() + park_after : deadline);
          // The look above found the socket drained (EAGAIN) in this same handler run: the
          // readiness wait then needs no system call (read_wait.hpp); Asio's async_wait would
          // re-arm the descriptor with epoll_ctl.
          std::tie(ec) = co_await detail::async_wait_readable(
              x.up.socket(), drained ? detail::recv_state::drained_now : detail::recv_state::maybe_pending,
              net::bind_allocator(exact_allocator<void>(), use_tuple));
          if (ec == net::error::operation_aborted && watch->park && !watch->fired) {
            watch->grace = watch->park = false;
            watch_client_socket(c, watch);
            arm_watch_timer(watch, watch->until);
            x.watch = std::move(watch);
            co_return header_step::parked;
          }
        } else {
          watch_client_socket(c, watch);
          std::size_t hn = 0;
          std::tie(ec, hn) = co_await bhttp::async_read_header(
              x.up, x.ubuf, res_p, net::bind_allocator(exact_allocator<void>(), use_tuple));
        }
      }
    }
    auto& res_p = *x.res_p;
    if (watch) {
      if constexpr (plain) {
        watch->deadline.cancel();
        if (watch->timed_out) {
          x.up.close();  // as Beast's own timeout does
          ec = beast::error::timeout;
        }
        if (!ec) at_hand = response_header_ready(x.up, x.ubuf);
        if (!ec && !at_hand) {
          std::size_t hn = 0;
          std::tie(ec, hn) = co_await bhttp::async_read_header(x.up, x.ubuf, res_p, use_tuple);
        }
      }
      watch->live = false;
      if (!watch->fired) {
        error_code ignored;
        if (watch->watching) c.tcp().socket().cancel(ignored);
      } else if (ec == net::error::operation_aborted) {
        auto r = co_await (read_response_header(x.up, x.ubuf, res_p) || watch_client(c));
        if (r.index() == 1) {
          rec.error = "client_closed";
          rec.status = 499;  // nginx's convention for "client closed the request"
          co_return header_step::ended;
        }
        ec = std::get<0>(r);
      }
    }
    if (at_hand && !ec) {
      // The backend has answered already (a quick request, or a held one that just got its
      // answer): with a quick request nothing is watched, and no readiness wait is registered
      // on the client socket (an epoll_ctl per request). The whole header is in ubuf: parsed
      // here, without an asynchronous hop (the parser stops at the end of the header; the body
      // stays in ubuf).
      const std::size_t used = res_p.put(x.ubuf.data(), ec);
      x.ubuf.consume(used);
      if (ec == bhttp::error::need_more) ec = {};
      if (!ec && !res_p.is_header_done()) {
        std::size_t hn = 0;
        std::tie(ec, hn) = co_await bhttp::async_read_header(x.up, x.ubuf, res_p, use_tuple);
      }
    }
    if (ec) {
      const bool timeout = ec == beast::error::timeout;
      rec.error = timeout ? "upstream_timeout" : "upstream_reset";
      spdlog::logger& log = *observability::logger("http");
      log.warn("conn={} req={} upstream {} failed before the response header: {}", c.conn_id,
               rec.req_id, rec.upstream, timeout ? std::string("response timeout") : ec.message());
      co_await send_local(c, rec, timeout ? reply::upstream_timeout : reply::upstream_reset, 0, false);
      co_return header_step::ended;
    }
    const unsigned code = res_p.get().result_int();
    if (code >= 100 && code < 200) {
      if (code == 101) {  // no protocol upgrades through this proxy
        rec.error = "upstream_upgrade";
        co_await send_local(c, rec, reply::upstream_reset, 0, false);
        co_return header_step::ended;
      }
      continue;  // interim responses are the proxy's business, not the client's
    }
    co_return header_step::ready;
  }
}

// Reading the response body failed (both relays of step 3). While nothing has reached the client
// (the header waits for its first body piece) it can still be told: 502 upstream_reset. After
// that, the client cannot be told by a status any more, only by an incomplete message: the
// caller ends the exchange and its connection is closed.
template <class Up>
net::awaitable<void> body_read_failed(exchange<Up>& x, error_code ec, bool header_sent) {
  connection& c = x.c;
  auto& rec = x.rec;
  if (!header_sent) {
    rec.error = "upstream_reset";
    observability::logger("http")->warn("conn={} req={} upstream {} sent a bad body: {}",
                                        c.conn_id, rec.req_id, rec.upstream, ec.message());
    co_await send_local(c, rec, reply::upstream_reset, 0, false);
    co_return;
  }
  rec.error = ec == beast::error::timeout ? "upstream_timeout" : "upstream_reset";
  observability::logger("http")->warn(
      "conn={} req={} upstream {} failed mid-response after {} bytes: {}", c.conn_id, rec.req_id,
      rec.upstream, rec.bytes_out, ec.message());
}

// Bytes to the client: what OpenSSL and the socket take at once go without an asynchronous
// operation (tls_stream::write_now); what is left is returned for write_client_rest.
net::const_buffer write_client_now(connection& c, net::const_buffer bytes) noexcept {
  return bytes + c.stream.write_now(bytes);
}

// The rest of a client write, waiting under the body_idle deadline.
net::awaitable<error_code> write_client_rest(connection& c, net::const_buffer rest,
                                             std::chrono::milliseconds body_idle) {
  c.tcp().expires_after(body_idle);
  auto [ec, n] = co_await net::async_write(c.stream, rest, use_tuple);
  (void)n;
  co_return ec;
}

// The end of a relayed response: whether the client connection goes on, and whether the
// backend connection may serve another request, which it may only after a clean, complete
// exchange (both messages parsed to their end, no byte of the backend's left over): never
// with an unread rest that would be taken for the next response.
template <class Up>
outcome finished(const exchange<Up>& x, outcome out, bool client_keep_alive,
                 bool upstream_keep_alive) {
  out.client_keep_alive = client_keep_alive;
  if (upstream_keep_alive && x.res_p->is_done() && x.req_p.is_done() && x.ubuf.size() == 0)
    out.upstream_reusable = true;
  return out;
}

// Step 3 for a response with Content-Length (the common case; the length is kept for the
// client, so the body needs no re-framing): its header is serialized into the relay buffer
// right before the body's first piece, so a small response leaves in one write, and the body
// pieces follow as they are. Body bytes already read with the header are parsed without an
// asynchronous hop.
template <class Up>
net::awaitable<outcome> relay_counted(exchange<Up>& x, outcome out, bool client_keep_alive,
                                      bool upstream_keep_alive) {
  connection& c = x.c;
  auto& rec = x.rec;
  auto& res_p = *x.res_p;
  auto& res = res_p.get();
  // `out` comes from relay_response with what it already knows (upstream_bound, issue 10).
  std::size_t rchunk = relay_chunk;
  if (const auto cl = res_p.content_length(); cl && *cl < relay_chunk)
    rchunk = std::max<std::size_t>(static_cast<std::size_t>(*cl), 1);
  const std::size_t head = header_size(res.base());
  x.chunk = std::make_unique_for_overwrite<char[]>(head + rchunk);  // not zeroed
  put_header(res.base(), x.chunk.get());
  char* const body = x.chunk.get() + head;
  rec.status = rec.upstream_status;
  bool header_sent = false;
  // A body that is not there yet never holds the header back.
  if (!res_p.is_done() && x.ubuf.size() == 0) {
    if (const auto rest = write_client_now(c, net::buffer(x.chunk.get(), head)); rest.size() > 0) {
      if (co_await write_client_rest(c, rest, x.body_idle)) {
        rec.error = "client_closed";
        co_return out;
      }
    }
    header_sent = true;
  }
  while (!res_p.is_done()) {
    res.body().data = body;
    res.body().size = rchunk;
    error_code ec;
    std::size_t used = 0;
    if (x.ubuf.size() > 0) {
      used = res_p.put(x.ubuf.data(), ec);
      x.ubuf.consume(used);
      if (ec == bhttp::error::need_buffer) ec = {};
    }
    if (used == 0 && !ec) {
      x.utcp.expires_after(x.body_idle);
      // read_some, not read: a long-poll (OWA notifications) trickles small chunks that must
      // reach the client as they come, not once a whole buffer is full.
      std::size_t n = 0;
      std::tie(ec, n) = co_await bhttp::async_read_some(x.up, x.ubuf, res_p, use_tuple);
      if (ec == bhttp::error::need_buffer) ec = {};
    }
    if (ec) {
      co_await body_read_failed(x, ec, header_sent);
      co_return out;
    }
    const std::size_t got = rchunk - res.body().size;
    if (got == 0) continue;  // only framing parsed
    const char* from = header_sent ? body : x.chunk.get();
    if (const auto rest = write_client_now(c, net::buffer(from, static_cast<std::size_t>(body + got - from)));
        rest.size() > 0) {
      if (co_await write_client_rest(c, rest, x.body_idle)) {
        rec.error = "client_closed";
        co_return out;
      }
    }
    header_sent = true;
    rec.bytes_out += got;
  }
  if (!header_sent) {  // no body (HEAD, 204, 304, Content-Length: 0)
    if (const auto rest = write_client_now(c, net::buffer(x.chunk.get(), head)); rest.size() > 0) {
      if (co_await write_client_rest(c, rest, x.body_idle)) {
        rec.error = "client_closed";
        co_return out;
      }
    }
  }
  co_return finished(x, out, client_keep_alive, upstream_keep_alive);
}

template <class Up>
net::awaitable<outcome> relay_chunked(exchange<Up>& x, outcome out, bool client_keep_alive,
                                      bool upstream_keep_alive);

// Step 3: the response, re-framed for the client, header then body pieces as they come.
template <class Up>
net::awaitable<outcome> relay_response(exchange<Up>& x) {
  connection& c = x.c;
  auto& rec = x.rec;
  auto& res_p = *x.res_p;
  outcome out;
  rec.upstream_first_byte_us = micros(steady::now() - x.t0);
  auto& res = res_p.get();
  rec.upstream_status = static_cast<int>(res.result_int());
  const bool upstream_keep_alive = res.keep_alive();
  // Before sanitizing: WWW-Authenticate and Persistent-Auth as the backend sent them (issue 10).
  out.upstream_bound = upstream::response_binds_connection(res);
  out.persistent_auth = upstream::persistent_auth(res);
  sanitize_response(res, response_policy{.hsts = x.plan.hsts});
  // Re-frame for the client: a length is kept; a chunked or close-delimited body goes chunked
  // to an HTTP/1.1 client; an HTTP/1.0 client gets a close-delimited body.
  const bool client_11 = x.plan.client_version >= 11;
  bool client_keep_alive = x.plan.client_keep_alive && !c.w.draining;
  if (!res.has_content_length() && !x.plan.head && res.result_int() != 204 &&
      res.result_int() != 304) {
    if (client_11)
      res.chunked(true);
    else
      client_keep_alive = false;
  }
  res.version(x.plan.client_version);
  res.keep_alive(client_keep_alive);
  if (res.has_content_length())
    co_return co_await relay_counted(x, out, client_keep_alive, upstream_keep_alive);
  co_return co_await relay_chunked(x, out, client_keep_alive, upstream_keep_alive);
}

// Step 3 for a body without a length (chunked or close-delimited from the backend): re-framed
// by Beast's serializer, chunked to an HTTP/1.1 client. Its own coroutine, so that the
// serializer is not in the frame of every counted response (Asio caches frames of at most
// 1020 bytes).
template <class Up>
net::awaitable<outcome> relay_chunked(exchange<Up>& x, outcome out, bool client_keep_alive,
                                      bool upstream_keep_alive) {
  connection& c = x.c;
  auto& rec = x.rec;
  auto& res_p = *x.res_p;
  auto& res = res_p.get();
  bhttp::serializer<false, bhttp::buffer_body, flat_fields> rs{res};
  res.body().data = nullptr;
  res.body().size = 0;
  res.body().more = !res_p.is_done();
  c.tcp().expires_after(x.body_idle);
  // The relay buffer: a known small body needs no more than its length (not zeroed).
  std::size_t rchunk = relay_chunk;
  if (const auto cl = res_p.content_length(); cl && *cl < relay_chunk)
    rchunk = std::max<std::size_t>(static_cast<std::size_t>(*cl), 1);
  x.chunk = std::make_unique_for_overwrite<char[]>(rchunk);
  // A small response mostly comes whole with its header: then its first body piece is parsed
  // from ubuf (no wait: every buffered byte is body) and the relay's first write_piece sends it
  // with the header, in one TLS record and one send. Otherwise the header goes out at once: a
  // body that is not there yet never holds it back.
  if (!(res.has_content_length() && !res_p.is_done() && x.ubuf.size() > 0)) {
    auto [ec, n] = co_await bhttp::async_write_header(c.stream, rs, use_tuple);
    (void)n;
    if (ec) {
      rec.status = rec.upstream_status;
      rec.error = "client_closed";
      co_return out;
    }
  }
  rec.status = rec.upstream_status;
  while (!res_p.is_done()) {
    res.body().data = x.chunk.get();
    res.body().size = rchunk;
    x.utcp.expires_after(x.body_idle);
    // read_some, not read: a long-poll (OWA notifications) trickles small chunks that must
    // reach the client as they come, not once a whole buffer is full.
    auto [ec, n] = co_await bhttp::async_read_some(x.up, x.ubuf, res_p, use_tuple);
    (void)n;
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) {
      co_await body_read_failed(x, ec, rs.is_header_done());
      co_return out;
    }
    const std::size_t got = rchunk - res.body().size;
    if (got == 0 && !res_p.is_done()) continue;  // only framing parsed (a chunk header)
    c.tcp().expires_after(x.body_idle);
    const error_code wec =
        co_await write_piece(c.stream, rs, res.body(), x.chunk.get(), got, !res_p.is_done());
    if (wec) {
      rec.error = "client_closed";
      co_return out;
    }
    rec.bytes_out += got;
  }
  if (!rs.is_done()) {
    c.tcp().expires_after(x.body_idle);
    const error_code wec = co_await write_piece(c.stream, rs, res.body(), nullptr, 0, false);
    if (wec) {
      rec.error = "client_closed";
      co_return out;
    }
  }
  co_return finished(x, out, client_keep_alive, upstream_keep_alive);
}

// A 401 to a request that went without a token on a Kerberos session (relay_keeping): not for
// the client. Its body is read and dropped when it is small and framed (Content-Length or
// chunked, up to 64 KiB), so the connection can carry the request again; otherwise the
// connection is left to close.
template <class Up>
net::awaitable<outcome> drop_refusal(exchange<Up>& x) {
  constexpr std::size_t limit = 65536;
  auto& res_p = *x.res_p;
  auto& res = res_p.get();
  outcome out;
  out.resend = true;
  const bool framed = res_p.content_length().has_value() || res_p.chunked();
  const bool small = !res_p.content_length() || *res_p.content_length() <= limit;
  if (framed && small && !res_p.is_done()) {
    auto sink = std::make_unique_for_overwrite<char[]>(relay_chunk);
    std::size_t total = 0;
    while (!res_p.is_done() && total <= limit) {
      res.body().data = sink.get();
      res.body().size = relay_chunk;
      x.utcp.expires_after(x.body_idle);
      auto [ec, n] = co_await bhttp::async_read_some(x.up, x.ubuf, res_p, use_tuple);
      (void)n;
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec) break;
      total += relay_chunk - res.body().size;
    }
  }
  out.upstream_reusable = res.keep_alive() && res_p.is_done() && x.ubuf.size() == 0;
  co_return out;
}

// Sends a kept request again, `authorization` added as the last field of its header.
template <class Up>
net::awaitable<bool> send_again(exchange<Up>& x, const sent_request& sent,
                                std::string_view authorization) {
  constexpr std::string_view name = "Authorization: ";
  const std::size_t head = sent.header - 2;  // before the final empty line
  const std::size_t n = head + name.size() + authorization.size() + 4 + sent.body;
  auto out = std::make_unique_for_overwrite<char[]>(n);
  char* p = std::copy_n(sent.bytes.get(), head, out.get());
  p = std::copy(name.begin(), name.end(), p);
  p = std::copy(authorization.begin(), authorization.end(), p);
  p = std::copy_n("\r\n\r\n", 4, p);
  std::copy_n(sent.bytes.get() + sent.header, sent.body, p);
  co_return co_await send_whole(x, net::buffer(out.get(), n));
}

// One exchange: the request (`again`: a kept one, sent again with `authorization`; none when
// `resumed`: a parked exchange goes on), the response header, then the response relayed (or
// dropped: relay_keeping's 401). The exchange lives outside the frame, as serve_request's
// request (session.cpp): the frame stays small enough for Asio's per-thread block cache, and a
// parked exchange outlives it.
template <class Up>
net::awaitable<outcome> run_exchange(std::unique_ptr<exchange<Up>> owned, const sent_request* again,
                                     std::string_view authorization, bool resumed) {
  exchange<Up>& x = *owned;
  if (!resumed) {
    const bool sent = again != nullptr ? co_await send_again(x, *again, authorization)
                                       : co_await send_request(x);
    if (!sent) co_return outcome{};
  }
  switch (co_await receive_response_header(x)) {
    case header_step::ended:
      co_return outcome{};
    case header_step::parked:
      if constexpr (std::is_same_v<Up, beast::tcp_stream>) {
        held_exchange_ptr& slot = *x.park;
        slot = std::make_unique<plain_held>(std::move(owned));
      }
      co_return outcome{.held = true};
    case header_step::ready:
      break;
  }
  // Passive health (issue 13): a 5xx counts against this server, anything else clears it.
  const unsigned status = x.res_p->get().result_int();
  if (x.c.rt.health) x.c.rt.health->report(x.server, status >= 500);
  if (x.keep != nullptr && x.keep->bytes && status == 401) co_return co_await drop_refusal(x);
  co_return co_await relay_response(x);
}

template <class Up>
std::unique_ptr<exchange<Up>> make_exchange(connection& c, Up& up, upstream::connection& uc,
                                            flat_request_parser<bhttp::buffer_body>& req_p,
                                            const relay_plan& plan, observability::access_record& rec,
                                            steady::time_point t0, sent_request* keep,
                                            held_exchange_ptr* park) {
  const auto body_idle =
      plan.body_idle.count() > 0 ? plan.body_idle : ms(c.rt.cfg->timeouts.body_idle);
  return std::unique_ptr<exchange<Up>>(new exchange<Up>{
      c, up, uc.tcp(), req_p, plan, rec, t0, body_idle, {}, {}, {}, keep, uc.server, park});
}

}  // namespace

bool body_at_hand(const connection& c, const flat_request_parser<bhttp::buffer_body>& req_p,
                  const relay_plan& plan) {
  return !plan.request_has_body || whole_small_body(c, req_p, plan) > 0;
}

net::awaitable<outcome> relay(connection& c, upstream::connection& uc,
                              flat_request_parser<bhttp::buffer_body>& req_p,
                              const relay_plan& plan, observability::access_record& rec,
                              steady::time_point t0, held_exchange_ptr* park) {
  return uc.visit([&](auto& up) {
    return run_exchange(make_exchange(c, up, uc, req_p, plan, rec, t0, nullptr, park), nullptr,
                        {}, false);
  });
}

net::awaitable<outcome> relay_keeping(connection& c, upstream::connection& uc,
                                      flat_request_parser<bhttp::buffer_body>& req_p,
                                      const relay_plan& plan, observability::access_record& rec,
                                      steady::time_point t0, sent_request& sent,
                                      held_exchange_ptr* park) {
  return uc.visit([&](auto& up) {
    return run_exchange(make_exchange(c, up, uc, req_p, plan, rec, t0, &sent, park), nullptr, {},
                        false);
  });
}

net::awaitable<outcome> relay_again(connection& c, upstream::connection& uc,
                                    flat_request_parser<bhttp::buffer_body>& req_p,
                                    const relay_plan& plan, observability::access_record& rec,
                                    steady::time_point t0, const sent_request& sent,
                                    std::string_view authorization, held_exchange_ptr* park) {
  return uc.visit([&](auto& up) {
    return run_exchange(make_exchange(c, up, uc, req_p, plan, rec, t0, nullptr, park), &sent,
                        authorization, false);
  });
}

void hold_parked(held_exchange& held, std::unique_ptr<held_owner> owner) {
  exchange<beast::tcp_stream>& x = *static_cast<plain_held&>(held).x;
  x.up.socket().async_wait(
      net::socket_base::wait_read,
      net::bind_allocator(exact_allocator<void>(),
                          [&x, self = std::move(owner)](const error_code& ec) mutable {
                            x.hold_ec = ec;
                            held_owner& o = *self;
                            o.resume(std::move(self));
                          }));
}

net::awaitable<outcome> relay_resume(held_exchange_ptr& held) {
  std::unique_ptr<exchange<beast::tcp_stream>> owned = std::move(static_cast<plain_held&>(*held).x);
  held.reset();
  owned->park = &held;  // it may park again: an interim response, then another hold
  return run_exchange(std::move(owned), nullptr, {}, true);
}

}  // namespace cbagate::http
