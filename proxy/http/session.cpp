#include "http/session.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "delegation/kerberos.hpp"
#include "http/account_mapping.hpp"
#include "http/connection.hpp"
#include "http/framing.hpp"
#include "http/local_reply.hpp"
#include "http/relay.hpp"
#include "http/sanitize.hpp"
#include "http/tls_stream.hpp"
#include "identity/refusal.hpp"
#include "observability/log.hpp"
#include "routing/authorize.hpp"
#include "routing/namespace.hpp"
#include "routing/normalize.hpp"
#include "upstream/pinning.hpp"

// The request path, one phase per function, in the order a request meets them:
//
//   read_header -> check_header -> route -> authorize (-> await_revocation) -> map
//   (-> map_directory) -> delegate
//   -> relay (relay.cpp)
//
// A phase reads what the phases before it put in `request`, adds its own part, and either lets
// the request go on or refuses it with a local reply (a `refusal`). serve_request is the one
// straight line through them; serve_connection is the keep-alive loop around it.

namespace cbagate::http {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using steady = std::chrono::steady_clock;
using detail::micros;
using detail::ms;

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Whether access-log lines are written: the record's fields that only the line shows (the
// certificate's strings, the UPN) are filled only then.
bool access_logging(const connection& c) { return c.rt.access_log && c.rt.access_log->enabled(); }

// How a phase ends a request early: the local reply to send (its error code is already in the
// access record) and whether the connection may carry another request after it.
struct refusal {
  reply r;
  int substatus = 0;
  bool keep = false;
  unsigned version = 11;
  std::string allow{};  // 405: the Allow header
  std::optional<local_reply_info> page{};  // a row of its own (certificate refusals), else r's
  std::string_view location{};             // a redirect route: 302 to this (route.redirect)
};
// What a phase decided: nothing (on to the next phase: std::nullopt) or a refusal. Held by
// pointer: a request's frame keeps one per co_await of a phase for the whole request, a held
// Ping included, and refusals are rare (issue 14).
class verdict {
 public:
  verdict() = default;
  verdict(std::nullopt_t) noexcept {}
  verdict(refusal r) : r_(std::make_unique<refusal>(std::move(r))) {}
  verdict(const verdict& o) : r_(o.r_ ? std::make_unique<refusal>(*o.r_) : nullptr) {}
  verdict(verdict&&) noexcept = default;
  verdict& operator=(const verdict& o) { return *this = verdict(o); }
  verdict& operator=(verdict&&) noexcept = default;
  explicit operator bool() const noexcept { return r_ != nullptr; }
  refusal& operator*() const noexcept { return *r_; }
  refusal* operator->() const noexcept { return r_.get(); }

 private:
  std::unique_ptr<refusal> r_;
};

// One request as the phases fill it in.
struct request {
  explicit request(connection& c) : w(c.w), parser(c.w.take_fields()) {
    rec.time = std::chrono::system_clock::now();
    rec.conn_id = c.conn_id;
    rec.req_id = ++c.requests;
    rec.client = c.client;
    rec.sni = c.sni;
    rec.tls_version = c.tls_version;
    rec.tls_resumed = c.resumed;
  }

  request(const request&) = delete;
  request& operator=(const request&) = delete;
  ~request() { w.give_fields(parser.release_fields()); }

  worker& w;
  steady::time_point t0 = steady::now();
  observability::access_record rec;
  // check_header
  flat_request_parser<bhttp::buffer_body> parser;
  bool has_body = false;
  bool keep_after_refusal = false;  // a local refusal may keep the connection
  // route
  std::optional<routing::normalized_target> target;
  const config::route* route = nullptr;
  // authorize
  const identity::client_identity* id = nullptr;  // the connection's, or `aged` below
  std::unique_ptr<identity::client_identity> aged;  // the connection's, expired since (rare:
                                                    // not inline in every request's frame)
  routing::decision decision;
  bool revocation_pending = false;  // the caches had no status: await_revocation fetches it
  // map
  std::string account;  // the user the backend sees; empty: no identity is forwarded
  std::string principal;  // Kerberos: the directory's account ("alice@LAB.TEST"); "" = from UPN
  // delegate
  relay_plan plan;
  upstream::lease lease;
  bool client_binds = false;  // the client's own NTLM/Negotiate goes to the backend (issue 10)
  // Kerberos mode: "Negotiate <token>" when a token was made for this request; otherwise, with
  // kerberos_session, it goes without one on a connection the backend keeps authenticated.
  std::string negotiate;
  bool kerberos_session = false;
  bool delegate_pending = false;  // a new backend connection or a Kerberos token: delegate_rest
  // relay
  sent_request sent;        // on a Kerberos session: the request as sent (relay_keeping)
  held_exchange_ptr held;   // parked unanswered (relay's park): its exchange; last, so that it
                            // goes before the backend connection and the parser it refers to

  auto& msg() { return parser.get(); }
  unsigned version() { return parser.get().version(); }
};

// --- read header ----------------------------------------------------------------------------------

enum class header_status { ok, closed, timeout, too_large, malformed, error };

struct header_read {
  header_status status = header_status::error;
  std::size_t len = 0;                // ok: the header block is c.buf[0, len)
  std::optional<errc> violation;      // malformed: what the raw scan saw
};

// Reads until the blank line that ends the header, into c.buf. Reads are capped so that the body
// bytes that may arrive together with the header never exceed limits.read_ahead_bytes: that is
// all the body the proxy holds before the upstream is ready (the uploadReadAheadSize analogue).
// A violation the raw scan can already see in an incomplete block ends the read with
// `malformed`: a request with bare-LF line endings never sends CRLF CRLF, and would otherwise
// wait for timeouts.request_header and get 408 instead of its 400.
// timeouts.request_header is one deadline for the whole header, counted from its first byte:
// a client trickling a byte at a time cannot push it back (slow loris). With c.buf empty the
// caller has waited for the request to become readable (run_session: an idle connection waits
// there, without a read buffer).
net::awaitable<header_read> read_header(connection& c) {
  const auto& lim = c.rt.cfg->limits;
  const std::size_t read_cap = std::max<std::size_t>(lim.read_ahead_bytes, 1024);
  const scan_limits slim{lim.max_header_fields, lim.max_target_bytes};
  header_read out;
  std::size_t searched = 0;
  bool first = c.buf.size() == 0;
  steady::time_point header_deadline = steady::now() + ms(c.rt.cfg->timeouts.request_header);
  for (;;) {
    std::string_view data(static_cast<const char*>(c.buf.data().data()), c.buf.size());
    const std::size_t from = searched >= 3 ? searched - 3 : 0;
    if (auto pos = data.find("\r\n\r\n", from); pos != std::string_view::npos) {
      out.len = pos + 4;
      out.status = out.len > lim.max_request_header_bytes ? header_status::too_large : header_status::ok;
      co_return out;
    }
    // Scan again only when a line may have ended (CR, LF) or a NUL came: at most one scan per
    // line, and max_header_fields bounds the lines.
    if (data.substr(searched).find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
      if (auto scan = scan_header_prefix(data, slim); scan.error) {
        out.violation = scan.error;
        out.status = header_status::malformed;
        co_return out;
      }
    }
    searched = data.size();
    if (data.size() >= lim.max_request_header_bytes) {
      out.status = header_status::too_large;
      co_return out;
    }
    // Between requests the idle timeout applies; once a byte has come, the header deadline.
    if (first)
      c.tcp().expires_after(ms(c.rt.cfg->timeouts.idle));
    else
      c.tcp().expires_at(header_deadline);
    error_code ec;
    std::size_t n = 0;
    // Small requests need a small buffer: it grows (doubling) only when a read fills it.
    const std::size_t room =
        std::min({read_cap, lim.max_request_header_bytes + 4 - data.size(),
                  std::max<std::size_t>(4096, c.buf.capacity() - c.buf.size())});
    // What OpenSSL has decrypted already (the caller's readiness wait peeked at a record) is
    // copied without a system call or an asynchronous hop; otherwise the read waits.
    n = c.stream.read_pending(c.buf.prepare(room));
    if (n == 0) std::tie(ec, n) = co_await c.stream.async_read_some(c.buf.prepare(room), use_tuple);
    if (ec) {
      if (ec == beast::error::timeout)
        out.status = first ? header_status::closed : header_status::timeout;
      else
        out.status = (ec == net::error::eof || ec == net::ssl::error::stream_truncated ||
                      ec == net::error::connection_reset)
                         ? header_status::closed
                         : header_status::error;
      co_return out;
    }
    c.buf.commit(n);
    if (first) {
      first = false;
      c.handle.idle = false;
      header_deadline = steady::now() + ms(c.rt.cfg->timeouts.request_header);
    }
  }
}

// The header block read_header delivered: framing checks on the raw bytes first (what Beast
// would tolerate, we refuse), then Beast's parse, then the checks on the parsed fields.
verdict check_header(connection& c, request& rq, const header_read& h) {
  const config::snapshot& cfg = *c.rt.cfg;
  auto& rec = rq.rec;
  switch (h.status) {
    case header_status::ok: break;
    case header_status::too_large:
      rec.error = "header_too_large";
      return refusal{reply::header_too_large};
    case header_status::malformed:
      if (h.violation) {
        rec.error = "framing:" + std::string(to_string(*h.violation));
        return refusal{reply_for(error_source::downstream, make_error_code(*h.violation))};
      }
      [[fallthrough]];
    default:
      rec.error = "request_header_timeout";
      return refusal{reply::request_timeout};
  }
  std::string_view raw(static_cast<const char*>(c.buf.data().data()), h.len);
  if (auto fe = scan_header_block(raw, scan_limits{cfg.limits.max_header_fields,
                                                     cfg.limits.max_target_bytes})) {
    rec.error = "framing:" + std::string(to_string(*fe));
    // Too many fields -> 431, a long target -> 414, the rest 400 (one table: local_reply.cpp).
    return refusal{reply_for(error_source::downstream, make_error_code(*fe))};
  }
  auto& p = rq.parser;
  // The whole block is at hand: its bytes, and a field per line at most, in one reservation
  // (none when this thread's spare storage is large enough already).
  rq.msg().reserve(h.len, 16);
  p.header_limit(static_cast<std::uint32_t>(cfg.limits.max_request_header_bytes + 4));
  p.body_limit(boost::none);
  {
    error_code ec;
    const std::size_t used = p.put(net::buffer(raw.data(), raw.size()), ec);
    if (ec || !p.is_header_done() || used != h.len) {
      rec.error = "bad_request_header";
      return refusal{ec ? reply_for(error_source::downstream, ec) : reply::bad_request};
    }
  }
  c.buf.consume(h.len);
  auto& req = rq.msg();
  rec.method = std::string(req.method_string());
  if (auto ua = req.find(bhttp::field::user_agent); ua != req.end())
    rec.user_agent = std::string(ua->value());
  if (auto fe = check_request_framing(req.base())) {
    rec.error = "framing:" + std::string(to_string(*fe));
    return refusal{reply::bad_request};
  }
  if (static_cast<std::size_t>(std::distance(req.begin(), req.end())) > cfg.limits.max_header_fields) {
    rec.error = "too_many_fields";
    return refusal{reply::header_too_large};
  }
  rq.has_body = req.chunked() ||
                (req.has_content_length() && p.content_length() && *p.content_length() > 0);
  // Only GET/HEAD/... without a body may keep the connection after a local refusal; with a
  // body the unread bytes would be taken for the next request.
  rq.keep_after_refusal = !rq.has_body && req.keep_alive() && !c.w.draining;
  // Other methods are judged by the route (route()): RPC_IN_DATA is right on /rpc only.
  if (req.method() == bhttp::verb::connect) {
    rec.error = "method_not_supported";
    return refusal{reply::not_implemented};
  }
  return std::nullopt;
}

// --- route ----------------------------------------------------------------------------------------

// Normalize the target once; route on the normalized path; that path is what is forwarded.
verdict route(connection& c, request& rq) {
  auto& rec = rq.rec;
  auto target = routing::normalize_target(rq.msg().target(), c.rt.cfg->limits.max_target_bytes);
  if (!target) {
    rec.path = "";
    rec.error = "bad_path:" + target.error().message();
    // A target over limits.max_target_bytes is 414 (the raw scan normally catches it first).
    return refusal{target.error() == routing::errc::target_too_long ? reply::uri_too_long
                                                                    : reply::bad_request};
  }
  rq.target = std::move(*target);
  rq.route = c.rt.routes.match(rq.target->path);
  if (!rq.route) {
    rec.error = "no_route";
    return refusal{reply::not_found, 0, rq.keep_after_refusal, rq.version()};
  }
  rec.route = rq.route->prefix;
  if (!rq.route->redirect.empty()) {  // issue 13: "/" -> "/owa/"; nothing is forwarded
    refusal out{reply::not_found, 0, rq.keep_after_refusal, rq.version()};
    if (routing::is_redirect_target(*rq.route, rq.target->path))
      out.location = rq.route->redirect;
    else
      rec.error = "no_route";
    return out;
  }
  // Methods (issue 10): a virtual directory forwards what Exchange uses there (RPC_IN_DATA and
  // RPC_OUT_DATA on /rpc), anything else gets 405 with Allow; a route without a list refuses
  // only methods we do not know (501).
  const config::route& r = *rq.route;
  if (routing::restricts_methods(r)) {
    if (!routing::method_allowed(r, rq.msg().method_string())) {
      rec.error = "method_not_allowed";
      return refusal{reply::method_not_allowed, 0, rq.keep_after_refusal, rq.version(),
                     routing::allow_header(r)};
    }
  } else if (rq.msg().method() == bhttp::verb::unknown) {
    rec.error = "method_not_supported";
    return refusal{reply::not_implemented};
  }
  return std::nullopt;
}

// --- authorize ------------------------------------------------------------------------------------

// Revocation (issue 5, docs/revocation.md): every request that forwards an identity is checked
// against the current state (this runtime's CRL files, the process-wide CDP and OCSP caches),
// kept-alive and resumed connections alike, so revoking a certificate cuts off a device that
// holds its connection open. The good path is a lookup (check_revocation, no coroutine frame);
// a status that needs a download waits in await_revocation (asynchronously, bounded by
// revocation.timeout) without blocking the I/O thread.

// The settings of the newest runtime (a reload's CRL files apply to live connections too):
// this thread's cached copy, not to be kept across a co_await (a reload may replace it). Null
// when no check applies.
const revocation_current* revocation_settings(connection& c) {
  const revocation_current* rv = c.rt.revocation_now ? c.w.current_revocation(*c.rt.revocation_now)
                                                     : c.rt.revocation.get();
  if (c.rt.revocation_checker == nullptr || rv == nullptr || rv->policy.checks == revocation::mode::off)
    return nullptr;
  return rv;
}

// What a revocation verdict means for the request: refused (revoked, or unknown and failing
// closed) or allowed (unknown and failing open is said so in the log and the access record).
verdict apply_revocation(connection& c, request& rq, const revocation::verdict& v,
                         config::fail_mode fail) {
  const identity::client_identity* id = rq.id;
  auto& rec = rq.rec;
  revocation::checker& checker = *c.rt.revocation_checker;
  const bool unknown = v.state == revocation::status::unknown;
  if (v.state == revocation::status::revoked || (unknown && fail == config::fail_mode::closed)) {
    checker.count(v, false);
    rec.error = unknown ? "revocation_unknown" : "revoked";
    rec.extra.emplace_back("revocation_source", std::string(revocation::to_string(v.from)));
    if (!v.reason.empty()) rec.extra.emplace_back("revocation_reason", v.reason);
    c.rt.metrics->count_rejection(identity::rejection::revoked);
    observability::logger("revocation")
        ->info("conn={} req={} certificate {} serial {} refused: {} ({}{}{})", c.conn_id,
               rec.req_id, id->subject, id->serial, rec.error, revocation::to_string(v.from),
               v.reason.empty() ? "" : ": ", v.reason);
    // "revocation status unknown" is never worded "revoked" on the page (issue 13).
    refusal out{reply::forbidden, 13, rq.keep_after_refusal, rq.version()};
    if (unknown) out.page = info_for_refusal(identity::revocation_unknown_refusal());
    return out;
  }
  if (unknown) {
    // Fail open: allowed, and said so (the contract's line; the counter below).
    std::string subject = id->subject;
    std::string serial = id->serial;
    if (v.index > 0 && v.index < id->chain.size()) {
      subject = "the CA at depth " + std::to_string(v.index) + " of " + id->subject;
      serial.clear();
      static constexpr char hex[] = "0123456789ABCDEF";
      for (const char b : id->chain[v.index].serial) {
        serial += hex[(static_cast<unsigned char>(b) >> 4) & 0x0F];
        serial += hex[static_cast<unsigned char>(b) & 0x0F];
      }
    }
    observability::logger("revocation")
        ->warn("revocation status unknown for {} serial {}: {}; allowed (fail open)", subject,
               serial, v.reason.empty() ? std::string("unknown") : v.reason);
    rec.extra.emplace_back("revocation", "unknown_allowed");
  }
  checker.count(v, unknown);
  return std::nullopt;
}

// The caches' answer, when they have one; otherwise rq.revocation_pending (await_revocation).
verdict check_revocation(connection& c, request& rq) {
  const revocation_current* rv = revocation_settings(c);
  if (rv == nullptr) return std::nullopt;
  const config::fail_mode fail = rq.route->revocation_fail.value_or(rv->fail);
  const std::optional<revocation::verdict> v =
      c.rt.revocation_checker->try_check(rq.id->chain, rv->policy, unix_now());
  if (!v) {
    rq.revocation_pending = true;
    return std::nullopt;
  }
  return apply_revocation(c, rq, *v, fail);
}

// A status the caches did not have: fetched (CRL download, OCSP) off this thread, then decided.
net::awaitable<verdict> await_revocation(connection& c, request& rq) {
  const revocation_current* rv = revocation_settings(c);
  if (rv == nullptr) co_return std::nullopt;  // checks turned off by a reload meanwhile
  const config::fail_mode fail = rq.route->revocation_fail.value_or(rv->fail);
  const auto ex = co_await net::this_coro::executor;
  // async_check copies the policy before its first suspension; rv is not used after it.
  const revocation::verdict v = co_await c.rt.revocation_checker->async_check(rq.id->chain, rv->policy, ex);
  co_return apply_revocation(c, rq, v, fail);
}

// The certificate outcome of this connection against the route's policy. The chain was
// verified at the handshake; a kept-alive connection or a resumed session (tickets live for
// tls.session_timeout) can outlast the certificate, so its validity period is checked again
// for every request, and so is its revocation status (check_revocation; await_revocation when
// the status must be fetched first).
verdict authorize(connection& c, request& rq) {
  rq.id = &c.id;
  if (c.id.ok()) {
    const std::int64_t now = unix_now();
    if (now > c.id.not_after || now < c.id.not_before) {
      rq.aged = std::make_unique<identity::client_identity>(c.id);
      auto& aged = *rq.aged;
      aged.reason = now > c.id.not_after ? identity::rejection::expired
                                         : identity::rejection::not_yet_valid;
      aged.upn.clear();
      rq.id = &aged;
    }
  }
  // auth.upn_sources "directory": a certificate without a UPN goes on to map_directory, which
  // locates the account by its strong strings (or refuses).
  rq.decision = routing::authorize(*rq.route, *rq.id,
                                   c.rt.cfg->auth.upn_from_directory && c.rt.directory != nullptr);
  if (!rq.decision.allow) {
    c.rt.metrics->count_rejection(rq.decision.reason);
    if (rq.id->reason == identity::rejection::none) {  // the route's policy, not the certificate
      rq.rec.error = std::string(identity::to_string(rq.decision.reason));
      return refusal{reply::forbidden, rq.decision.substatus, rq.keep_after_refusal, rq.version()};
    }
    // One precise code per cause on the page and in the log, the verifier's own words in the
    // process log (issue 13).
    const identity::refusal r = identity::refusal_for(*rq.id);
    rq.rec.error = std::string(r.code);
    if (rq.id->presented)
      observability::logger("identity")
          ->info("conn={} req={} certificate refused: {} subject \"{}\" issuer \"{}\" serial {}: {}",
                 c.conn_id, rq.rec.req_id, r.code, rq.id->subject, rq.id->issuer, rq.id->serial,
                 rq.id->detail.empty() ? std::string(r.text) : rq.id->detail);
    refusal out{reply::forbidden, r.substatus, rq.keep_after_refusal, rq.version()};
    out.page = info_for_refusal(r);
    return out;
  }
  if (rq.decision.forward_identity && c.rt.cfg->access_log.log_upn && access_logging(c) &&
      !rq.id->upn.empty())
    rq.rec.upn = rq.id->upn;
  if (rq.decision.forward_identity) return check_revocation(c, rq);
  return std::nullopt;
}

// --- map ------------------------------------------------------------------------------------------

// The account the backend will see for an authorized identity: the certificate's UPN. With
// auth.mapping = "directory" (issue 12, docs/directory.md) the directory must first find the
// account strongly bound to the certificate, enabled, unlocked and unexpired: at every request
// (the verdict cache makes that a lookup), so a held connection is cut off within cache_ttl.
// Refused: 403.12 with the verdict's code; no directory: 503, never a pass.
void map(request& rq) {
  if (rq.decision.forward_identity) rq.account = rq.id->upn;
}

// The directory's verdict (a lookup in its verdict cache on the warm path).
net::awaitable<verdict> map_directory(connection& c, request& rq) {
  const account_mapping m = co_await map_account(*c.rt.directory, *rq.id);
  auto& rec = rq.rec;
  rec.extra.emplace_back("directory", m.from_cache ? "cache" : "lookup");
  if (m.refusal) {
    rec.error = std::string(m.refusal->code);
    if (!m.result.detail.empty()) rec.extra.emplace_back("directory_detail", m.result.detail);
    observability::logger("directory")
        ->info("conn={} req={} certificate {} ({}) refused: {}: {}", c.conn_id, rec.req_id,
               rq.id->subject, rq.id->upn, rec.error, m.result.detail);
    if (m.refusal->status == 503)
      co_return refusal{reply::directory_unavailable, 0, false, rq.version()};
    co_return refusal{reply::forbidden, 12, rq.keep_after_refusal, rq.version()};
  }
  rec.extra.emplace_back("account", m.result.sam_account_name);
  rec.extra.emplace_back("mapping", m.result.via);
  if (c.rt.kerberos) rq.principal = account_principal(m.result, c.rt.kerberos->realm());
  if (rq.account.empty()) {
    // Located by its strong strings (auth.upn_sources "directory"): the account's UPN is the
    // user, under the same suffix limit as a certificate's.
    const located_user u =
        user_of_located_account(m.result, c.rt.kerberos != nullptr, c.rt.cfg->auth.upn_suffixes);
    if (u.refusal != nullptr) {
      rec.error = u.refusal;
      observability::logger("directory")
          ->info("conn={} req={} certificate {} refused: {}: the account {} has userPrincipalName "
                 "\"{}\"", c.conn_id, rec.req_id, rq.id->subject, u.refusal, m.result.dn,
                 m.result.upn);
      co_return refusal{reply::forbidden, 12, rq.keep_after_refusal, rq.version()};
    }
    rq.account = u.account;
    if (c.rt.cfg->access_log.log_upn && access_logging(c) && !m.result.upn.empty())
      rec.upn = m.result.upn;
    rec.extra.emplace_back("upn_from", "directory");
  }
  co_return std::nullopt;
}

// --- delegate -------------------------------------------------------------------------------------

// The request as the backend will see it, rewritten in place: body limit and Expect decided,
// the header sanitized (every inbound identity header dropped), forwarding headers, the
// canonical target, and in header mode our identity header.
verdict rewrite_for_upstream(connection& c, request& rq) {
  const config::snapshot& cfg = *c.rt.cfg;
  const config::route& route = *rq.route;
  auto& req = rq.msg();
  auto& rec = rq.rec;
  const std::uint64_t max_body = route.max_body_bytes ? route.max_body_bytes : cfg.limits.max_body_bytes;
  if (max_body && rq.parser.content_length() && *rq.parser.content_length() > max_body) {
    rec.error = "body_too_large";
    return refusal{reply::body_too_large, 0, false, rq.version()};
  }
  relay_plan& plan = rq.plan;
  plan.request_has_body = rq.has_body;
  plan.head = req.method() == bhttp::verb::head;
  plan.max_body = max_body;
  plan.client_version = req.version();
  plan.client_keep_alive = req.keep_alive();
  plan.hsts = route.hsts;
  plan.response_timeout = ms(routing::response_timeout(route, cfg.timeouts.upstream_response));
  // Outlook's channels and long polls pause for minutes between body bytes: for them the
  // route's response timeout is also the body idle limit (issue 10).
  plan.body_idle = ms(cfg.timeouts.body_idle);
  if (routing::is_long_lived(req.method_string(), req["X-RequestType"]))
    plan.body_idle = std::max(plan.body_idle, plan.response_timeout);
  const bool was_chunked = req.chunked();
  if (auto e = req.find(bhttp::field::expect); e != req.end()) {
    if (beast::iequals(e->value(), "100-continue") && req.version() >= 11 && rq.has_body) {
      plan.send_continue = true;
    } else if (!beast::iequals(e->value(), "100-continue")) {
      rec.error = "expectation_failed";
      return refusal{reply::expectation_failed, 0, false, rq.version()};
    }
    req.erase(bhttp::field::expect);
  }
  // The authority: the absolute-form target's (check_header made sure the one Host field
  // names it, in any case), else the one Host field as sent (then it stays as it is).
  const bool absolute_form = !rq.target->authority.empty();
  // The client's own Authorization passes only where the route says so, and never beside a
  // certificate identity (routing::passes_authorization).
  sanitize_request(req.base(),
                   sanitize_options{cfg.identity.header, !routing::passes_authorization(
                                                             route, rq.decision.forward_identity)});
  // Credentials the client sent itself (read before Kerberos mode adds its own token).
  rq.client_binds = upstream::request_binds_connection(req.base());
  const std::string_view host = absolute_form ? std::string_view(rq.target->authority)
                                              : std::string_view(req[bhttp::field::host]);
  add_forwarding_headers(req.base(), forwarding_info{c.client_ip, "https", host});
  if (absolute_form) req.set(bhttp::field::host, rq.target->authority);
  // Header mode: the account in the configured header. Kerberos mode: the identity travels only
  // as a Negotiate token, made for the backend connection it will be sent on (delegate).
  if (rq.decision.forward_identity && cfg.identity.mode != config::identity_mode::kerberos)
    req.set(cfg.identity.header, rq.account);
  // The normalized target; the start line is rewritten only when it differs (mostly not).
  if (std::string forward = rq.target->forward_target(); forward != req.target()) req.target(forward);
  req.version(11);
  if (was_chunked) req.chunked(true);
  req.keep_alive(true);
  return std::nullopt;
}

// Kerberos mode: the user the backend sees, as backend connections are keyed (the directory's
// account, else the UPN), so a connection made for one user never serves another.
const std::string& user_key(const request& rq) {
  return rq.principal.empty() ? rq.account : rq.principal;
}

// The key of the backend connections a request may use: user_key in Kerberos mode, "" in header
// mode.
std::string pool_key(const request& rq, bool kerberos) { return kerberos ? user_key(rq) : std::string(); }

// The principal S4U2Self impersonates: the directory's account, else the one the UPN maps to.
expected<std::string> delegation_principal(const delegation::kerberos_delegator& krb,
                                           const request& rq) {
  return rq.principal.empty() ? krb.principal_for(rq.account) : expected<std::string>(rq.principal);
}

// kerberos.persistent_auth: whether the request may go without a new token, because the backend
// keeps its connection authenticated for this user (it answered a token of theirs with
// Persistent-Auth: true), within the lifetime the user's delegated credential had in the cache
// then (kerberos_session_until), and the request can be sent again with a token should the
// backend ask (its body is at hand: relay_keeping).
bool on_kerberos_session(connection& c, const request& rq) {
  const upstream::connection& uc = *rq.lease.conn;
  if (!c.rt.cfg->kerberos.persistent_auth || uc.pinned) return false;
  if (steady::now() >= uc.kerberos_session_until) return false;
  if (uc.key.empty() || uc.key != user_key(rq)) return false;
  return body_at_hand(c, rq.parser, rq.plan);
}

// Kerberos mode: S4U2Self + S4U2Proxy for rq.account on the delegation workers (never on this
// I/O thread), bound to the backend TLS connection's certificate (tls-server-end-point) for
// Extended Protection; the token goes in rq.negotiate.
net::awaitable<verdict> kerberos_token(connection& c, request& rq) {
  auto& rec = rq.rec;
  delegation::kerberos_delegator& krb = *c.rt.kerberos;
  // With directory mapping, the account the directory returned (issue 12), not a name guessed
  // from the UPN's suffix.
  const auto principal = delegation_principal(krb, rq);
  const bool warm = principal && krb.cached(*principal);
  const auto t_krb = steady::now();
  std::vector<unsigned char> bindings = rq.lease.conn->tls_server_end_point;
  expected<std::string> token = make_error_code(delegation::errc::internal);
  if (rq.principal.empty()) {
    std::string upn = rq.account;
    token = co_await krb.async_token(std::move(upn), std::move(bindings));
  } else {
    std::string name = rq.principal;
    token = co_await krb.async_token_for_principal(std::move(name), std::move(bindings));
  }
  rec.delegation_us = micros(steady::now() - t_krb);
  rec.extra.emplace_back("krb_cache", warm ? "hit" : "miss");
  c.rt.metrics->count_delegation(token ? error_code{} : token.error(), warm, rec.delegation_us);
  if (!token) {
    const error_code kec = token.error();
    rec.error = "delegation:" + kec.message();
    observability::logger("delegation")
        ->warn("conn={} req={} kerberos: no ticket for {} ({}): {}", c.conn_id, rec.req_id,
               rq.account, principal ? *principal : std::string("?"), kec.message());
    c.pool->release(std::move(rq.lease.conn));  // nothing was sent on it
    const reply r = kec == delegation::errc::kdc_unreachable || kec == delegation::errc::keytab
                        ? reply::kdc_unavailable
                    : kec == delegation::errc::internal ? reply::internal
                                                         : reply::delegation_denied;
    co_return refusal{r, 0, false, rq.plan.client_version};
  }
  rq.negotiate = "Negotiate " + *token;
  co_return std::nullopt;
}

// A backend connection for the request: pooled or new, with failover between servers.
net::awaitable<verdict> acquire_backend(connection& c, request& rq, std::string key) {
  auto& rec = rq.rec;
  rq.lease = co_await c.pool->acquire(std::move(key));
  if (!rq.lease.conn) {
    rec.error = "upstream_connect_failed";
    rec.upstream_connect_us = micros(rq.lease.connect_time);
    observability::logger("upstream")->error("conn={} req={} no backend reachable: {}", c.conn_id,
                                             rec.req_id, rq.lease.detail);
    c.rt.metrics->upstream_connect_failures.inc();
    co_return refusal{reply::upstream_connect_failed, 0, false, rq.plan.client_version};
  }
  co_return std::nullopt;
}

// In Kerberos mode backend connections are bound to the user (IIS may keep a connection
// authenticated): a connection made for one user is never handed to another.
bool kerberos_mode(const connection& c, const request& rq) {
  return c.rt.cfg->identity.mode == config::identity_mode::kerberos && rq.decision.forward_identity;
}

// The backend connection the request goes on is known: the access record, connection-bound
// authentication, and in Kerberos mode whether a token must be made (rq.delegate_pending).
void on_backend(connection& c, request& rq) {
  auto& rec = rq.rec;
  upstream::pool& pool = *c.pool;
  if (!rq.lease.reused) rec.upstream_connect_us = micros(rq.lease.connect_time);
  rec.upstream = pool.server(rq.lease.conn->server).url;
  rq.lease.conn->requests++;
  rec.upstream_conn = rq.lease.reused ? "reused" : "new";
  // Connection-bound authentication (issue 10): the client's NTLM or Negotiate makes this
  // backend connection private to this client connection before anything is sent on it.
  if (rq.client_binds) upstream::make_private(*rq.lease.conn, &c.rt.metrics->upstream_private_open);
  if (rq.lease.conn->pinned) {
    rec.upstream_conn = "private";
    c.rt.metrics->upstream_pinned_requests.inc();
  }
  if (!kerberos_mode(c, rq)) return;
  if (on_kerberos_session(c, rq)) {
    rq.kerberos_session = true;
    rec.extra.emplace_back("krb_cache", "session");
    c.rt.metrics->kerberos_session_requests.inc();
    return;
  }
  rq.delegate_pending = true;  // a token for this connection (delegate_rest)
}

// The upstream request, then the backend connection it goes on: without suspending when this
// client's private connection or an idle pooled one serves (the keep-alive path: no coroutine
// frame). What must wait (a new connection, with failover between servers; a Kerberos token)
// is left to delegate_rest, flagged by rq.delegate_pending.
verdict delegate(connection& c, request& rq) {
  if (verdict v = rewrite_for_upstream(c, rq)) return v;
  upstream::pool& pool = *c.pool;
  c.tcp().expires_never();
  // A backend connection private to this client serves its later requests that forward no
  // certificate identity (the NTLM legs and what follows them); no other client ever gets it.
  if (!rq.decision.forward_identity) rq.lease.conn = c.pinned.take(pool);
  if (!rq.lease.conn) rq.lease.conn = pool.take_idle(pool_key(rq, kerberos_mode(c, rq)));
  if (!rq.lease.conn) {
    rq.delegate_pending = true;  // a new connection (delegate_rest)
    return std::nullopt;
  }
  rq.lease.reused = true;
  on_backend(c, rq);
  return std::nullopt;
}

// What delegate left to wait for: a new backend connection, then (Kerberos mode) the token.
net::awaitable<verdict> delegate_rest(connection& c, request& rq) {
  rq.delegate_pending = false;
  if (!rq.lease.conn) {
    if (verdict v = co_await acquire_backend(c, rq, pool_key(rq, kerberos_mode(c, rq)))) co_return v;
    on_backend(c, rq);
    if (!rq.delegate_pending) co_return std::nullopt;
    rq.delegate_pending = false;
  }
  if (verdict v = co_await kerberos_token(c, rq)) co_return v;
  rq.msg().set(bhttp::field::authorization, rq.negotiate);
  co_return std::nullopt;
}

// The backend answered 401 to a request sent without a token on a Kerberos session: the session
// is over. The request goes again with a token, on the same connection when the 401 left it
// usable, else on another of the user's. Nothing has reached the client yet.
net::awaitable<verdict> resend_with_token(connection& c, request& rq, outcome& out) {
  c.rt.metrics->kerberos_session_resends.inc();
  std::erase_if(rq.rec.extra, [](const auto& kv) { return kv.first == "krb_cache"; });
  rq.rec.extra.emplace_back("krb_session", "401, sent again with a token");
  rq.kerberos_session = false;
  rq.lease.conn->kerberos_session_until = {};
  if (!out.upstream_reusable) {
    rq.lease.conn.reset();
    if (verdict v = co_await acquire_backend(c, rq, pool_key(rq, true))) co_return v;
    rq.lease.conn->requests++;
    rq.rec.upstream = c.pool->server(rq.lease.conn->server).url;
    rq.rec.upstream_conn = rq.lease.reused ? "reused" : "new";
  }
  if (verdict v = co_await kerberos_token(c, rq)) co_return v;
  out = co_await relay_again(c, *rq.lease.conn, rq.parser, rq.plan, rq.rec, rq.t0, rq.sent,
                             rq.negotiate, &rq.held);
  co_return std::nullopt;
}

// Kerberos mode, after an exchange: a backend that answered a token with Persistent-Auth: true
// keeps the connection authenticated for the user (kerberos.persistent_auth) for as long as the
// user's delegated credential stays cached; a 401 or Persistent-Auth: false ends that.
void note_kerberos_session(connection& c, const request& rq, const outcome& out) {
  upstream::connection& uc = *rq.lease.conn;
  const int status = rq.rec.upstream_status;
  if (!rq.negotiate.empty()) {
    uc.kerberos_session_until = {};
    if (!c.rt.cfg->kerberos.persistent_auth || status == 0 || status == 401 ||
        out.persistent_auth != upstream::persistence::persists)
      return;
    const delegation::kerberos_delegator& krb = *c.rt.kerberos;
    if (const auto principal = delegation_principal(krb, rq))
      uc.kerberos_session_until = krb.cached_until(*principal).value_or(steady::time_point{});
  } else if (status == 401 || out.persistent_auth == upstream::persistence::ends) {
    uc.kerberos_session_until = {};
  }
}

// --- one request ----------------------------------------------------------------------------------

// The one access-log line and the metrics of a request.
bool finish(connection& c, request& rq, bool keep) {
  auto& rec = rq.rec;
  rec.total_us = micros(steady::now() - rq.t0);
  // Copied only now (a held request keeps no copy of the certificate's strings) and only for
  // the access log (metrics do not read them). The path and query are the normalized target's
  // own strings, moved: no copy per request (issue 14: two allocations per request, and about
  // 130 bytes per held Ping).
  if (rq.target && access_logging(c)) {
    rec.path = std::move(rq.target->path);
    rec.query = std::move(rq.target->query);
  }
  if (c.id.presented && access_logging(c)) {
    rec.cert_subject = c.id.subject;
    rec.cert_serial = c.id.serial;
    rec.cert_issuer = c.id.issuer;
    rec.cert_sha256 = c.id.sha256;
  }
  c.rt.metrics->observe(rec);
  if (c.rt.routes_metrics) c.rt.routes_metrics->observe(rec);
  if (c.rt.access_log) c.rt.access_log->write(rec);
  return keep;
}

// Answers a request a phase ended early with its local reply; returns whether the client
// connection may carry another request.
net::awaitable<bool> refuse(connection& c, request& rq, const refusal& v) {
  if (!v.location.empty())
    co_await send_redirect(c, rq.rec, v.location, v.keep, v.version);
  else if (v.page)
    co_await send_local(c, rq.rec, *v.page, v.keep, v.version, v.allow);
  else
    co_await send_local(c, rq.rec, v.r, v.substatus, v.keep, v.version, v.allow);
  co_return finish(c, rq, v.keep);
}

// What became of a request: the connection carries another one (keep) or ends (close), or the
// request is parked unanswered (held: the caller hands the connection to hold_parked).
enum class next { close, keep, held };

// Serves one request whose header read_header delivered (`h`; or failed to), or, with `h` null,
// goes on with the request parked in `held_slot` once its hold has ended. A request parked
// (again) is left in `held_slot`.
net::awaitable<next> serve_request(connection& c, const header_read* h,
                                   std::unique_ptr<request>& held_slot) {
  // The request lives outside the coroutine frame: the frame then fits Asio's per-thread block
  // cache (at most 1020 bytes), whereas a larger one is an aligned allocation that also evicts
  // a cached block on every request (issue 14: 8 aligned allocations per keep-alive GET). A
  // parked request outlives the frame.
  std::unique_ptr<request> owned = h ? std::make_unique<request>(c) : std::move(held_slot);
  request& rq = *owned;
  outcome out;
  if (h) {
    c.rt.metrics->requests_total.inc();
    verdict v = check_header(c, rq, *h);
    if (!v) v = route(c, rq);
    if (!v) v = authorize(c, rq);
    if (!v && rq.revocation_pending) v = co_await await_revocation(c, rq);
    if (!v) map(rq);
    if (!v && rq.decision.forward_identity && c.rt.directory) v = co_await map_directory(c, rq);
    if (!v) v = delegate(c, rq);
    if (!v && rq.delegate_pending) v = co_await delegate_rest(c, rq);
    if (v) co_return co_await refuse(c, rq, *v) ? next::keep : next::close;
    // relay (relay.cpp): the backend connection goes back to the pool only after a clean
    // exchange.
    if (rq.kerberos_session)
      out = co_await relay_keeping(c, *rq.lease.conn, rq.parser, rq.plan, rq.rec, rq.t0, rq.sent,
                                   &rq.held);
    else
      out = co_await relay(c, *rq.lease.conn, rq.parser, rq.plan, rq.rec, rq.t0, &rq.held);
  } else {
    out = co_await relay_resume(rq.held);
  }
  if (!out.held && out.resend) {
    if (verdict rv = co_await resend_with_token(c, rq, out))
      co_return co_await refuse(c, rq, *rv) ? next::keep : next::close;
  }
  if (out.held) {
    held_slot = std::move(owned);
    co_return next::held;
  }
  // A response that offers or completes NTLM/Negotiate, or says Persistent-Auth, binds the
  // connection too, unless the token on it is cbagate's own (Kerberos mode: keyed per user).
  upstream::connection& uc = *rq.lease.conn;
  const bool own_token = kerberos_mode(c, rq);
  if (own_token) note_kerberos_session(c, rq, out);
  if (out.upstream_bound && !own_token && !uc.pinned) {
    upstream::make_private(uc, &c.rt.metrics->upstream_private_open);
    rq.rec.upstream_conn = "private";
    c.rt.metrics->upstream_pinned_requests.inc();
  }
  // Kept for this client if private, back to the pool if clean, else closed.
  c.pinned.finish(*c.pool, std::move(rq.lease.conn), out.upstream_reusable);
  co_return finish(c, rq, out.client_keep_alive && rq.rec.error.empty()) ? next::keep : next::close;
}

// --- the connection -------------------------------------------------------------------------------

// A failed handshake: counted and logged; a refused certificate also gets an access-log line.
// Outside the coroutine, so that its locals (an access record) are not part of every
// connection's frame.
void handshake_failed(const runtime& rt, SSL* ssl, std::uint64_t conn_id,
                      const tls::admitted_connection& admitted,
                      const identity::client_identity& id, const error_code& hec) {
  metrics& m = *rt.metrics;
  m.handshake_failures.inc();
  if (id.presented && !id.ok()) m.count_rejection(id.reason);
  auto& log = *observability::logger("tls");
  const std::string client = admitted.client_address();
  if (id.presented && !id.ok()) {
    const identity::refusal r = identity::refusal_for(id);
    log.info("conn={} client={} handshake refused: {} subject \"{}\" issuer \"{}\" serial {}: {}",
             conn_id, client, r.code, id.subject, id.issuer, id.serial, id.detail);
    // tls.client_cert = "require": the refusal is an access-log line too (status 0: no request
    // was read), so the helpdesk finds the user by certificate (issue 13).
    if (rt.access_log) {
      observability::access_record rec;
      rec.time = std::chrono::system_clock::now();
      rec.conn_id = conn_id;
      rec.client = client;
      rec.sni = std::string(tls::server_context::server_name(ssl));
      rec.error = std::string(r.code);
      rec.substatus = r.substatus;
      rec.cert_subject = id.subject;
      rec.cert_issuer = id.issuer;
      rec.cert_serial = id.serial;
      rec.cert_sha256 = id.sha256;
      rt.access_log->write(rec);
    }
  } else {
    log.debug("conn={} client={} handshake failed: {}", conn_id, client, hec.message());
  }
}

// What a connection keeps between its requests. While the connection is idle (an ActiveSync
// device between requests, for minutes) this object is all that is left of it (issue 14): no
// coroutine frame, no read buffer; the readiness wait on its socket owns it (park). Its
// address never changes: the handshake's identity slot, the worker's session list and the
// references in `c` point into it.
struct session final : held_owner {
  session(std::shared_ptr<const runtime> runtime_, worker& worker_,
          tls::admitted_connection admitted_)
      : rt(std::move(runtime_)), w(worker_), admitted(std::move(admitted_)),
        conn_id(w.new_conn_id()) {
    handle.at = w.sessions.insert(w.sessions.begin(), &handle);
    rt->metrics->connections_active.inc();
  }
  session(const session&) = delete;
  session& operator=(const session&) = delete;
  ~session() override {
    if (held_rq) {  // ended while parked (a drain's end, out of memory)
      rt->metrics->requests_parked.dec();
      held_rq.reset();  // it refers to `c`
    }
    c.reset();
    stream.reset();  // closes the socket before the session leaves the worker's list
    w.sessions.erase(handle.at);  // not remove(): a scan of every connection of the thread
    rt->metrics->connections_active.dec();
  }

  std::shared_ptr<const runtime> rt;
  worker& w;
  tls::admitted_connection admitted;  // holds the client's per-address connection count
  std::uint64_t conn_id;
  // Where the handshake puts the client's identity (shared with the chain cache); null: no
  // certificate was presented.
  std::shared_ptr<const identity::client_identity> verified;
  std::optional<tls_stream> stream;
  session_handle handle;
  beast::flat_buffer buf;
  std::optional<connection> c;  // from the end of the handshake
  // A request parked while the backend holds it (an ActiveSync Ping): then this object is all
  // that is left of the connection and its request, owned by the wait on the backend.
  std::unique_ptr<request> held_rq;

  void resume(std::unique_ptr<held_owner> self) noexcept override;
};

void on_session_end(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    observability::logger("http")->error("session ended by an exception (a bug): {}", ex.what());
  }
}

net::awaitable<void> serve_requests(std::unique_ptr<session> st, error_code woke);

// The connection waits for its next request (under timeouts.idle; a drain cancels the wait)
// with nothing but its session object, and a new coroutine serves what comes, or ends it.
void park(std::unique_ptr<session> st) {
  session& s = *st;
  s.handle.idle = true;
  s.stream->idle_after(ms(s.rt->cfg->timeouts.idle));
  s.stream->async_wait_readable(
      net::bind_allocator(exact_allocator<void>(), [st = std::move(st)](error_code ec) mutable {
        try {
          const auto ex = st->stream->get_executor();
          net::co_spawn(ex, serve_requests(std::move(st), ec), &on_session_end);
        } catch (...) {  // out of memory: this connection ends (st), the thread goes on
          on_session_end(std::current_exception());
        }
      }));
}

// Keep-alive: one request after another until one of them, the client or a drain ends it; in
// between, the connection is parked. `woke`: how the wait for this request ended (any error
// ends the connection quietly).
// A parked request's hold has ended: serve_requests goes on with it (the wait's result is in
// its exchange).
net::awaitable<void> serve_requests(std::unique_ptr<session> st, error_code woke) {
  session& s = *st;
  connection& c = *s.c;
  if (!woke) {
    for (;;) {
      next n = next::close;
      if (s.held_rq) {
        s.rt->metrics->requests_parked.dec();
        n = co_await serve_request(c, nullptr, s.held_rq);
      } else {
        const header_read h = co_await read_header(c);
        s.handle.idle = false;
        if (h.status == header_status::closed || h.status == header_status::error) break;
        n = co_await serve_request(c, &h, s.held_rq);
      }
      if (n == next::held) {
        s.rt->metrics->requests_parked.inc();
        held_exchange& held = *s.held_rq->held;
        hold_parked(held, std::move(st));
        co_return;
      }
      s.handle.fresh = false;
      if (n == next::close || s.w.draining) break;
      if (s.buf.size() == 0) {  // else the next request is here already (pipelined)
        s.buf.shrink_to_fit();  // no read buffer while idle
        park(std::move(st));
        co_return;
      }
    }
  }
  // Orderly TLS close: best effort, bounded.
  s.stream->expires_after(std::chrono::seconds(1));
  co_await s.stream->async_shutdown(use_tuple);
}

void session::resume(std::unique_ptr<held_owner> self) noexcept {
  std::unique_ptr<session> st(static_cast<session*>(self.release()));
  try {
    const auto ex = st->stream->get_executor();
    net::co_spawn(ex, serve_requests(std::move(st), error_code{}), &on_session_end);
  } catch (...) {  // out of memory: this connection ends (st), the thread goes on
    on_session_end(std::current_exception());
  }
}

// The edge step and the handshake; then the connection is parked until its first request.
// Locals that only one cold branch needs live in plain functions (handshake_failed).
net::awaitable<void> run_session(net::ip::tcp::socket socket, std::shared_ptr<const runtime> rt,
                                 worker& w, tls::edge& edge) {
  // The edge step runs in the connection's own coroutine: a slow or silent balancer connection
  // never holds up the accept loop.
  std::optional<tls::admitted_connection> admitted = co_await edge.admit(socket, *rt->cfg);
  if (!admitted) co_return;  // refused, counted and logged; the socket closes here
  error_code ec;
  socket.set_option(net::ip::tcp::no_delay(true), ec);
  auto st = std::make_unique<session>(std::move(rt), w, std::move(*admitted));
  session& s = *st;
  SSL* ssl = s.rt->tls->new_connection(&s.verified);
  if (!ssl) {
    observability::logger("tls")->error("conn={} SSL_new failed", s.conn_id);
    co_return;
  }
  tls_stream& stream = s.stream.emplace(std::move(socket), ssl);
  s.handle.socket = &stream.socket();
  metrics& m = *s.rt->metrics;

  stream.expires_after(ms(s.rt->cfg->timeouts.handshake));
  auto [hec] = co_await stream.async_handshake(use_tuple);
  if (!hec) tls::server_context::settle_identity(stream.native_handle(), s.verified);
  static const identity::client_identity no_certificate = identity::verifier::no_certificate();
  const identity::client_identity& id = s.verified ? *s.verified : no_certificate;
  if (hec) {
    handshake_failed(*s.rt, stream.native_handle(), s.conn_id, s.admitted, id, hec);
    co_return;
  }
  tls::server_context::release_handshake_state(stream.native_handle());
  m.handshakes_total.inc();
  const bool resumed = SSL_session_reused(stream.native_handle()) == 1;
  if (resumed) m.handshakes_resumed.inc();

  // The client as the edge step resolved it: the PROXY header's source behind a balancer.
  std::string client_ip = s.admitted.client_ip();
  s.c.emplace(stream, s.buf, *s.rt, w, s.handle, id, s.conn_id, 0, s.admitted.client_address(),
              client_ip.empty() ? std::string("?") : std::move(client_ip),
              std::string(tls::server_context::server_name(stream.native_handle())),
              std::string(tls::server_context::version(stream.native_handle())), resumed,
              w.pool);
  park(std::move(st));
}

}  // namespace

void spawn_session(net::ip::tcp::socket socket, std::shared_ptr<const runtime> rt, worker& w,
                   tls::edge& edge) {
  const auto ex = socket.get_executor();
  net::co_spawn(ex, run_session(std::move(socket), std::move(rt), w, edge), &on_session_end);
}

}  // namespace cbagate::http
