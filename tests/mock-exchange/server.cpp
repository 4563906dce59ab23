#include "server.hpp"

#include "conn_auth.hpp"
#include "eas.hpp"
#include "negotiate.hpp"
#include "ping_registry.hpp"
#include "replies.hpp"
#include "request_log.hpp"

#include "common/openssl_ptr.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <malloc.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <filesystem>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace cbagate::mock {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

constexpr auto use_nothrow = net::as_tuple(net::use_awaitable);
using parser_t = http::request_parser<http::buffer_body>;
using request_msg = http::request<http::buffer_body>;  // the parser's message
using tls_stream = net::ssl::stream<beast::tcp_stream>;

constexpr std::size_t chunk_size = 16 * 1024;     // body relay buffer, allocated per body only
constexpr std::size_t capture_limit = 64 * 1024;  // ActiveSync bodies kept for WBXML decoding

// ---------------------------------------------------------------------------------------------
// Small helpers

// "/owa" matches "/owa", "/owa/..." but not "/owafoo".
bool under(std::string_view path, std::string_view root) {
  return istarts_with(path, root) && (path.size() == root.size() || path[root.size()] == '/');
}

template <class T>
std::optional<T> to_number(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string iso_time(std::chrono::system_clock::time_point tp) {
  auto t = std::chrono::system_clock::to_time_t(tp);
  std::tm tm{};
  gmtime_r(&t, &tm);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count() %
            1000;
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string query_param(std::string_view query, std::string_view key) {
  while (!query.empty()) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = part.find('=');
    if (percent_decode(part.substr(0, eq)) == key) {
      return eq == std::string_view::npos ? std::string{} : percent_decode(part.substr(eq + 1));
    }
  }
  return {};
}

std::string endpoint_text(const tcp::endpoint& ep) {
  auto addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

// Bytes of /mock/bytes and /mock/chunked: offset i holds 'a' + i % 26.
void fill_pattern(char* out, std::uint64_t offset, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>('a' + (offset + i) % 26);
}

// SHA-256 of the request body, fed chunk by chunk; the OpenSSL context lives only while a body
// is being read, so idle and held connections do not carry it.
class sha256_stream {
 public:
  void update(const char* p, std::size_t n) {
    if (!ctx_) {
      ctx_.reset(EVP_MD_CTX_new());
      if (ctx_) EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr);
    }
    if (ctx_) EVP_DigestUpdate(ctx_.get(), p, n);
  }
  void finish() {
    if (!ctx_) {
      // SHA-256 of the empty string.
      hex_ = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
      return;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_DigestFinal_ex(ctx_.get(), md, &len);
    ctx_.reset();
    static constexpr char digits[] = "0123456789abcdef";
    hex_.clear();
    for (unsigned i = 0; i < len; ++i) {
      hex_ += digits[md[i] >> 4];
      hex_ += digits[md[i] & 0x0f];
    }
  }
  [[nodiscard]] const std::string& hex() {
    if (hex_.empty()) finish();
    return hex_;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, ossl::deleter<EVP_MD_CTX_free>> ctx_;
  std::string hex_;
};

// ---------------------------------------------------------------------------------------------
// State

struct shared_state {
  shared_state(const options& o, request_log& l, ping_registry& p) : opts(o), log(l), pings(p) {
    eas.ping_cap = o.ping_cap;
    eas.ping_min = o.ping_min;
    eas.ping_max = o.ping_max;
    eas.ping_max_folders = o.ping_max_folders;
  }
  const options& opts;
  request_log& log;
  ping_registry& pings;
  eas_settings eas;
  const negotiate_acceptor* negotiate = nullptr;  // --negotiate-keytab given
  std::vector<unsigned char> cb_hash;  // tls-server-end-point hash of our certificate (TLS only)
  std::atomic<std::uint64_t> next_request{1};
  std::atomic<std::uint64_t> next_connection{1};
  std::atomic<std::int64_t> open_connections{0};
  std::atomic<std::uint64_t> requests{0};
  std::mutex open_mu;                  // guards open_ids (connections live on several threads)
  std::set<std::uint64_t> open_ids;    // for /mock/connection/<id>
};

struct connection_info {
  std::uint64_t id = 0;
  bool tls = false;
  std::string listener;
  std::string peer;
  std::string client_subject;
  bool closed = false;  // the socket was closed on purpose or by the peer
  conn_auth_state auth;  // IIS-like connection-bound authentication (conn_auth.hpp)
  // --negotiate-persist (IIS authPersistNonNTLM): the principal a Kerberos token on /owa, /ecp
  // or ActiveSync authenticated this connection as, and the token-less requests it served since.
  std::string kerberos_user;
  std::uint64_t kerberos_uses = 0;
};

struct request_ctx {
  std::uint64_t id = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::chrono::system_clock::time_point wall = std::chrono::system_clock::now();
  std::string path;
  std::string query;
  std::vector<std::string> identities;
  std::string identity_echo = "-";
  std::uint64_t body_bytes = 0;
  sha256_stream sha;
  std::size_t capture_limit = 0;
  std::string captured;
  bool capture_overflow = false;
  bool continue_sent = false;
  bool body_done = false;
  unsigned status = 0;
  bool complete = false;
  std::string error;
  std::optional<std::string> cmd;
  bool logging = false;
  bool negotiate_enabled = false;          // an acceptor is configured
  std::optional<negotiate_outcome> nego;   // set when a Negotiate token came
  std::string session_user;     // --negotiate-persist: served as the connection's user, no token
  bool persistent_auth = false;  // --negotiate-persist: this token authenticated the connection
  json::object extra;  // command-specific log fields, filled only when logging

  void consume(const char* p, std::size_t n) {
    body_bytes += n;
    sha.update(p, n);
    if (captured.size() + n <= capture_limit) {
      captured.append(p, n);
    } else {
      capture_overflow = true;
    }
  }

  request_facts facts(const request_msg& req) const {
    request_facts f;
    f.method = req.method_string();
    f.path = path;
    f.query = query;
    f.content_type = req[http::field::content_type];
    f.identity = identities.empty() ? std::string_view{} : std::string_view(identities.front());
    f.identity_echo = identity_echo;
    f.body_bytes = body_bytes;
    f.body = captured;
    f.body_overflow = capture_overflow;
    return f;
  }
};

template <class Stream>
beast::tcp_stream& lowest(Stream& s) {
  return beast::get_lowest_layer(s);
}

template <class Stream>
constexpr bool is_tls_v = !std::is_same_v<Stream, beast::tcp_stream>;

// ---------------------------------------------------------------------------------------------
// Request body and responses

template <class Stream>
net::awaitable<beast::error_code> send_continue(Stream& s, const request_msg& req,
                                                request_ctx& ctx, const shared_state& st) {
  if (ctx.continue_sent || req.version() < 11) co_return beast::error_code{};
  auto it = req.find(http::field::expect);
  if (it == req.end() || !iequals(it->value(), "100-continue")) co_return beast::error_code{};
  ctx.continue_sent = true;
  static constexpr std::string_view line = "HTTP/1.1 100 Continue\r\n\r\n";
  lowest(s).expires_after(st.opts.idle_timeout);
  auto [ec, n] = co_await net::async_write(s, net::buffer(line.data(), line.size()), use_nothrow);
  co_return ec;
}

// Reads (counts, hashes, maybe captures) the whole request body through a bounded buffer.
template <class Stream>
net::awaitable<beast::error_code> read_body(Stream& s, beast::flat_buffer& buf, parser_t& p,
                                            request_ctx& ctx, const shared_state& st) {
  if (!p.is_done()) {
    if (auto ec = co_await send_continue(s, p.get(), ctx, st)) co_return ec;
    std::size_t size = chunk_size;
    if (auto cl = p.content_length(); cl && *cl < size) size = static_cast<std::size_t>(*cl);
    if (size == 0) size = 1;
    auto chunk = std::make_unique_for_overwrite<char[]>(size);
    if (size == chunk_size) buf.reserve(chunk_size);  // fewer, larger reads for big bodies
    while (!p.is_done()) {
      p.get().body().data = chunk.get();
      p.get().body().size = size;
      lowest(s).expires_after(st.opts.idle_timeout);
      auto [ec, n] = co_await http::async_read(s, buf, p, use_nothrow);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return ec;
      ctx.consume(chunk.get(), size - p.get().body().size);
    }
  }
  ctx.body_done = true;
  ctx.sha.finish();
  co_return beast::error_code{};
}

template <class Body>
void stamp(http::response<Body>& res, const request_ctx& ctx, const connection_info& conn,
           bool keep_alive) {
  res.set(http::field::server, "mock-exchange");
  res.set("X-Mock-Identity", ctx.identity_echo);
  res.set("X-Mock-Request-Id", std::to_string(ctx.id));
  res.set("X-Mock-Connection", std::to_string(conn.id));
  if (!conn.client_subject.empty()) res.set("X-Mock-Client-Cert-Subject", conn.client_subject);
  if (ctx.negotiate_enabled) {
    bool ok = ctx.nego && ctx.nego->authenticated;
    res.set("X-Mock-Principal", ok                         ? ctx.nego->principal
                                : !ctx.session_user.empty() ? ctx.session_user
                                                            : std::string("-"));
    if (ctx.persistent_auth) res.set("Persistent-Auth", "true");
    // The acceptor's reply token (mutual authentication), as IIS sends it with the answer.
    if (ok && !ctx.nego->output_token.empty()) {
      res.set(http::field::www_authenticate, "Negotiate " + ctx.nego->output_token);
    }
  }
  res.keep_alive(keep_alive);
}

// Sends a complete small response. Returns whether to keep the connection.
template <class Stream>
net::awaitable<bool> send(Stream& s, const request_msg& req, request_ctx& ctx,
                          connection_info& conn, const shared_state& st, reply r) {
  http::response<http::string_body> res;
  res.version(req.version());
  res.result(r.status);
  bool keep = req.keep_alive() && ctx.body_done;
  stamp(res, ctx, conn, keep);
  if (!r.content_type.empty()) res.set(http::field::content_type, r.content_type);
  for (std::size_t i = 0; i < r.headers.size(); ++i) {
    const auto& [name, value] = r.headers[i];
    // A name seen before in this list is added again (several WWW-Authenticate challenges).
    const bool repeated = std::any_of(r.headers.begin(), r.headers.begin() + static_cast<std::ptrdiff_t>(i),
                                      [&](const auto& h) { return iequals(h.first, name); });
    if (repeated) {
      res.insert(name, value);
    } else {
      res.set(name, value);
    }
  }
  if (r.status < 200 || r.status == 204 || r.status == 304) r.body.clear();
  res.body() = std::move(r.body);
  res.prepare_payload();
  ctx.status = r.status;
  lowest(s).expires_after(st.opts.idle_timeout);
  beast::error_code ec;
  if (req.method() == http::verb::head) {
    http::response_serializer<http::string_body> sr{res};
    std::tie(ec, std::ignore) = co_await http::async_write_header(s, sr, use_nothrow);
  } else {
    std::tie(ec, std::ignore) = co_await http::async_write(s, res, use_nothrow);
  }
  if (ec) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  ctx.complete = true;
  co_return keep;
}

// Streams `n` pattern bytes with Content-Length, or chunked (close-delimited for HTTP/1.0).
template <class Stream>
net::awaitable<bool> send_bytes(Stream& s, const request_msg& req, request_ctx& ctx,
                                connection_info& conn, const shared_state& st, std::uint64_t n,
                                bool chunked) {
  http::response<http::buffer_body> res{http::status::ok, req.version()};
  bool use_chunks = chunked && req.version() >= 11;
  bool keep = req.keep_alive() && ctx.body_done && (use_chunks || !chunked);
  stamp(res, ctx, conn, keep);
  res.set(http::field::content_type, "application/octet-stream");
  if (use_chunks) {
    res.chunked(true);
  } else if (!chunked) {
    res.content_length(n);
  }
  ctx.status = 200;
  http::response_serializer<http::buffer_body> sr{res};
  lowest(s).expires_after(st.opts.idle_timeout);
  if (auto [ec, w] = co_await http::async_write_header(s, sr, use_nothrow); ec) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  if (req.method() == http::verb::head) {
    ctx.complete = true;
    co_return keep;
  }
  auto chunk = std::make_unique_for_overwrite<char[]>(chunk_size);
  std::uint64_t off = 0;
  bool last = false;
  while (!last) {
    auto k = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, n - off));
    if (k > 0) {
      fill_pattern(chunk.get(), off, k);
      res.body().data = chunk.get();
      res.body().size = k;
      res.body().more = true;
      off += k;
    } else {
      res.body().data = nullptr;
      res.body().size = 0;
      res.body().more = false;
      last = true;
    }
    lowest(s).expires_after(st.opts.idle_timeout);
    auto [ec, w] = co_await http::async_write(s, sr, use_nothrow);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      ctx.error = "write: " + ec.message();
      co_return false;
    }
  }
  ctx.complete = true;
  co_return keep;
}

// ---------------------------------------------------------------------------------------------
// Held requests (Ping, Sync with Wait)

// Holds until the deadline, a wake-up from the registry (notify, newer Ping of the device), or
// the client going away. A readiness wait on the raw socket, whose handler expires the timer,
// notices a client that closes at once, so its entry leaves the registry (no leak). Data that
// arrives meanwhile is kept for the next request (pipelining). No extra coroutine frames: a held
// request costs its session's frames, one timer and one registry entry.
template <class Stream>
net::awaitable<hold_outcome> hold(Stream& s, beast::flat_buffer& buf, const shared_state& st,
                                  const hold_plan& plan) {
  auto ex = co_await net::this_coro::executor;
  auto h = std::make_shared<held_request>(ex, plan.user, plan.device);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(plan.seconds);
  h->timer.expires_at(deadline);
  st.pings.add(h);
  struct release {
    ping_registry& registry;
    const std::shared_ptr<held_request>& held;
    ~release() { registry.remove(held); }
  } guard{st.pings, h};

  auto& sock = lowest(s).socket();
  lowest(s).expires_never();
  auto watch = [&sock, h] {
    sock.async_wait(tcp::socket::wait_read, [h](const beast::error_code& ec) {
      if (ec == net::error::operation_aborted) return;
      h->socket_event = true;
      h->timer.expires_at(std::chrono::steady_clock::time_point::min());
    });
  };
  bool watching = true;
  watch();
  auto outcome = hold_outcome::expired;
  for (;;) {
    co_await h->timer.async_wait(use_nothrow);
    if (h->reason.load() != 0) break;
    if (h->socket_event) {
      h->socket_event = false;
      watching = false;
      char c = 0;
      auto n = ::recv(sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        outcome = hold_outcome::client_closed;
        break;
      }
      if (n < 0) {
        watching = true;
        watch();
      } else if constexpr (is_tls_v<Stream>) {
        // Readable TLS data: a close_notify, or the start of a pipelined request.
        lowest(s).expires_at(deadline);
        auto [ec, k] = co_await s.async_read_some(buf.prepare(4096), use_nothrow);
        if (ec) {
          outcome = hold_outcome::client_closed;
          break;
        }
        buf.commit(k);
      }
      if (h->reason.load() != 0) break;
      h->timer.expires_at(deadline);
      continue;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    h->timer.expires_at(deadline);  // woken without a cause: keep holding
  }
  if (watching) {
    beast::error_code ignored;
    sock.cancel(ignored);  // the pending readiness wait; its handler then does nothing
  }
  if (outcome == hold_outcome::client_closed) co_return outcome;
  switch (static_cast<wake_reason>(h->reason.load())) {
    case wake_reason::superseded: co_return hold_outcome::superseded;
    case wake_reason::changes: co_return hold_outcome::changes;
    case wake_reason::none: break;
  }
  co_return hold_outcome::expired;
}

// ---------------------------------------------------------------------------------------------
// Streaming handlers

template <class Stream>
net::awaitable<bool> owa_events(Stream& s, const request_msg& req, request_ctx& ctx,
                                connection_info& conn, const shared_state& st) {
  const auto& o = st.opts;
  auto interval = std::chrono::milliseconds(
      o.owa_interval_ms ? *o.owa_interval_ms : o.ping_cap ? *o.ping_cap * 1000U : 1000U);
  http::response<http::empty_body> res{http::status::ok, req.version()};
  bool chunked = req.version() >= 11;
  bool keep = req.keep_alive() && ctx.body_done && chunked;
  stamp(res, ctx, conn, keep);
  res.set(http::field::content_type, "text/html; charset=utf-8");
  res.set(http::field::cache_control, "no-cache");
  if (chunked) res.chunked(true);
  ctx.status = 200;
  http::response_serializer<http::empty_body> sr{res};
  lowest(s).expires_after(o.idle_timeout);
  if (auto [ec, n] = co_await http::async_write_header(s, sr, use_nothrow); ec) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  net::steady_timer timer(co_await net::this_coro::executor);
  for (unsigned i = 0; i < o.owa_frames; ++i) {
    if (i > 0) {
      timer.expires_after(interval);
      co_await timer.async_wait(use_nothrow);
    }
    std::string frame = owa_event_frame(i, ctx.identity_echo);
    lowest(s).expires_after(o.idle_timeout);
    beast::error_code ec;
    if (chunked) {
      std::tie(ec, std::ignore) =
          co_await net::async_write(s, http::make_chunk(net::buffer(frame)), use_nothrow);
    } else {
      std::tie(ec, std::ignore) = co_await net::async_write(s, net::buffer(frame), use_nothrow);
    }
    if (ec) {
      ctx.error = "write: " + ec.message();
      co_return false;
    }
  }
  if (chunked) {
    lowest(s).expires_after(o.idle_timeout);
    if (auto [ec, n] = co_await net::async_write(s, http::make_chunk_last(), use_nothrow); ec) {
      ctx.error = "write: " + ec.message();
      co_return false;
    }
  }
  ctx.complete = true;
  co_return keep;
}

// Streams the request body back as it arrives (Content-Length kept, else chunked).
template <class Stream>
net::awaitable<bool> echo(Stream& s, beast::flat_buffer& buf, parser_t& p, request_ctx& ctx,
                          connection_info& conn, const shared_state& st) {
  const request_msg& req = p.get();
  http::response<http::buffer_body> res{http::status::ok, req.version()};
  auto cl = p.content_length();
  bool chunked = !cl && req.version() >= 11;
  bool keep = req.keep_alive() && (cl || chunked);
  stamp(res, ctx, conn, keep);
  std::string_view ct = req[http::field::content_type];
  res.set(http::field::content_type, ct.empty() ? std::string_view("application/octet-stream") : ct);
  if (cl) {
    res.content_length(*cl);
  } else if (chunked) {
    res.chunked(true);
  }
  ctx.status = 200;
  if (auto ec = co_await send_continue(s, req, ctx, st)) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  http::response_serializer<http::buffer_body> sr{res};
  lowest(s).expires_after(st.opts.idle_timeout);
  if (auto [ec, n] = co_await http::async_write_header(s, sr, use_nothrow); ec) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  auto chunk = std::make_unique_for_overwrite<char[]>(chunk_size);
  bool last = false;
  while (!last) {
    if (!p.is_done()) {
      p.get().body().data = chunk.get();
      p.get().body().size = chunk_size;
      lowest(s).expires_after(st.opts.idle_timeout);
      auto [ec, n] = co_await http::async_read(s, buf, p, use_nothrow);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        ctx.error = "read body: " + ec.message();
        co_return false;
      }
      std::size_t got = chunk_size - p.get().body().size;
      ctx.consume(chunk.get(), got);
      if (got == 0) continue;
      res.body().data = chunk.get();
      res.body().size = got;
      res.body().more = true;
    } else {
      ctx.body_done = true;
      ctx.sha.finish();
      res.body().data = nullptr;
      res.body().size = 0;
      res.body().more = false;
      last = true;
    }
    lowest(s).expires_after(st.opts.idle_timeout);
    auto [ec, w] = co_await http::async_write(s, sr, use_nothrow);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      ctx.error = "write: " + ec.message();
      co_return false;
    }
  }
  ctx.complete = true;
  co_return keep;
}

// Header with Content-Length 1000, 10 body bytes, then the socket is closed (RST with ?rst=1).
template <class Stream>
net::awaitable<bool> die_mid_response(Stream& s, const request_msg& req, request_ctx& ctx,
                                      connection_info& conn, const shared_state& st) {
  http::response<http::empty_body> res{http::status::ok, req.version()};
  stamp(res, ctx, conn, req.keep_alive());
  res.set(http::field::content_type, "application/octet-stream");
  res.content_length(1000);
  ctx.status = 200;
  http::response_serializer<http::empty_body> sr{res};
  lowest(s).expires_after(st.opts.idle_timeout);
  auto [ec, n] = co_await http::async_write_header(s, sr, use_nothrow);
  if (!ec) {
    static constexpr std::string_view ten = "0123456789";
    std::tie(ec, n) = co_await net::async_write(s, net::buffer(ten.data(), ten.size()), use_nothrow);
  }
  auto& sock = lowest(s).socket();
  beast::error_code ignored;
  if (query_param(ctx.query, "rst") == "1") sock.set_option(net::socket_base::linger(true, 0), ignored);
  sock.shutdown(tcp::socket::shutdown_both, ignored);
  sock.close(ignored);
  conn.closed = true;
  ctx.error = ec ? "write: " + ec.message() : "closed after 10 of 1000 body bytes (on purpose)";
  co_return false;
}

// ---------------------------------------------------------------------------------------------
// Outlook virtual directories: connection-bound authentication, Outlook Anywhere channels, MAPI

constexpr std::string_view vdir_names[] = {"autodiscover", "ews", "mapi", "rpc", "oab",
                                           "powershell"};

void add_auth_headers(header_list& h, const auth_result& a) {
  for (const auto& v : a.www_authenticate) h.emplace_back("WWW-Authenticate", v);
  if (a.persistent_auth) h.emplace_back("Persistent-Auth", "true");
  h.emplace_back("X-Mock-Auth-User", a.ok ? a.user : std::string("-"));
  h.emplace_back("X-Mock-Auth-Via", a.ok ? a.via : std::string("-"));
}

template <class Body>
void set_auth_headers(http::response<Body>& res, const auth_result& a) {
  header_list h;
  add_auth_headers(h, a);
  for (const auto& [k, v] : h) res.insert(k, v);
}

// RPC_OUT_DATA: the OUT channel. `bytes` pattern bytes (query, default 65536) with
// Content-Length, in 16 KiB pieces, `pause_ms` (query, default 0) apart.
template <class Stream>
net::awaitable<bool> rpc_out(Stream& s, const request_msg& req, request_ctx& ctx,
                             connection_info& conn, const shared_state& st, const auth_result& a) {
  const std::uint64_t n = to_number<std::uint64_t>(query_param(ctx.query, "bytes")).value_or(65536);
  const auto pause = std::chrono::milliseconds(
      to_number<unsigned>(query_param(ctx.query, "pause_ms")).value_or(0));
  http::response<http::buffer_body> res{http::status::ok, req.version()};
  const bool keep = req.keep_alive() && ctx.body_done;
  stamp(res, ctx, conn, keep);
  set_auth_headers(res, a);
  res.set(http::field::content_type, "application/rpc");
  res.content_length(n);
  ctx.status = 200;
  http::response_serializer<http::buffer_body> sr{res};
  lowest(s).expires_after(st.opts.idle_timeout);
  if (auto [ec, w] = co_await http::async_write_header(s, sr, use_nothrow); ec) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  auto chunk = std::make_unique_for_overwrite<char[]>(chunk_size);
  net::steady_timer timer(co_await net::this_coro::executor);
  std::uint64_t off = 0;
  for (;;) {
    const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_size, n - off));
    if (k > 0 && off > 0 && pause.count() > 0) {
      timer.expires_after(pause);
      co_await timer.async_wait(use_nothrow);
    }
    if (k > 0) fill_pattern(chunk.get(), off, k);
    res.body().data = k > 0 ? chunk.get() : nullptr;
    res.body().size = k;
    res.body().more = k > 0;
    off += k;
    lowest(s).expires_after(st.opts.idle_timeout);
    auto [ec, w] = co_await http::async_write(s, sr, use_nothrow);
    if (ec == http::error::need_buffer) ec = {};
    if (ec) {
      ctx.error = "write: " + ec.message();
      co_return false;
    }
    if (k == 0) break;
  }
  ctx.complete = true;
  co_return keep;
}

// A MAPI over HTTP response ([MS-OXCMAPIHTTP] 2.2.7, 3.2.5.2): 200 chunked at once with
// PROCESSING, PENDING every --mapi-pending-ms while the request is held, then DONE, the
// X-ElapsedTime/X-StartTime meta-tags and the binary body. A NotificationWait is held
// --notification-wait-seconds; every other request type answers at once.
template <class Stream>
net::awaitable<bool> mapi(Stream& s, const request_msg& req, request_ctx& ctx,
                          connection_info& conn, const shared_state& st, const auth_result& a) {
  const std::string request_type(req["X-RequestType"]);
  const bool wait = iequals(request_type, "NotificationWait");
  http::response<http::empty_body> res{http::status::ok, req.version()};
  const bool chunked = req.version() >= 11;
  const bool keep = req.keep_alive() && ctx.body_done && chunked;
  stamp(res, ctx, conn, keep);
  set_auth_headers(res, a);
  res.set(http::field::content_type, "application/mapi-http");
  res.set("X-RequestType", request_type.empty() ? std::string("Unknown") : request_type);
  res.set("X-ResponseCode", "0");
  res.set("X-PendingPeriod", std::to_string(st.opts.mapi_pending_ms));
  if (chunked) res.chunked(true);
  ctx.status = 200;
  http::response_serializer<http::empty_body> sr{res};
  lowest(s).expires_after(st.opts.idle_timeout);
  if (auto [ec, n] = co_await http::async_write_header(s, sr, use_nothrow); ec) {
    ctx.error = "write: " + ec.message();
    co_return false;
  }
  auto put = [&](std::string piece) -> net::awaitable<bool> {
    lowest(s).expires_after(st.opts.idle_timeout);
    beast::error_code ec;
    if (chunked) {
      std::tie(ec, std::ignore) =
          co_await net::async_write(s, http::make_chunk(net::buffer(piece)), use_nothrow);
    } else {
      std::tie(ec, std::ignore) = co_await net::async_write(s, net::buffer(piece), use_nothrow);
    }
    if (ec) ctx.error = "write: " + ec.message();
    co_return !ec;
  };
  const auto start = std::chrono::steady_clock::now();
  if (!co_await put("PROCESSING\r\n")) co_return false;
  std::uint64_t pendings = 0;
  if (wait) {
    const auto until = start + std::chrono::seconds(st.opts.notification_wait_s);
    net::steady_timer timer(co_await net::this_coro::executor);
    for (;;) {
      auto next = until;
      if (st.opts.mapi_pending_ms > 0)
        next = std::min(next, std::chrono::steady_clock::now() +
                                  std::chrono::milliseconds(st.opts.mapi_pending_ms));
      timer.expires_at(next);
      co_await timer.async_wait(use_nothrow);
      if (std::chrono::steady_clock::now() >= until) break;
      if (!co_await put("PENDING\r\n")) co_return false;
      ++pendings;
    }
  }
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - start).count();
  // NotificationWait success body ([MS-OXCMAPIHTTP] 2.2.4.4.2): StatusCode, ErrorCode,
  // EventPending, AuxiliaryBufferSize, all 0 (no event: the wait expired).
  std::string done = "DONE\r\nX-ElapsedTime: " + std::to_string(elapsed) + "\r\nX-StartTime: " +
                     iso_time(ctx.wall) + "\r\n\r\n" + std::string(16, '\0');
  if (!co_await put(std::move(done))) co_return false;
  if (chunked) {
    lowest(s).expires_after(st.opts.idle_timeout);
    if (auto [ec, n] = co_await net::async_write(s, http::make_chunk_last(), use_nothrow); ec) {
      ctx.error = "write: " + ec.message();
      co_return false;
    }
  }
  if (ctx.logging) {
    ctx.extra["mapi"] = json::object{{"request_type", json_text(request_type)},
                                     {"held_ms", elapsed},
                                     {"pending", pendings}};
  }
  ctx.complete = true;
  co_return keep;
}

template <class Stream>
net::awaitable<bool> vdir(Stream& s, beast::flat_buffer& buf, parser_t& p, request_ctx& ctx,
                          connection_info& conn, shared_state& st, std::uint64_t which) {
  const request_msg& req = p.get();
  const std::string_view name = vdir_names[which < std::size(vdir_names) ? which : 0];
  std::string_view authorization;
  if (auto it = req.find(http::field::authorization); it != req.end()) authorization = it->value();
  std::optional<kerberos_verdict> krb;
  if (ctx.nego) {
    krb = kerberos_verdict{ctx.nego->authenticated, ctx.nego->principal, ctx.nego->output_token};
  }
  unsigned char challenge[8];
  if (RAND_bytes(challenge, sizeof challenge) != 1) std::memset(challenge, 'c', sizeof challenge);
  const auth_result a = authenticate(
      conn.auth, authorization,
      ctx.identities.empty() ? std::string_view{} : std::string_view(ctx.identities.front()), krb,
      std::string_view(reinterpret_cast<const char*>(challenge), sizeof challenge));
  if (ctx.logging) {
    ctx.extra["auth"] = json::object{{"user", a.ok ? json::value(json_text(a.user)) : json::value(nullptr)},
                                     {"via", a.ok ? json::value(a.via) : json::value(nullptr)},
                                     {"error", a.error.empty() ? json::value(nullptr)
                                                               : json::value(json_text(a.error))},
                                     {"connection_user", json_text(conn.auth.user)},
                                     {"handshakes", conn.auth.handshakes}};
  }
  if (!a.ok) {
    // Like IIS, the body of a refused request is read only when it is small (an NTLM leg on a
    // kept-alive connection); a large one (an RPC_IN_DATA channel) is not, and the connection
    // closes after the 401.
    const auto cl = p.content_length();
    if (p.is_done() || (cl && *cl <= capture_limit) || (!cl && p.chunked())) {
      if (auto ec = co_await read_body(s, buf, p, ctx, st)) {
        ctx.error = "read body: " + ec.message();
        co_return false;
      }
    }
    reply r = text_reply(401, "mock-exchange: " + std::string(name) + ": authentication required\n");
    add_auth_headers(r.headers, a);
    co_return co_await send(s, req, ctx, conn, st, std::move(r));
  }
  if (auto ec = co_await read_body(s, buf, p, ctx, st)) {
    ctx.error = "read body: " + ec.message();
    co_return false;
  }
  const std::string_view method = req.method_string();
  if (name == "rpc" && method == "RPC_OUT_DATA") co_return co_await rpc_out(s, req, ctx, conn, st, a);
  if (name == "mapi" && method == "POST") co_return co_await mapi(s, req, ctx, conn, st, a);
  json::object body{{"mock", name},
                    {"user", json_text(a.user)},
                    {"via", a.via},
                    {"method", json_text(method)},
                    {"path", json_text(ctx.path)},
                    {"body_bytes", ctx.body_bytes},
                    {"body_sha256", ctx.sha.hex()}};
  reply r{200, "application/json", json::serialize(body) + "\n", {}};
  add_auth_headers(r.headers, a);
  co_return co_await send(s, req, ctx, conn, st, std::move(r));
}

// ---------------------------------------------------------------------------------------------
// One request

enum class route_kind {
  eas, owa_events, owa, ecp, healthcheck, not_found, vdir,
  mock_echo, mock_status, mock_bytes, mock_chunked, mock_die, mock_slow, mock_notify, mock_stats,
  mock_connection, mock_bad,
};

struct route {
  route_kind kind = route_kind::not_found;
  std::uint64_t arg = 0;
};

route classify(std::string_view path) {
  if (istarts_with(path, "/mock/")) {
    auto rest = path.substr(6);
    auto arg = [&](std::string_view prefix) -> std::optional<std::uint64_t> {
      if (rest.substr(0, prefix.size()) != prefix) return std::nullopt;
      return to_number<std::uint64_t>(rest.substr(prefix.size()));
    };
    if (rest == "echo") return {route_kind::mock_echo};
    if (rest == "die-mid-response") return {route_kind::mock_die};
    if (rest == "notify") return {route_kind::mock_notify};
    if (rest == "stats") return {route_kind::mock_stats};
    if (auto a = arg("status/"); a && *a >= 200 && *a <= 599) return {route_kind::mock_status, *a};
    if (auto a = arg("bytes/")) return {route_kind::mock_bytes, *a};
    if (auto a = arg("chunked/")) return {route_kind::mock_chunked, *a};
    if (auto a = arg("slow-headers/"); a && *a <= 600000) return {route_kind::mock_slow, *a};
    if (auto a = arg("connection/")) return {route_kind::mock_connection, *a};
    return {route_kind::mock_bad};
  }
  if (iequals(path, "/Microsoft-Server-ActiveSync") ||
      iequals(path, "/Microsoft-Server-ActiveSync/") ||
      iequals(path, "/Microsoft-Server-ActiveSync/default.eas")) {
    return {route_kind::eas};
  }
  if (iends_with(path, "/healthcheck.htm")) return {route_kind::healthcheck};
  if (under(path, "/owa")) {
    return {iends_with(path, "/ev.owa2") ? route_kind::owa_events : route_kind::owa};
  }
  if (under(path, "/ecp")) return {route_kind::ecp};
  // The Outlook virtual directories behind connection-bound authentication (conn_auth.hpp).
  static constexpr std::string_view vdirs[] = {"/Autodiscover", "/EWS", "/mapi", "/rpc", "/OAB",
                                               "/PowerShell"};
  for (std::size_t i = 0; i < std::size(vdirs); ++i) {
    if (under(path, vdirs[i])) return {route_kind::vdir, i};
  }
  return {route_kind::not_found};
}

// The paths a real Exchange protects with Windows authentication (--require-negotiate).
bool needs_negotiate(route r) {
  switch (r.kind) {
    case route_kind::eas:
    case route_kind::owa:
    case route_kind::owa_events:
    case route_kind::ecp: return true;
    default: return false;
  }
}

// The replies that need no I/O beyond sending them.
reply simple_reply(route r, const request_facts& f, shared_state& st) {
  switch (r.kind) {
    case route_kind::healthcheck: return reply{200, "text/html", "OK", {}};
    case route_kind::owa: return page_reply(f, "owa");
    case route_kind::ecp: return page_reply(f, "ecp");
    case route_kind::mock_status: {
      auto code = static_cast<unsigned>(r.arg);
      return text_reply(code, "mock-exchange: status " + std::to_string(code) + " for " +
                                  std::string(f.identity_echo) + "\n");
    }
    case route_kind::mock_slow:
      return text_reply(200, "mock-exchange: waited " + std::to_string(r.arg) + " ms\n");
    case route_kind::mock_notify: {
      auto user = query_param(f.query, "user");
      std::size_t woken = user.empty() ? 0 : st.pings.notify(user, wake_reason::changes);
      json::object body{{"user", json_text(user)}, {"woken", woken}};
      return reply{user.empty() ? 400U : 200U, "application/json", json::serialize(body) + "\n", {}};
    }
    case route_kind::mock_stats: {
      json::object body{{"held", st.pings.held()},
                        {"open_connections", st.open_connections.load()},
                        {"connections", st.next_connection.load() - 1},
                        {"requests", st.requests.load()},
                        {"heap_bytes", mallinfo2().uordblks}};
      return reply{200, "application/json", json::serialize(body) + "\n", {}};
    }
    case route_kind::mock_connection: {
      bool open = false;
      {
        const std::lock_guard lock(st.open_mu);
        open = st.open_ids.contains(r.arg);
      }
      json::object body{{"connection", r.arg}, {"open", open}};
      return reply{200, "application/json", json::serialize(body) + "\n", {}};
    }
    case route_kind::mock_bad: return text_reply(404, "mock-exchange: unknown test hook\n");
    default:
      return text_reply(404, "mock-exchange: not found (identity " + std::string(f.identity_echo) +
                                 ")\n");
  }
}

// --negotiate-persist, as IIS with authPersistNonNTLM (its default): a valid Kerberos token
// authenticates the TCP connection (the answer says Persistent-Auth: true) and later requests
// on it without a token run as that user; --negotiate-persist-max N ends that after N of them
// (the next token-less request is asked again, 401). A failed token unbinds the connection.
void persist_negotiate(request_ctx& ctx, connection_info& conn, const options& o) {
  if (ctx.nego) {
    conn.kerberos_uses = 0;
    if (ctx.nego->authenticated) {
      conn.kerberos_user = ctx.nego->principal;
      ctx.persistent_auth = true;
    } else {
      conn.kerberos_user.clear();
    }
    return;
  }
  if (conn.kerberos_user.empty()) return;
  if (o.negotiate_persist_max != 0 && conn.kerberos_uses >= o.negotiate_persist_max) {
    conn.kerberos_user.clear();
    return;
  }
  ++conn.kerberos_uses;
  ctx.session_user = conn.kerberos_user;
}

template <class Stream>
net::awaitable<bool> handle(Stream& s, beast::flat_buffer& buf, parser_t& p, request_ctx& ctx,
                            connection_info& conn, shared_state& st) {
  const request_msg& req = p.get();
  const route r = classify(ctx.path);
  if (r.kind == route_kind::mock_echo) co_return co_await echo(s, buf, p, ctx, conn, st);
  if (r.kind == route_kind::vdir) co_return co_await vdir(s, buf, p, ctx, conn, st, r.arg);
  if (r.kind == route_kind::eas) ctx.capture_limit = capture_limit;
  if (auto ec = co_await read_body(s, buf, p, ctx, st)) {
    ctx.error = "read body: " + ec.message();
    co_return false;
  }
  if (st.opts.negotiate_persist && needs_negotiate(r)) persist_negotiate(ctx, conn, st.opts);
  if (st.opts.require_negotiate && needs_negotiate(r) && !(ctx.nego && ctx.nego->authenticated) &&
      ctx.session_user.empty()) {
    if (!ctx.nego && st.opts.negotiate_challenge_delay_ms != 0) {
      net::steady_timer timer(co_await net::this_coro::executor);
      timer.expires_after(std::chrono::milliseconds(st.opts.negotiate_challenge_delay_ms));
      co_await timer.async_wait(use_nothrow);
    }
    reply challenge = text_reply(401, "mock-exchange: Negotiate authentication required\n");
    bool cont = ctx.nego && ctx.nego->continue_needed && !ctx.nego->output_token.empty();
    challenge.headers.emplace_back("WWW-Authenticate",
                                   cont ? "Negotiate " + ctx.nego->output_token : "Negotiate");
    co_return co_await send(s, req, ctx, conn, st, std::move(challenge));
  }
  switch (r.kind) {
    case route_kind::mock_die: co_return co_await die_mid_response(s, req, ctx, conn, st);
    case route_kind::mock_bytes: co_return co_await send_bytes(s, req, ctx, conn, st, r.arg, false);
    case route_kind::mock_chunked: co_return co_await send_bytes(s, req, ctx, conn, st, r.arg, true);
    case route_kind::owa_events: co_return co_await owa_events(s, req, ctx, conn, st);
    case route_kind::mock_slow: {
      net::steady_timer timer(co_await net::this_coro::executor);
      timer.expires_after(std::chrono::milliseconds(r.arg));
      co_await timer.async_wait(use_nothrow);
      break;
    }
    default: break;
  }
  reply out;
  if (r.kind == route_kind::eas) {
    auto plan = plan_eas(ctx.facts(req), st.eas, st.pings, ctx.logging ? &ctx.extra : nullptr);
    ctx.cmd = std::move(plan.cmd);
    std::string().swap(ctx.captured);  // decoded; not needed while held
    if (plan.hold) {
      auto held_at = std::chrono::steady_clock::now();
      auto outcome = co_await hold(s, buf, st, *plan.hold);
      if (ctx.logging) {
        auto& o = ctx.extra[plan.hold->ping ? "ping" : "sync_wait"];
        if (!o.is_object()) o = json::object{};
        o.as_object()["hold_s"] = plan.hold->seconds;
        o.as_object()["held_ms"] = std::chrono::duration<double, std::milli>(
                                       std::chrono::steady_clock::now() - held_at).count();
        o.as_object()["outcome"] = to_string(outcome);
      }
      if (outcome == hold_outcome::client_closed) {
        ctx.error = "client closed the connection while the request was held";
        conn.closed = true;
        co_return false;
      }
      out = after_hold(*plan.hold, outcome);
    } else {
      out = std::move(*plan.now);
    }
  } else {
    out = simple_reply(r, ctx.facts(req), st);
  }
  co_return co_await send(s, req, ctx, conn, st, std::move(out));
}

void split_target(std::string_view target, request_ctx& ctx) {
  // Absolute-form targets (RFC 9112 3.2.2) carry scheme and authority first.
  if (istarts_with(target, "http://") || istarts_with(target, "https://")) {
    auto slash = target.find('/', target.find("//") + 2);
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
  }
  auto q = target.find('?');
  ctx.path = std::string(target.substr(0, q));
  ctx.query = q == std::string_view::npos ? std::string{} : std::string(target.substr(q + 1));
}

void write_log(shared_state& st, const connection_info& conn, const request_msg* req,
               request_ctx& ctx) {
  ++st.requests;
  auto duration =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - ctx.start).count();
  if (st.opts.verbose) {
    std::fprintf(stderr, "mock-exchange: conn=%llu req=%llu %s %s -> %u %.1f ms%s%s\n",
                 static_cast<unsigned long long>(conn.id), static_cast<unsigned long long>(ctx.id),
                 req != nullptr ? std::string(req->method_string()).c_str() : "-",
                 req != nullptr ? std::string(req->target()).c_str() : "-", ctx.status, duration,
                 ctx.error.empty() ? "" : " error: ", ctx.error.c_str());
  }
  if (!st.log.enabled()) return;
  json::object rec;
  rec["id"] = ctx.id;
  rec["time"] = iso_time(ctx.wall);
  json::object headers;
  json::array raw;
  if (req != nullptr) {
    rec["method"] = json_text(req->method_string());
    rec["target"] = json_text(req->target());
    rec["version"] = req->version() == 10 ? "1.0" : "1.1";
    for (const auto& f : *req) {
      auto name = json_text(f.name_string());
      auto value = json_text(f.value());
      raw.push_back(json::array{json::string(name), json::string(value)});
      auto it = std::find_if(headers.begin(), headers.end(),
                             [&](const auto& kv) { return iequals(kv.key(), name); });
      if (it == headers.end()) {
        headers[name] = json::array{json::string(value)};
      } else {
        it->value().as_array().push_back(json::string(value));
      }
    }
  } else {
    rec["method"] = nullptr;
    rec["target"] = nullptr;
    rec["version"] = nullptr;
  }
  rec["path"] = json_text(ctx.path);
  rec["query"] = json_text(ctx.query);
  rec["headers"] = std::move(headers);
  rec["raw_headers"] = std::move(raw);
  if (ctx.identities.empty()) {
    rec["identity"] = nullptr;
  } else if (ctx.identities.size() == 1) {
    rec["identity"] = json_text(ctx.identities.front());
  } else {
    json::array all;
    for (const auto& v : ctx.identities) all.push_back(json::string(json_text(v)));
    rec["identity"] = std::move(all);
  }
  rec["identity_count"] = ctx.identities.size();
  rec["body_bytes"] = ctx.body_bytes;
  rec["body_sha256"] = ctx.sha.hex();
  rec["body_complete"] = ctx.body_done;
  if (ctx.status != 0) {
    rec["status"] = ctx.status;
  } else {
    rec["status"] = nullptr;
  }
  rec["complete"] = ctx.complete;
  rec["duration_ms"] = duration;
  rec["tls"] = conn.tls;
  rec["connection"] = conn.id;
  rec["listener"] = conn.listener;
  rec["peer"] = conn.peer;
  if (conn.tls) rec["client_cert_subject"] = json_text(conn.client_subject);
  if (ctx.cmd) {
    rec["cmd"] = *ctx.cmd;
  } else {
    rec["cmd"] = nullptr;
  }
  if (ctx.error.empty()) {
    rec["error"] = nullptr;
  } else {
    rec["error"] = json_text(ctx.error);
  }
  if (ctx.negotiate_enabled || ctx.nego) {
    const negotiate_outcome* n = ctx.nego ? &*ctx.nego : nullptr;
    auto text_or_null = [](const std::string& v) -> json::value {
      if (v.empty()) return nullptr;
      return json::string(json_text(v));
    };
    rec["negotiate"] = n != nullptr;
    rec["negotiate_principal"] =
        n != nullptr && n->authenticated ? text_or_null(n->principal) : json::value(nullptr);
    if (n != nullptr) {
      rec["negotiate_error"] = text_or_null(n->error);
    } else if (st.opts.require_negotiate && ctx.status == 401) {
      rec["negotiate_error"] = "no Negotiate token";
    } else {
      rec["negotiate_error"] = nullptr;
    }
    rec["negotiate_mech"] = n != nullptr ? text_or_null(n->mech) : json::value(nullptr);
    rec["negotiate_inner_mech"] = n != nullptr ? text_or_null(n->inner_mech) : json::value(nullptr);
    rec["negotiate_flags"] = n != nullptr ? json::value(n->flags) : json::value(nullptr);
    json::array names;
    if (n != nullptr) {
      for (auto& f : flag_names(n->flags)) names.push_back(json::string(f));
    }
    rec["negotiate_flag_names"] = std::move(names);
    rec["negotiate_session_user"] = text_or_null(ctx.session_user);
    rec["negotiate_delegated"] = n != nullptr && n->delegated;
    rec["negotiate_channel_bound"] = n != nullptr && n->channel_bound;
  }
  for (auto& kv : ctx.extra) rec[kv.key()] = std::move(kv.value());
  st.log.write(rec);
}

bool is_http_parse_error(const beast::error_code& ec) {
  return ec.category() == make_error_code(http::error::bad_method).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

// A request that did not parse: one 400 (431 when the header is too large), then close.
template <class Stream>
net::awaitable<void> reject(Stream& s, shared_state& st, connection_info& conn,
                            beast::error_code why) {
  request_ctx ctx;
  ctx.id = st.next_request++;
  ctx.status = why == http::error::header_limit ? 431 : 400;
  ctx.error = "bad request: " + why.message();
  std::string reply_text = "HTTP/1.1 " + std::to_string(ctx.status) +
                           (ctx.status == 431 ? " Request Header Fields Too Large" : " Bad Request") +
                           "\r\nServer: mock-exchange\r\nX-Mock-Identity: -\r\nX-Mock-Request-Id: " +
                           std::to_string(ctx.id) +
                           "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  lowest(s).expires_after(st.opts.idle_timeout);
  auto [ec, n] = co_await net::async_write(s, net::buffer(reply_text), use_nothrow);
  ctx.complete = !ec;
  write_log(st, conn, nullptr, ctx);
}

template <class Stream>
net::awaitable<void> run_session(Stream& s, shared_state& st, connection_info& conn) {
  beast::flat_buffer buf;
  for (;;) {
    parser_t p;
    p.header_limit(static_cast<std::uint32_t>(st.opts.max_header_bytes));
    p.body_limit(boost::none);
    lowest(s).expires_after(st.opts.idle_timeout);
    auto [ec, n] = co_await http::async_read_header(s, buf, p, use_nothrow);
    if (ec) {
      if (is_http_parse_error(ec)) co_await reject(s, st, conn, ec);
      break;
    }
    request_ctx ctx;
    ctx.id = st.next_request++;
    ctx.logging = st.log.enabled();
    const request_msg& req = p.get();
    split_target(req.target(), ctx);
    for (const auto& f : req) {
      if (iequals(f.name_string(), st.opts.identity_header)) ctx.identities.emplace_back(f.value());
    }
    if (!ctx.identities.empty()) {
      ctx.identity_echo.clear();
      for (const auto& v : ctx.identities) {
        if (!ctx.identity_echo.empty()) ctx.identity_echo += ", ";
        ctx.identity_echo += v;
      }
    }
    if (st.negotiate != nullptr) {
      ctx.negotiate_enabled = true;
      for (const auto& f : req) {
        if (f.name() != http::field::authorization) continue;
        auto token = negotiate_token(f.value());
        if (!token) continue;
        // With --channel-bindings require, a TLS connection passes our certificate's
        // tls-server-end-point hash; plain HTTP has no bindings (RFC 5929 needs TLS).
        bool bind = st.opts.require_channel_bindings && conn.tls;
        ctx.nego = st.negotiate->accept(*token, bind ? &st.cb_hash : nullptr, bind);
        if (!ctx.nego->authenticated && !ctx.nego->principal.empty()) {
          ctx.nego->error += " (initiator " + ctx.nego->principal + ")";
        }
        break;  // the first Negotiate credentials count, as in IIS
      }
    }
    bool keep = co_await handle(s, buf, p, ctx, conn, st);
    write_log(st, conn, &req, ctx);
    if (!keep || conn.closed) break;
    // Give back the larger buffer a big body needed, so idle keep-alive connections stay small.
    if (buf.size() == 0 && buf.capacity() > 4096) buf.shrink_to_fit();
  }
}

// ---------------------------------------------------------------------------------------------
// Connections and listeners

struct connection_count {
  connection_count(shared_state& s, std::uint64_t conn_id) : st(s), id(conn_id) {
    ++st.open_connections;
    const std::lock_guard lock(st.open_mu);
    st.open_ids.insert(id);
  }
  ~connection_count() {
    --st.open_connections;
    const std::lock_guard lock(st.open_mu);
    st.open_ids.erase(id);
  }
  connection_count(const connection_count&) = delete;
  connection_count& operator=(const connection_count&) = delete;
  shared_state& st;
  std::uint64_t id;
};

std::string peer_subject(SSL* ssl) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return {};
  ossl::bio_ptr bio(BIO_new(BIO_s_mem()));
  if (!bio) return {};
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 && data != nullptr ? std::string(data, static_cast<std::size_t>(len)) : std::string{};
}

net::awaitable<void> run_plain(tcp::socket sock, shared_state& st, connection_info conn) {
  connection_count counted(st, conn.id);
  beast::tcp_stream stream(std::move(sock));
  co_await run_session(stream, st, conn);
  if (!conn.closed) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }
}

net::awaitable<void> run_tls(tcp::socket sock, net::ssl::context& tls, shared_state& st,
                             connection_info conn) {
  connection_count counted(st, conn.id);
  tls_stream stream(beast::tcp_stream(std::move(sock)), tls);
  stream.next_layer().expires_after(std::chrono::seconds(10));
  if (auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_nothrow); ec) {
    if (st.opts.verbose) {
      std::fprintf(stderr, "mock-exchange: conn=%llu TLS handshake: %s\n",
                   static_cast<unsigned long long>(conn.id), ec.message().c_str());
    }
    co_return;
  }
  conn.client_subject = peer_subject(stream.native_handle());
  co_await run_session(stream, st, conn);
  if (!conn.closed) {
    stream.next_layer().expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(use_nothrow);
  }
}

void on_connection_done(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    std::fprintf(stderr, "mock-exchange: connection ended by exception (bug): %s\n", x.what());
  }
}

net::awaitable<void> accept_loop(tcp::acceptor& acceptor, net::io_context& ioc,
                                 net::ssl::context* tls, shared_state& st, std::string listener) {
  net::steady_timer backoff(acceptor.get_executor());
  for (;;) {
    auto strand = net::make_strand(ioc);
    tcp::socket sock(strand);
    auto [ec] = co_await acceptor.async_accept(sock, use_nothrow);
    if (ec == net::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      std::fprintf(stderr, "mock-exchange: accept on %s: %s\n", listener.c_str(), ec.message().c_str());
      backoff.expires_after(50ms);
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    connection_info conn;
    conn.id = st.next_connection++;
    conn.tls = tls != nullptr;
    conn.listener = listener;
    beast::error_code pec;
    auto remote = sock.remote_endpoint(pec);
    conn.peer = pec ? std::string("?") : endpoint_text(remote);
    if (tls != nullptr) {
      net::co_spawn(strand, run_tls(std::move(sock), *tls, st, std::move(conn)), on_connection_done);
    } else {
      net::co_spawn(strand, run_plain(std::move(sock), st, std::move(conn)), on_connection_done);
    }
  }
}

bool write_ready_file(const std::string& path, const std::vector<std::string>& http_eps,
                      const std::vector<std::string>& https_eps) {
  json::object o;
  json::array a, b;
  for (const auto& e : http_eps) a.push_back(json::string(e));
  for (const auto& e : https_eps) b.push_back(json::string(e));
  o["http"] = std::move(a);
  o["https"] = std::move(b);
  std::string text = json::serialize(o) + "\n";
  std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "we");
  if (f == nullptr) return false;
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fclose(f) == 0 && ok;
  return ok && std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int run_server(const options& opts) {
  // Declaration order is destruction order in reverse: everything the connections use outlives
  // the io_context, whose destruction ends every pending connection coroutine.
  request_log log;
  if (!opts.request_log.empty() && !log.open(opts.request_log)) {
    std::fprintf(stderr, "mock-exchange: cannot open request log %s: %s\n",
                 opts.request_log.c_str(), std::strerror(errno));
    return 1;
  }
  ping_registry pings;
  shared_state st(opts, log, pings);

  std::optional<net::ssl::context> tls;
  if (!opts.tls_listen.empty()) {
    tls.emplace(net::ssl::context::tls_server);
    beast::error_code ec;
    tls->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                         net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 |
                         net::ssl::context::no_tlsv1_1,
                     ec);
    SSL_CTX_set_mode(tls->native_handle(), SSL_MODE_RELEASE_BUFFERS);
    static constexpr unsigned char sid[] = "mock-exchange";
    SSL_CTX_set_session_id_context(tls->native_handle(), sid, sizeof sid - 1);
    if (tls->use_certificate_chain_file(opts.cert, ec); ec) {
      std::fprintf(stderr, "mock-exchange: --cert %s: %s\n", opts.cert.c_str(), ec.message().c_str());
      return 1;
    }
    if (tls->use_private_key_file(opts.key, net::ssl::context::pem, ec); ec) {
      std::fprintf(stderr, "mock-exchange: --key %s: %s\n", opts.key.c_str(), ec.message().c_str());
      return 1;
    }
    if (opts.request_client_cert) {
      // Any certificate is accepted: the mock only echoes what it got.
      tls->set_verify_mode(net::ssl::verify_peer, ec);
      tls->set_verify_callback([](bool, net::ssl::verify_context&) { return true; }, ec);
    }
  }

  // Negotiate: the acceptor credential from the backend keytab, its replay cache, and the
  // channel-binding hash of our own TLS certificate.
  struct temp_dir {
    std::string path;
    ~temp_dir() {
      std::error_code ignored;
      if (!path.empty()) std::filesystem::remove_all(path, ignored);
    }
  } rcache_dir;
  std::unique_ptr<negotiate_acceptor> acceptor;
  if (!opts.negotiate_keytab.empty()) {
    std::string rcache;
    if (opts.negotiate_rcache == "none") {
      rcache = "none:";
    } else if (opts.negotiate_rcache == "temp") {
      // A replay cache of this process only: replays within a run are refused, and nothing is
      // shared with other runs or left behind (removed at exit).
      const char* base = std::getenv("TMPDIR");
      std::string templ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                          "/mock-exchange-rcache-XXXXXX";
      if (::mkdtemp(templ.data()) == nullptr) {
        std::fprintf(stderr, "mock-exchange: cannot create a replay cache dir: %s\n",
                     std::strerror(errno));
        return 1;
      }
      rcache_dir.path = templ;
      rcache = "file2:" + templ + "/rcache2";
    } else {
      rcache = opts.negotiate_rcache;
    }
    std::string error;
    acceptor = negotiate_acceptor::create(opts.negotiate_keytab, opts.negotiate_principal, rcache,
                                          error);
    if (!acceptor) {
      std::fprintf(stderr, "mock-exchange: --negotiate-keytab %s: %s\n",
                   opts.negotiate_keytab.c_str(), error.c_str());
      return 1;
    }
    st.negotiate = acceptor.get();
    if (tls) {
      st.cb_hash = tls_server_end_point(SSL_CTX_get0_certificate(tls->native_handle()));
      if (st.cb_hash.empty()) {
        std::fprintf(stderr, "mock-exchange: cannot hash the certificate for channel bindings\n");
        return 1;
      }
    }
  }

  net::io_context ioc(static_cast<int>(opts.threads));
  auto control = net::make_strand(ioc);  // acceptors and signals live here
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<std::string> http_eps, https_eps;
  auto bind = [&](const endpoint_spec& spec, bool secure) {
    beast::error_code ec;
    auto addr = net::ip::make_address(spec.host, ec);
    if (ec) {
      std::fprintf(stderr, "mock-exchange: bad address %s: %s\n", spec.host.c_str(), ec.message().c_str());
      return false;
    }
    auto acc = std::make_unique<tcp::acceptor>(control);
    tcp::endpoint ep(addr, spec.port);
    acc->open(ep.protocol(), ec);
    if (!ec) acc->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acc->bind(ep, ec);
    if (!ec) acc->listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      std::fprintf(stderr, "mock-exchange: listen on %s:%u: %s\n", spec.host.c_str(), spec.port,
                   ec.message().c_str());
      return false;
    }
    auto bound = endpoint_text(acc->local_endpoint(ec));
    (secure ? https_eps : http_eps).push_back(bound);
    net::co_spawn(control, accept_loop(*acc, ioc, secure ? &*tls : nullptr, st, bound),
                  net::detached);
    acceptors.push_back(std::move(acc));
    return true;
  };
  for (const auto& spec : opts.listen) {
    if (!bind(spec, false)) return 1;
  }
  for (const auto& spec : opts.tls_listen) {
    if (!bind(spec, true)) return 1;
  }
  if (!opts.ready_file.empty() && !write_ready_file(opts.ready_file, http_eps, https_eps)) {
    std::fprintf(stderr, "mock-exchange: cannot write ready file %s: %s\n", opts.ready_file.c_str(),
                 std::strerror(errno));
    return 1;
  }
  std::string summary;
  for (const auto& e : http_eps) summary += " http://" + e;
  for (const auto& e : https_eps) summary += " https://" + e;
  std::fprintf(stderr, "mock-exchange: listening on%s (threads=%u)\n", summary.c_str(), opts.threads);

  net::signal_set signals(control, SIGINT, SIGTERM);
  signals.async_wait([&](const beast::error_code& ec, int sig) {
    if (ec) return;
    std::fprintf(stderr, "mock-exchange: signal %d, stopping\n", sig);
    for (auto& acc : acceptors) {
      beast::error_code ignored;
      acc->close(ignored);
    }
    ioc.stop();
  });

  std::vector<std::thread> workers;
  for (unsigned i = 1; i < opts.threads; ++i) workers.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : workers) t.join();
  return 0;
}

}  // namespace cbagate::mock
