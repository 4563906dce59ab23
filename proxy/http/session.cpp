#include "http/session.hpp"

#include <algorithm>
#include <chrono>
#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "delegation/kerberos.hpp"
#include "http/framing.hpp"
#include "http/local_reply.hpp"
#include "http/sanitize.hpp"
#include "http/tls_stream.hpp"
#include "observability/log.hpp"
#include "routing/authorize.hpp"
#include "routing/normalize.hpp"

namespace cbagate::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using namespace net::experimental::awaitable_operators;
using steady = std::chrono::steady_clock;
using client_stream = tls_stream;  // no buffers of its own (tls_stream.hpp)

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
constexpr std::size_t relay_chunk = 16384;

template <class D>
std::int64_t micros(D d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

std::chrono::milliseconds ms(config::seconds_f s) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(s);
}

bool is_disconnect(const error_code& ec) {
  return ec == net::error::eof || ec == net::ssl::error::stream_truncated ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::operation_aborted || ec == beast::error::timeout;
}

// Everything a connection keeps between its requests.
struct connection {
  client_stream& stream;
  beast::flat_buffer& buf;
  const runtime& rt;
  worker& w;
  session_handle& handle;
  const identity::client_identity& id;
  std::uint64_t conn_id;
  std::uint64_t requests = 0;
  std::string client;       // "ip:port"
  std::string client_ip;
  std::string sni;
  std::string tls_version;
  bool resumed = false;
  std::shared_ptr<upstream::pool> pool;  // of this connection's runtime

  client_stream& tcp() { return stream; }
};

// What one exchange ended with; decides keep-alive on both sides.
struct outcome {
  bool client_keep_alive = false;
  bool upstream_reusable = false;  // the backend connection may go back to the pool
};

// --- reading the request header ----------------------------------------------------------------

enum class header_status { ok, closed, timeout, too_large, malformed, error };

// Reads until the blank line that ends the header, into c.buf. Reads are capped so that the body
// bytes that may arrive together with the header never exceed limits.read_ahead_bytes: that is
// all the body the proxy holds before the upstream is ready (the uploadReadAheadSize analogue).
// A violation the raw scan can already see in an incomplete block ends the read with
// `malformed` and sets `violation`: a request with bare-LF line endings never sends CRLF CRLF,
// and would otherwise wait for timeouts.request_header and get 408 instead of its 400.
// timeouts.request_header is one deadline for the whole header, counted from its first byte:
// a client trickling a byte at a time cannot push it back (slow loris).
net::awaitable<header_status> read_header_block(connection& c, std::size_t& header_len,
                                                std::optional<errc>& violation) {
  const auto& lim = c.rt.cfg->limits;
  const std::size_t read_cap = std::max<std::size_t>(lim.read_ahead_bytes, 1024);
  const scan_limits slim{lim.max_header_fields, lim.max_target_bytes};
  std::size_t searched = 0;
  bool first = c.buf.size() == 0;
  steady::time_point header_deadline = steady::now() + ms(c.rt.cfg->timeouts.request_header);
  for (;;) {
    std::string_view data(static_cast<const char*>(c.buf.data().data()), c.buf.size());
    const std::size_t from = searched >= 3 ? searched - 3 : 0;
    if (auto pos = data.find("\r\n\r\n", from); pos != std::string_view::npos) {
      header_len = pos + 4;
      if (header_len > lim.max_request_header_bytes) co_return header_status::too_large;
      co_return header_status::ok;
    }
    // Scan again only when a line may have ended (CR, LF) or a NUL came: at most one scan per
    // line, and max_header_fields bounds the lines.
    if (data.substr(searched).find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
      if (auto scan = scan_header_prefix(data, slim); scan.error) {
        violation = scan.error;
        co_return header_status::malformed;
      }
    }
    searched = data.size();
    if (data.size() >= lim.max_request_header_bytes) co_return header_status::too_large;
    // Between requests the idle timeout applies; once a byte has come, the header deadline.
    if (first)
      c.tcp().expires_after(ms(c.rt.cfg->timeouts.idle));
    else
      c.tcp().expires_at(header_deadline);
    error_code ec;
    std::size_t n = 0;
    // An idle connection (an ActiveSync device between requests) waits without a read buffer.
    if (first) std::tie(ec) = co_await c.stream.async_wait_readable(use_tuple);
    if (!ec) {
      // Small requests need a small buffer: it grows (doubling) only when a read fills it.
      const std::size_t room =
          std::min({read_cap, lim.max_request_header_bytes + 4 - data.size(),
                    std::max<std::size_t>(4096, c.buf.capacity() - c.buf.size())});
      std::tie(ec, n) = co_await c.stream.async_read_some(c.buf.prepare(room), use_tuple);
    }
    if (ec) {
      if (ec == beast::error::timeout) co_return first ? header_status::closed : header_status::timeout;
      co_return (ec == net::error::eof || ec == net::ssl::error::stream_truncated ||
                 ec == net::error::connection_reset)
                    ? header_status::closed
                    : header_status::error;
    }
    c.buf.commit(n);
    if (first) {
      first = false;
      c.handle.idle = false;
      header_deadline = steady::now() + ms(c.rt.cfg->timeouts.request_header);
    }
  }
}

// --- local replies -------------------------------------------------------------------------------

net::awaitable<void> send_local(connection& c, observability::access_record& rec, reply r,
                                int substatus, bool keep_alive, unsigned version = 11) {
  const local_reply_info info = info_for(r, substatus);
  keep_alive = keep_alive && !info.must_close;
  auto res = make_local_reply(info, version, keep_alive);
  rec.status = static_cast<int>(res.result_int());
  rec.substatus = substatus;
  if (rec.error.empty()) rec.error = std::string(info.code);
  c.tcp().expires_after(ms(c.rt.cfg->timeouts.body_idle));
  auto [ec, n] = co_await bhttp::async_write(c.stream, res, use_tuple);
  (void)n;
  if (ec) rec.error = rec.error.empty() ? "client_closed" : rec.error;
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

// The lean watch of a held request: shared with the readiness handler, which may run after the
// exchange has moved on (then `live` is false and it does nothing).
struct client_watch {
  explicit client_watch(beast::tcp_stream* up) : upstream(up) {}
  beast::tcp_stream* upstream;
  bool live = true;
  bool fired = false;
};

// True when a whole response header is already at hand for a plain backend connection: in
// ubuf, or in the socket (read into ubuf without waiting). A TLS backend is never asked (its
// bytes go through OpenSSL).
template <class Up>
bool response_header_ready(Up& up, beast::flat_buffer& ubuf) {
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
                                                bhttp::response_parser<bhttp::buffer_body>& p) {
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

// --- the exchange with the backend ---------------------------------------------------------------

struct exchange_plan {
  bool request_has_body = false;
  bool send_continue = false;      // the client sent Expect: 100-continue
  bool head = false;
  std::uint64_t max_body = 0;      // 0 = unlimited
  std::chrono::milliseconds response_timeout{0};
  // The client's own version and keep-alive wish, taken before the request is rewritten for
  // the backend (HTTP/1.1, keep-alive, Connection removed): the response is framed for these.
  unsigned client_version = 11;
  bool client_keep_alive = false;
};

// Streams the request (header + body) to the backend and the response back to the client.
// Returns the outcome; fills rec. Local error replies are sent from here while nothing of the
// response has gone to the client yet.
template <class Up>
net::awaitable<outcome> exchange(connection& c, Up& up, upstream::connection& uconn,
                                 bhttp::request_parser<bhttp::buffer_body>& req_p,
                                 const exchange_plan& plan, observability::access_record& rec,
                                 steady::time_point t0) {
  outcome out;
  auto& req = req_p.get();
  auto& utcp = uconn.tcp();
  const auto body_idle = ms(c.rt.cfg->timeouts.body_idle);

  // 100 Continue now that the backend is ready: the client sends its body only from here on.
  if (plan.send_continue) {
    bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
    c.tcp().expires_after(body_idle);
    auto [ec, n] = co_await bhttp::async_write(c.stream, cont, use_tuple);
    (void)n;
    if (ec) {
      rec.error = "client_closed";
      co_return out;
    }
  }

  // Request header, then body chunks as they come (never the whole body in memory).
  bhttp::request_serializer<bhttp::buffer_body> sr{req};
  req.body().data = nullptr;
  req.body().size = 0;
  req.body().more = plan.request_has_body;
  utcp.expires_after(body_idle);
  {
    auto [ec, n] = co_await bhttp::async_write_header(up, sr, use_tuple);
    (void)n;
    if (ec) {
      rec.error = "upstream_write_failed";
      co_await send_local(c, rec, reply::upstream_reset, 0, false);
      co_return out;
    }
  }
  std::unique_ptr<char[]> chunk;
  if (plan.request_has_body) {
    chunk = std::make_unique_for_overwrite<char[]>(relay_chunk);  // not zeroed: 16 KiB memset
    if (c.buf.capacity() < relay_chunk) c.buf.reserve(relay_chunk);  // body reads: full pieces
    while (!req_p.is_done()) {
      req.body().data = chunk.get();
      req.body().size = relay_chunk;
      c.tcp().expires_after(body_idle);
      // read_some, not read: relay what has come instead of waiting for a full buffer.
      auto [rec_ec, rn] = co_await bhttp::async_read_some(c.stream, c.buf, req_p, use_tuple);
      (void)rn;
      if (rec_ec == bhttp::error::need_buffer) rec_ec = {};
      if (rec_ec) {
        rec.error = is_disconnect(rec_ec) ? "client_closed" : "bad_request_body";
        if (!is_disconnect(rec_ec) && rec_ec != bhttp::error::partial_message)
          co_await send_local(c, rec, reply::bad_request, 0, false);
        co_return out;
      }
      const std::size_t got = relay_chunk - req.body().size;
      rec.bytes_in += got;
      if (plan.max_body && rec.bytes_in > plan.max_body) {
        rec.error = "body_too_large";
        co_await send_local(c, rec, reply::body_too_large, 0, false);
        co_return out;
      }
      if (got == 0 && !req_p.is_done()) continue;  // only framing parsed (a chunk header)
      utcp.expires_after(body_idle);
      const error_code wec = co_await write_piece(up, sr, req.body(), chunk.get(), got, !req_p.is_done());
      if (wec) {
        rec.error = "upstream_write_failed";
        co_await send_local(c, rec, reply::upstream_reset, 0, false);
        co_return out;
      }
    }
    if (!sr.is_done()) {
      utcp.expires_after(body_idle);
      const error_code wec = co_await write_piece(up, sr, req.body(), nullptr, 0, false);
      if (wec) {
        rec.error = "upstream_write_failed";
        co_await send_local(c, rec, reply::upstream_reset, 0, false);
        co_return out;
      }
    }
  }

  // The response header: held as long as the route allows (ActiveSync Ping: up to an hour),
  // while watching for the client to go away. A held request keeps no relay or read buffer,
  // nor the request header it has sent (the parser's state stays: is_done() below).
  req.base() = bhttp::request_header<>{};
  chunk.reset();
  if (c.buf.size() == 0) c.buf.shrink_to_fit();
  beast::flat_buffer ubuf;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> res_p;
  for (;;) {
    res_p.emplace();
    res_p->header_limit(static_cast<std::uint32_t>(c.rt.cfg->limits.max_response_header_bytes));
    res_p->body_limit(boost::none);
    if (plan.head) res_p->skip(true);
    utcp.expires_after(plan.response_timeout);
    error_code ec;
    if (response_header_ready(up, ubuf)) {
      // The backend has answered already (a quick request): nothing to watch for, and no
      // readiness wait to register on the client socket (an epoll_ctl per request).
      std::size_t hn = 0;
      std::tie(ec, hn) = co_await bhttp::async_read_header(up, ubuf, *res_p, use_tuple);
    } else {
      // A held request (an ActiveSync Ping, up to an hour) keeps only the upstream read and a
      // readiness wait on the client socket, whose handler cancels that read when the client
      // shows a sign of life. Only then (rare) do both sides get a coroutine each
      // (watch_client), which tells a client gone from a pipelined request.
      auto watch = std::make_shared<client_watch>(&utcp);
      c.tcp().expires_never();
      c.tcp().socket().async_wait(net::socket_base::wait_read, [watch](const error_code&) {
        if (!watch->live) return;
        watch->fired = true;
        watch->upstream->cancel();
      });
      std::size_t hn = 0;
      std::tie(ec, hn) = co_await bhttp::async_read_header(up, ubuf, *res_p, use_tuple);
      watch->live = false;
      if (!watch->fired) {
        error_code ignored;
        c.tcp().socket().cancel(ignored);
      } else if (ec == net::error::operation_aborted) {
        auto r = co_await (read_response_header(up, ubuf, *res_p) || watch_client(c));
        if (r.index() == 1) {
          rec.error = "client_closed";
          rec.status = 499;  // nginx's convention for "client closed the request"
          co_return out;
        }
        ec = std::get<0>(r);
      }
    }
    if (ec) {
      const bool timeout = ec == beast::error::timeout;
      rec.error = timeout ? "upstream_timeout" : "upstream_reset";
      spdlog::logger& log = *observability::logger("http");
      log.warn("conn={} req={} upstream {} failed before the response header: {}", c.conn_id,
               rec.req_id, rec.upstream, timeout ? std::string("response timeout") : ec.message());
      co_await send_local(c, rec, timeout ? reply::upstream_timeout : reply::upstream_reset, 0, false);
      co_return out;
    }
    const unsigned code = res_p->get().result_int();
    if (code >= 100 && code < 200) {
      if (code == 101) {  // no protocol upgrades through this proxy
        rec.error = "upstream_upgrade";
        co_await send_local(c, rec, reply::upstream_reset, 0, false);
        co_return out;
      }
      continue;  // interim responses are the proxy's business, not the client's
    }
    break;
  }
  rec.upstream_first_byte_us = micros(steady::now() - t0);
  auto& res = res_p->get();
  rec.upstream_status = static_cast<int>(res.result_int());
  const bool upstream_keep_alive = res.keep_alive();
  sanitize_response(res);
  // Re-frame for the client: a length is kept; a chunked or close-delimited body goes chunked
  // to an HTTP/1.1 client; an HTTP/1.0 client gets a close-delimited body.
  const bool client_11 = plan.client_version >= 11;
  bool client_keep_alive = plan.client_keep_alive && !c.w.draining;
  if (!res.has_content_length() && !plan.head && res.result_int() != 204 &&
      res.result_int() != 304) {
    if (client_11)
      res.chunked(true);
    else
      client_keep_alive = false;
  }
  res.version(plan.client_version);
  res.keep_alive(client_keep_alive);

  bhttp::response_serializer<bhttp::buffer_body> rs{res};
  res.body().data = nullptr;
  res.body().size = 0;
  res.body().more = !res_p->is_done();
  c.tcp().expires_after(body_idle);
  // The relay buffer: a known small body needs no more than its length (not zeroed).
  std::size_t rchunk = relay_chunk;
  if (!chunk) {
    if (const auto cl = res_p->content_length(); cl && *cl < relay_chunk)
      rchunk = std::max<std::size_t>(static_cast<std::size_t>(*cl), 1);
    chunk = std::make_unique_for_overwrite<char[]>(rchunk);
  }
  // A small response mostly comes whole with its header: then its first body piece is parsed
  // from ubuf (no wait: every buffered byte is body) and the relay's first write_piece sends it
  // with the header, in one TLS record and one send. Otherwise the header goes out at once: a
  // body that is not there yet never holds it back.
  if (!(res.has_content_length() && !res_p->is_done() && ubuf.size() > 0)) {
    auto [ec, n] = co_await bhttp::async_write_header(c.stream, rs, use_tuple);
    (void)n;
    if (ec) {
      rec.status = rec.upstream_status;
      rec.error = "client_closed";
      co_return out;
    }
  }
  rec.status = rec.upstream_status;
  while (!res_p->is_done()) {
    res.body().data = chunk.get();
    res.body().size = rchunk;
    utcp.expires_after(body_idle);
    // read_some, not read: a long-poll (OWA notifications) trickles small chunks that must
    // reach the client as they come, not once a whole buffer is full.
    auto [ec, n] = co_await bhttp::async_read_some(up, ubuf, *res_p, use_tuple);
    (void)n;
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec && !rs.is_header_done()) {
      // Nothing sent yet (the header waits for its first body piece): the client can be told.
      rec.error = "upstream_reset";
      observability::logger("http")->warn("conn={} req={} upstream {} sent a bad body: {}",
                                          c.conn_id, rec.req_id, rec.upstream, ec.message());
      co_await send_local(c, rec, reply::upstream_reset, 0, false);
      co_return out;
    }
    if (ec) {
      // The backend died mid-response: the client cannot be told by a status any more, only by
      // an incomplete message, so its connection is closed.
      rec.error = ec == beast::error::timeout ? "upstream_timeout" : "upstream_reset";
      observability::logger("http")->warn(
          "conn={} req={} upstream {} failed mid-response after {} bytes: {}", c.conn_id,
          rec.req_id, rec.upstream, rec.bytes_out, ec.message());
      co_return out;
    }
    const std::size_t got = rchunk - res.body().size;
    if (got == 0 && !res_p->is_done()) continue;  // only framing parsed (a chunk header)
    c.tcp().expires_after(body_idle);
    const error_code wec =
        co_await write_piece(c.stream, rs, res.body(), chunk.get(), got, !res_p->is_done());
    if (wec) {
      rec.error = "client_closed";
      co_return out;
    }
    rec.bytes_out += got;
  }
  if (!rs.is_done()) {
    c.tcp().expires_after(body_idle);
    const error_code wec = co_await write_piece(c.stream, rs, res.body(), nullptr, 0, false);
    if (wec) {
      rec.error = "client_closed";
      co_return out;
    }
  }
  out.client_keep_alive = client_keep_alive;
  // The backend connection is reused only after a clean, complete exchange.
  if (upstream_keep_alive && res_p->is_done() && req_p.is_done() && ubuf.size() == 0)
    out.upstream_reusable = true;
  co_return out;
}

// --- one request ---------------------------------------------------------------------------------

// Serves one request whose header block is in c.buf[0, header_len). Returns whether the client
// connection may carry another request.
net::awaitable<bool> serve_request(connection& c, std::size_t header_len) {
  const auto t0 = steady::now();
  const config::snapshot& cfg = *c.rt.cfg;
  observability::access_record rec;
  rec.time = std::chrono::system_clock::now();
  rec.conn_id = c.conn_id;
  rec.req_id = ++c.requests;
  rec.client = c.client;
  rec.sni = c.sni;
  rec.tls_version = c.tls_version;
  rec.tls_resumed = c.resumed;
  metrics& m = *c.rt.metrics;
  m.requests_total.inc();

  auto finish = [&](bool keep) {
    rec.total_us = micros(steady::now() - t0);
    // Copied only now: a held request keeps no copy of the certificate's strings.
    if (c.id.presented) {
      rec.cert_serial = c.id.serial;
      rec.cert_issuer = c.id.issuer;
      rec.cert_sha256 = c.id.sha256;
    }
    m.observe(rec);
    if (c.rt.access_log) c.rt.access_log->write(rec);
    return keep;
  };

  // Framing checks on the raw bytes first: what Beast would tolerate, we refuse.
  std::string_view raw(static_cast<const char*>(c.buf.data().data()), header_len);
  if (auto fe = scan_header_block(raw, scan_limits{cfg.limits.max_header_fields,
                                                     cfg.limits.max_target_bytes})) {
    rec.error = "framing:" + std::string(to_string(*fe));
    // Too many fields -> 431, a long target -> 414, the rest 400 (one table: local_reply.cpp).
    co_await send_local(c, rec, reply_for(error_source::downstream, make_error_code(*fe)), 0, false);
    co_return finish(false);
  }
  bhttp::request_parser<bhttp::buffer_body> req_p;
  req_p.header_limit(static_cast<std::uint32_t>(cfg.limits.max_request_header_bytes + 4));
  req_p.body_limit(boost::none);
  {
    error_code ec;
    const std::size_t used = req_p.put(net::buffer(raw.data(), raw.size()), ec);
    if (ec || !req_p.is_header_done() || used != header_len) {
      rec.error = "bad_request_header";
      co_await send_local(c, rec, ec ? reply_for(error_source::downstream, ec) : reply::bad_request,
                          0, false);
      co_return finish(false);
    }
  }
  c.buf.consume(header_len);
  auto& req = req_p.get();
  rec.method = std::string(req.method_string());
  if (auto ua = req.find(bhttp::field::user_agent); ua != req.end())
    rec.user_agent = std::string(ua->value());
  if (auto fe = check_request_framing(req.base())) {
    rec.error = "framing:" + std::string(to_string(*fe));
    co_await send_local(c, rec, reply::bad_request, 0, false);
    co_return finish(false);
  }
  if (static_cast<std::size_t>(std::distance(req.begin(), req.end())) > cfg.limits.max_header_fields) {
    rec.error = "too_many_fields";
    co_await send_local(c, rec, reply::header_too_large, 0, false);
    co_return finish(false);
  }
  const bool has_body = req.chunked() || (req.has_content_length() && req_p.content_length() &&
                                          *req_p.content_length() > 0);
  // Only GET/HEAD/... without a body may keep the connection after a local refusal; with a
  // body the unread bytes would be taken for the next request.
  const bool keep_after_refusal = !has_body && req.keep_alive() && !c.w.draining;

  if (req.method() == bhttp::verb::connect || req.method() == bhttp::verb::unknown) {
    rec.error = "method_not_supported";
    co_await send_local(c, rec, reply::not_implemented, 0, false);
    co_return finish(false);
  }

  // Normalize once; route on the normalized path; forward exactly that path.
  auto target = routing::normalize_target(req.target(), cfg.limits.max_target_bytes);
  if (!target) {
    rec.path = "";
    rec.error = "bad_path:" + target.error().message();
    // A target over limits.max_target_bytes is 414 (the raw scan normally catches it first).
    co_await send_local(c, rec,
                        target.error() == routing::errc::target_too_long ? reply::uri_too_long
                                                                         : reply::bad_request,
                        0, false);
    co_return finish(false);
  }
  rec.path = target->path;
  rec.query = target->query;
  const config::route* route = c.rt.routes.match(target->path);
  if (!route) {
    rec.error = "no_route";
    co_await send_local(c, rec, reply::not_found, 0, keep_after_refusal, req.version());
    co_return finish(keep_after_refusal);
  }
  rec.route = route->prefix;

  // Authorize: the certificate outcome of this connection against the route's policy. The
  // chain was verified at the handshake; a kept-alive connection or a resumed session (tickets
  // live for tls.session_timeout) can outlast the certificate, so its validity period is checked
  // again for every request.
  const identity::client_identity* id = &c.id;
  identity::client_identity aged;
  if (c.id.ok()) {
    const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    if (now > c.id.not_after || now < c.id.not_before) {
      aged = c.id;
      aged.reason = now > c.id.not_after ? identity::rejection::expired
                                         : identity::rejection::not_yet_valid;
      aged.upn.clear();
      id = &aged;
    }
  }
  const routing::decision d = routing::authorize(*route, *id);
  if (!d.allow) {
    rec.error = std::string(identity::to_string(d.reason));
    m.count_rejection(d.reason);
    co_await send_local(c, rec, reply::forbidden, d.substatus, keep_after_refusal, req.version());
    co_return finish(keep_after_refusal);
  }
  if (d.forward_identity && cfg.access_log.log_upn) rec.upn = id->upn;

  // Revocation (issue 5, docs/revocation.md): every request that forwards an identity is
  // checked against the current state (this runtime's CRL files, the process-wide CDP and OCSP
  // caches), kept-alive and resumed connections alike, so revoking a certificate cuts off a
  // device that holds its connection open. The good path is a lookup; a status that needs a
  // download waits here (asynchronously, bounded by revocation.timeout) without blocking the
  // I/O thread.
  // The settings of the newest runtime (a reload's CRL files apply to live connections too);
  // `rv` is this thread's cached copy: not used after a co_await (a reload may replace it).
  const revocation_current* rv = c.rt.revocation_now ? c.w.current_revocation(*c.rt.revocation_now)
                                                     : c.rt.revocation.get();
  if (d.forward_identity && c.rt.revocation_checker != nullptr && rv != nullptr &&
      rv->policy.checks != revocation::mode::off) {
    revocation::checker& checker = *c.rt.revocation_checker;
    const config::fail_mode fail = route->revocation_fail.value_or(rv->fail);
    const std::int64_t now_unix = std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count();
    std::optional<revocation::verdict> v = checker.try_check(id->chain, rv->policy, now_unix);
    if (!v) {
      const auto ex = co_await net::this_coro::executor;
      v = co_await checker.async_check(id->chain, rv->policy, ex);  // copies the policy first
    }
    const bool unknown = v->state == revocation::status::unknown;
    if (v->state == revocation::status::revoked || (unknown && fail == config::fail_mode::closed)) {
      checker.count(*v, false);
      rec.error = unknown ? "revocation_unknown" : "revoked";
      rec.extra.emplace_back("revocation_source", std::string(revocation::to_string(v->from)));
      if (!v->reason.empty()) rec.extra.emplace_back("revocation_reason", v->reason);
      m.count_rejection(identity::rejection::revoked);
      observability::logger("revocation")
          ->info("conn={} req={} certificate {} serial {} refused: {} ({}{}{})", c.conn_id,
                 rec.req_id, id->subject, id->serial, rec.error, revocation::to_string(v->from),
                 v->reason.empty() ? "" : ": ", v->reason);
      co_await send_local(c, rec, reply::forbidden, 13, keep_after_refusal, req.version());
      co_return finish(keep_after_refusal);
    }
    if (unknown) {
      // Fail open: allowed, and said so (the contract's line; the counter below).
      std::string subject = id->subject;
      std::string serial = id->serial;
      if (v->index > 0 && v->index < id->chain.size()) {
        subject = "the CA at depth " + std::to_string(v->index) + " of " + id->subject;
        serial.clear();
        static constexpr char hex[] = "0123456789ABCDEF";
        for (const char b : id->chain[v->index].serial) {
          serial += hex[(static_cast<unsigned char>(b) >> 4) & 0x0F];
          serial += hex[static_cast<unsigned char>(b) & 0x0F];
        }
      }
      observability::logger("revocation")
          ->warn("revocation status unknown for {} serial {}: {}; allowed (fail open)", subject,
                 serial, v->reason.empty() ? std::string("unknown") : v->reason);
      rec.extra.emplace_back("revocation", "unknown_allowed");
    }
    checker.count(*v, unknown);
  }

  const std::uint64_t max_body = route->max_body_bytes ? route->max_body_bytes : cfg.limits.max_body_bytes;
  if (max_body && req_p.content_length() && *req_p.content_length() > max_body) {
    rec.error = "body_too_large";
    co_await send_local(c, rec, reply::body_too_large, 0, false, req.version());
    co_return finish(false);
  }

  // Build the upstream request in place: sanitized header, canonical target, our identity.
  exchange_plan plan;
  plan.request_has_body = has_body;
  plan.head = req.method() == bhttp::verb::head;
  plan.max_body = max_body;
  plan.client_version = req.version();
  plan.client_keep_alive = req.keep_alive();
  plan.response_timeout = ms(route->response_timeout.count() > 0 ? route->response_timeout
                                                                  : cfg.timeouts.upstream_response);
  const bool was_chunked = req.chunked();
  if (auto e = req.find(bhttp::field::expect); e != req.end()) {
    if (beast::iequals(e->value(), "100-continue") && req.version() >= 11 && has_body) {
      plan.send_continue = true;
    } else if (!beast::iequals(e->value(), "100-continue")) {
      rec.error = "expectation_failed";
      co_await send_local(c, rec, reply::expectation_failed, 0, false, req.version());
      co_return finish(false);
    }
    req.erase(bhttp::field::expect);
  }
  std::string host = target->authority.empty() ? std::string(req[bhttp::field::host])
                                               : target->authority;
  sanitize_request(req.base(), sanitize_options{cfg.identity.header,
                                                route->client_cert != config::route_cert_policy::none});
  add_forwarding_headers(req.base(), forwarding_info{c.client_ip, "https", host});
  if (!host.empty()) req.set(bhttp::field::host, host);
  // Header mode: the UPN in the configured header. Kerberos mode: the identity travels only
  // as a Negotiate token, made below for the backend connection it will be sent on.
  const bool kerberos = cfg.identity.mode == config::identity_mode::kerberos && d.forward_identity;
  if (d.forward_identity && !kerberos) req.set(cfg.identity.header, id->upn);
  req.target(target->forward_target());
  req.version(11);
  if (was_chunked) req.chunked(true);
  req.keep_alive(true);

  // The backend connection (pooled or new, with failover between servers).
  upstream::pool& pool = *c.pool;
  c.tcp().expires_never();
  // In Kerberos mode backend connections are bound to the user (IIS may keep a connection
  // authenticated): a connection made for one user is never handed to another.
  // (A named argument: GCC 12 destroys a coroutine argument built by a conditional expression
  // twice.)
  std::string pool_key = kerberos ? id->upn : std::string();
  upstream::lease lease = co_await pool.acquire(std::move(pool_key));
  if (!lease.conn) {
    rec.error = "upstream_connect_failed";
    rec.upstream_connect_us = micros(lease.connect_time);
    observability::logger("upstream")->error("conn={} req={} no backend reachable: {}", c.conn_id,
                                             rec.req_id, lease.detail);
    m.upstream_connect_failures.inc();
    co_await send_local(c, rec, reply::upstream_connect_failed, 0, false, plan.client_version);
    co_return finish(false);
  }
  if (!lease.reused) rec.upstream_connect_us = micros(lease.connect_time);
  rec.upstream = pool.server(lease.conn->server).url;
  lease.conn->requests++;

  if (kerberos) {
    // S4U2Self + S4U2Proxy on the delegation workers (never on this I/O thread), bound to this
    // backend TLS connection's certificate (tls-server-end-point) for Extended Protection.
    delegation::kerberos_delegator& krb = *c.rt.kerberos;
    const auto principal = krb.principal_for(id->upn);
    const bool warm = principal && krb.cached(*principal);
    const auto t_krb = steady::now();
    std::string upn = id->upn;
    std::vector<unsigned char> bindings = lease.conn->tls_server_end_point;
    auto token = co_await krb.async_token(std::move(upn), std::move(bindings));
    rec.delegation_us = micros(steady::now() - t_krb);
    rec.extra.emplace_back("krb_cache", warm ? "hit" : "miss");
    m.count_delegation(token ? error_code{} : token.error(), warm, rec.delegation_us);
    if (!token) {
      const error_code kec = token.error();
      rec.error = "delegation:" + kec.message();
      observability::logger("delegation")
          ->warn("conn={} req={} kerberos: no ticket for {} ({}): {}", c.conn_id, rec.req_id,
                 id->upn, principal ? *principal : std::string("?"), kec.message());
      pool.release(std::move(lease.conn));  // nothing was sent on it
      const reply r = kec == delegation::errc::kdc_unreachable || kec == delegation::errc::keytab
                          ? reply::kdc_unavailable
                      : kec == delegation::errc::internal ? reply::internal
                                                           : reply::delegation_denied;
      co_await send_local(c, rec, r, 0, false, plan.client_version);
      co_return finish(false);
    }
    req.set(bhttp::field::authorization, "Negotiate " + *token);
  }

  upstream::connection& uc = *lease.conn;
  outcome out = co_await uc.visit([&](auto& up) { return exchange(c, up, uc, req_p, plan, rec, t0); });
  if (out.upstream_reusable) pool.release(std::move(lease.conn));
  co_return finish(out.client_keep_alive && rec.error.empty());
}

// --- the connection ------------------------------------------------------------------------------

net::awaitable<void> serve_connection(net::ip::tcp::socket socket, std::shared_ptr<const runtime> rt,
                                      worker& w) {
  const config::snapshot& cfg = *rt->cfg;
  metrics& m = *rt->metrics;
  const std::uint64_t conn_id = w.new_conn_id();
  error_code ec;
  auto remote = socket.remote_endpoint(ec);
  std::string client_ip = ec ? std::string("?") : remote.address().to_string();
  std::string client = ec ? std::string("?") : client_ip + ":" + std::to_string(remote.port());
  socket.set_option(net::ip::tcp::no_delay(true), ec);

  identity::client_identity id = identity::verifier::no_certificate();
  SSL* ssl = rt->tls->new_connection(&id);
  if (!ssl) {
    observability::logger("tls")->error("conn={} SSL_new failed", conn_id);
    co_return;
  }
  client_stream stream(std::move(socket), ssl);
  session_handle handle;
  handle.socket = &stream.socket();
  w.sessions.push_front(&handle);
  struct unregister {
    worker& w;
    session_handle* h;
    ~unregister() { w.sessions.remove(h); }
  } guard{w, &handle};

  m.connections_active.inc();
  struct active_gauge {
    metrics& m;
    ~active_gauge() { m.connections_active.dec(); }
  } gauge{m};

  stream.expires_after(ms(cfg.timeouts.handshake));
  auto [hec] = co_await stream.async_handshake(use_tuple);
  if (hec) {
    m.handshake_failures.inc();
    if (id.presented && !id.ok()) m.count_rejection(id.reason);
    auto& log = *observability::logger("tls");
    if (id.presented && !id.ok())
      log.info("conn={} client={} handshake refused: certificate {} ({}): {}", conn_id, client,
               identity::to_string(id.reason), id.subject, id.detail);
    else
      log.debug("conn={} client={} handshake failed: {}", conn_id, client, hec.message());
    co_return;
  }
  m.handshakes_total.inc();
  const bool resumed = SSL_session_reused(stream.native_handle()) == 1;
  if (resumed) m.handshakes_resumed.inc();

  beast::flat_buffer buf;
  connection c{stream,
               buf,
               *rt,
               w,
               handle,
               id,
               conn_id,
               0,
               std::move(client),
               std::move(client_ip),
               std::string(tls::server_context::server_name(stream.native_handle())),
               std::string(tls::server_context::version(stream.native_handle())),
               resumed,
               w.pool};

  for (;;) {
    handle.idle = true;
    if (w.draining && buf.size() == 0) break;
    std::size_t header_len = 0;
    std::optional<errc> violation;
    const header_status hs = co_await read_header_block(c, header_len, violation);
    handle.idle = false;
    if (hs == header_status::closed || hs == header_status::error) break;
    if (hs != header_status::ok) {
      observability::access_record rec;
      rec.time = std::chrono::system_clock::now();
      rec.conn_id = conn_id;
      rec.req_id = ++c.requests;
      rec.client = c.client;
      rec.sni = c.sni;
      rec.tls_version = c.tls_version;
      rec.tls_resumed = resumed;
      if (hs == header_status::too_large) {
        rec.error = "header_too_large";
        co_await send_local(c, rec, reply::header_too_large, 0, false);
      } else if (hs == header_status::malformed && violation) {
        rec.error = "framing:" + std::string(to_string(*violation));
        co_await send_local(c, rec, reply_for(error_source::downstream, make_error_code(*violation)),
                            0, false);
      } else {
        rec.error = "request_header_timeout";
        co_await send_local(c, rec, reply::request_timeout, 0, false);
      }
      m.requests_total.inc();
      m.observe(rec);
      if (rt->access_log) rt->access_log->write(rec);
      break;
    }
    const bool keep = co_await serve_request(c, header_len);
    if (!keep || w.draining) break;
    // Idle keep-alive connections (ActiveSync devices) should cost little: no read buffer while
    // waiting for the next request (read_header_block waits for readability first).
    if (buf.size() == 0) buf.shrink_to_fit();
  }

  // Orderly TLS close: best effort, bounded.
  stream.expires_after(std::chrono::seconds(1));
  co_await stream.async_shutdown(use_tuple);
}

}  // namespace

net::awaitable<void> run_session(net::ip::tcp::socket socket, std::shared_ptr<const runtime> rt,
                                 worker& w) {
  co_await serve_connection(std::move(socket), std::move(rt), w);
}

}  // namespace cbagate::http
