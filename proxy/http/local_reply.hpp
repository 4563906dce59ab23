#pragma once
// Local replies: the one table from an error (its source and kind) to an HTTP status, a stable
// error code and an IIS substatus (STYLE.md 5.2), and the response built from a row.
//
// A local reply never echoes request input: its body is built from the table's constant
// strings only, e.g.
//   "403.16 Forbidden: client certificate untrusted or invalid (cbagate: verify_failed)\n"
#include <cstdint>
#include <string_view>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include "identity/refusal.hpp"

namespace cbagate::http {

/** Every answer the proxy gives on its own. */
enum class reply : std::uint8_t {
  bad_request,              ///< 400: any framing or normalization error
  forbidden,                ///< 403.x: substatus 7 no cert, 12 mapper denied (issue 12),
                            ///<       13 revoked, 16 untrusted/invalid, 17 expired/not yet
                            ///<       valid; 0 route policy
  delegation_denied,        ///< 403: the KDC refused S4U for this user
  not_found,                ///< 404: no route
  method_not_allowed,       ///< 405 + Allow: a method the route does not forward
  request_timeout,          ///< 408: the request header did not arrive in time
  body_too_large,           ///< 413: over the route's max_body_bytes
  uri_too_long,             ///< 414: target over limits.max_target_bytes
  expectation_failed,       ///< 417: an Expect other than 100-continue
  header_too_large,         ///< 431: over max_request_header_bytes or max_header_fields
  internal,                 ///< 500: a bug or an unexpected local failure
  not_implemented,          ///< 501: a method we do not proxy (CONNECT, unknown verbs)
  upstream_connect_failed,  ///< 502: no connection to any backend
  upstream_reset,           ///< 502: the backend closed or reset mid-exchange
  bad_upstream_response,    ///< 502: the backend's response did not parse or was too large
  service_unavailable,      ///< 503: overloaded (connection or queue limits)
  kdc_unavailable,          ///< 503 + Retry-After: no KDC answered
  directory_unavailable,    ///< 503 + Retry-After: no domain controller answered in time
  draining,                 ///< 503: shutting down
  upstream_timeout,         ///< 504: the backend did not answer in time
};

/** Where an error was seen; the same error code means different things on each side. */
enum class error_source : std::uint8_t {
  downstream,        ///< reading or parsing the client's request
  upstream_connect,  ///< resolving, connecting or the TLS handshake towards a backend
  upstream,          ///< writing the request to, or reading the response from, a backend
  internal,          ///< anything local (delegation workers, invariants)
};

/**
 * One row of the table. The string_views point at static storage (the table itself); a
 * caller may adjust `retry_after` but must not point `code` or `text` at request data.
 */
struct local_reply_info {
  reply kind = reply::internal;
  error_source source = error_source::internal;
  unsigned status = 500;
  int substatus = 0;                 ///< IIS substatus (403.16 -> 16); 0 = none
  std::string_view code;             ///< stable snake_case code: logs, metrics, body
  std::string_view text;             ///< short human explanation for the body
  unsigned retry_after = 0;          ///< seconds for Retry-After; 0 = no header
  bool must_close = true;            ///< the downstream connection cannot be reused after it
};

/**
 * The row for `r`. For `reply::forbidden`, `substatus` picks the row (7, 13, 16, 17); an
 * unknown substatus, or any substatus for another reply, gives the reply's plain row.
 * Thread-safe, noexcept.
 */
local_reply_info info_for(reply r, int substatus = 0) noexcept;

/**
 * The row of a 403.12 ("mapper denied access", issue 12) refusal with its own stable code:
 * issuer_not_allowed, upn_suffix_not_allowed, template_not_allowed (trust limits of [auth]),
 * not_found, ambiguous, no_strong_mapping, sid_mismatch, disabled, locked_out,
 * account_expired, issuer_not_in_ntauth (directory mapping). An unknown code gives the plain
 * 403.12 row ("mapping_denied"). Thread-safe, noexcept.
 */
local_reply_info mapping_denied(std::string_view code) noexcept;

/**
 * The 403 row of a certificate refusal (identity/refusal.hpp): status 403, the refusal's
 * substatus, code and text; must_close false, like the other policy answers.
 */
local_reply_info info_for_refusal(const identity::refusal& r) noexcept;

/**
 * Classifies an error code seen on `source` (never by message text):
 *  - downstream: proxy.http `too_many_fields` -> header_too_large, `target_too_long` ->
 *    uri_too_long, other proxy.http -> bad_request; Beast `header_limit`/`buffer_overflow` ->
 *    header_too_large, `body_limit` -> body_too_large, other Beast http errors -> bad_request;
 *    `beast::error::timeout` -> request_timeout; anything else -> bad_request.
 *  - upstream_connect: timeouts -> upstream_timeout; anything else -> upstream_connect_failed.
 *  - upstream: timeouts -> upstream_timeout; eof, reset, broken pipe, abort, Beast
 *    end_of_stream/partial_message, TLS stream_truncated -> upstream_reset; anything else
 *    (parse errors, header_limit) -> bad_upstream_response.
 *  - internal: internal.
 * Thread-safe, noexcept.
 */
reply reply_for(error_source source, const boost::system::error_code& ec) noexcept;

/**
 * Builds the response for a row: status, body "<status>[.<sub>] <reason>: <text>
 * (cbagate: <code>)\n", Content-Type text/plain; charset=utf-8, Content-Length,
 * Cache-Control: no-store, Retry-After when `info.retry_after` > 0, and the keep-alive state:
 * `keep_alive && !info.must_close` (Connection: close otherwise on HTTP/1.1; keep-alive on
 * HTTP/1.0). The caller reads `res.keep_alive()` to know whether to close after writing.
 * For a HEAD request the session writes the header only.
 *
 * @param http_version 10 or 11, the request's version.
 * @param request_id   when not empty, a second body line "request id: <id>" (the id the
 *                     access log carries, for the helpdesk); never request input.
 */
boost::beast::http::response<boost::beast::http::string_body> make_local_reply(
    const local_reply_info& info, unsigned http_version, bool keep_alive,
    std::string_view request_id = {});

}  // namespace cbagate::http
