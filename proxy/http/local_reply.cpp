#include "http/local_reply.hpp"

#include <array>
#include <string>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>

#include "http/error.hpp"

namespace cbagate::http {
namespace {

namespace bhttp = boost::beast::http;
using src = error_source;

// THE error -> status table (STYLE.md 5.2). Columns: reply, source, status, IIS substatus,
// stable code, body text, Retry-After seconds, must_close.
// must_close = false only where the error says nothing about the connection's state (policy
// answers); the session still closes when it did not read the request body to its end.
constexpr std::array<local_reply_info, 25> table{{
    {reply::bad_request, src::downstream, 400, 0, "bad_request", "malformed request", 0, true},
    {reply::forbidden, src::downstream, 403, 0, "forbidden", "access denied by route policy", 0,
     false},
    {reply::forbidden, src::downstream, 403, 7, "no_certificate", "client certificate required",
     0, false},
    {reply::forbidden, src::downstream, 403, 12, "mapping_denied",
     "client certificate not mapped to an account allowed to log on", 0, false},
    {reply::forbidden, src::downstream, 403, 13, "revoked", "client certificate revoked", 0,
     false},
    {reply::forbidden, src::downstream, 403, 16, "verify_failed",
     "client certificate untrusted or invalid", 0, false},
    {reply::forbidden, src::downstream, 403, 17, "expired",
     "client certificate expired or not yet valid", 0, false},
    {reply::delegation_denied, src::internal, 403, 0, "delegation_denied",
     "delegation to the backend refused for this user", 0, false},
    {reply::not_found, src::downstream, 404, 0, "not_found", "no route for this path", 0, false},
    {reply::method_not_allowed, src::downstream, 405, 0, "method_not_allowed",
     "method not allowed on this path", 0, false},
    {reply::request_timeout, src::downstream, 408, 0, "request_timeout",
     "request not received in time", 0, true},
    {reply::body_too_large, src::downstream, 413, 0, "body_too_large", "request body too large",
     0, true},
    {reply::uri_too_long, src::downstream, 414, 0, "uri_too_long", "request target too long", 0,
     true},
    {reply::expectation_failed, src::downstream, 417, 0, "expectation_failed",
     "unsupported expectation", 0, true},
    {reply::header_too_large, src::downstream, 431, 0, "header_too_large",
     "request header too large", 0, true},
    {reply::internal, src::internal, 500, 0, "internal", "internal error", 0, true},
    {reply::not_implemented, src::downstream, 501, 0, "not_implemented", "method not supported",
     0, true},
    {reply::upstream_connect_failed, src::upstream_connect, 502, 0, "upstream_connect_failed",
     "backend unreachable", 0, true},
    {reply::upstream_reset, src::upstream, 502, 0, "upstream_reset",
     "backend closed the connection", 0, true},
    {reply::bad_upstream_response, src::upstream, 502, 0, "bad_upstream_response",
     "invalid response from backend", 0, true},
    {reply::service_unavailable, src::internal, 503, 0, "service_unavailable",
     "service overloaded, retry later", 0, true},
    {reply::kdc_unavailable, src::internal, 503, 0, "kdc_unavailable",
     "authentication service unavailable, retry later", 5, true},
    {reply::directory_unavailable, src::internal, 503, 0, "directory_unavailable",
     "account directory unavailable, retry later", 5, true},
    {reply::draining, src::internal, 503, 0, "draining", "server shutting down", 0, true},
    {reply::upstream_timeout, src::upstream, 504, 0, "upstream_timeout",
     "backend did not answer in time", 0, true},
}};

// 403.12 with its own code per cause (issue 12; docs/directory.md "Verdicts"). Policy answers:
// the connection stays usable.
constexpr std::array<local_reply_info, 11> mapping_table{{
    {reply::forbidden, src::downstream, 403, 12, "issuer_not_allowed",
     "client certificate issued by a CA not allowed to issue logon certificates", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "upn_suffix_not_allowed",
     "client certificate names a domain not accepted here", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "template_not_allowed",
     "client certificate of a template not accepted for logon", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "not_found",
     "no account found for this client certificate", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "ambiguous",
     "more than one account matches this client certificate", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "no_strong_mapping",
     "client certificate not strongly mapped to the account (KB5014754)", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "sid_mismatch",
     "client certificate SID belongs to another account", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "disabled", "account disabled", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "locked_out", "account locked out", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "account_expired", "account expired", 0, false},
    {reply::forbidden, src::downstream, 403, 12, "issuer_not_in_ntauth",
     "client certificate issuer not in the NTAuth store", 0, false},
}};

constexpr bool every_reply_has_a_plain_row() {
  for (auto r = static_cast<unsigned>(reply::bad_request);
       r <= static_cast<unsigned>(reply::upstream_timeout); ++r) {
    bool found = false;
    for (const local_reply_info& row : table) {
      if (static_cast<unsigned>(row.kind) == r && row.substatus == 0) found = true;
    }
    if (!found) return false;
  }
  return true;
}
static_assert(every_reply_has_a_plain_row(), "each reply needs a row with substatus 0");

bool is_timeout(const boost::system::error_code& ec) noexcept {
  return ec == boost::beast::error::timeout || ec == boost::asio::error::timed_out;
}

reply downstream_reply(const boost::system::error_code& ec) noexcept {
  if (ec.category() == http_category()) {
    switch (static_cast<errc>(ec.value())) {
      case errc::too_many_fields: return reply::header_too_large;
      case errc::target_too_long: return reply::uri_too_long;
      default: return reply::bad_request;
    }
  }
  if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
    return reply::header_too_large;
  }
  if (ec == bhttp::error::body_limit) return reply::body_too_large;
  if (is_timeout(ec)) return reply::request_timeout;
  return reply::bad_request;
}

reply upstream_reply(const boost::system::error_code& ec) noexcept {
  if (is_timeout(ec)) return reply::upstream_timeout;
  if (ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset ||
      ec == boost::asio::error::broken_pipe || ec == boost::asio::error::connection_aborted ||
      ec == boost::asio::ssl::error::stream_truncated || ec == bhttp::error::end_of_stream ||
      ec == bhttp::error::partial_message) {
    return reply::upstream_reset;
  }
  return reply::bad_upstream_response;
}

}  // namespace

local_reply_info info_for(reply r, int substatus) noexcept {
  const local_reply_info* plain = nullptr;
  for (const local_reply_info& row : table) {
    if (row.kind != r) continue;
    if (row.substatus == substatus) return row;
    if (row.substatus == 0) plain = &row;
  }
  // every_reply_has_a_plain_row() guarantees `plain` for every enumerator; an out-of-range
  // value (a cast) gets the internal-error row.
  return plain ? *plain : info_for(reply::internal);
}

local_reply_info mapping_denied(std::string_view code) noexcept {
  for (const local_reply_info& row : mapping_table)
    if (row.code == code) return row;
  return info_for(reply::forbidden, 12);
}

local_reply_info info_for_refusal(const identity::refusal& r) noexcept {
  // The 403.12 trust limits of [auth] keep their own rows (issue 12).
  if (r.substatus == 12) return mapping_denied(r.code);
  local_reply_info info = info_for(reply::forbidden, 0);
  info.substatus = r.substatus;
  info.code = r.code;
  info.text = r.text;
  return info;
}

reply reply_for(error_source source, const boost::system::error_code& ec) noexcept {
  switch (source) {
    case error_source::downstream: return downstream_reply(ec);
    case error_source::upstream_connect:
      return is_timeout(ec) ? reply::upstream_timeout : reply::upstream_connect_failed;
    case error_source::upstream: return upstream_reply(ec);
    case error_source::internal: return reply::internal;
  }
  return reply::internal;
}

bhttp::response<bhttp::string_body> make_local_reply(const local_reply_info& info,
                                                     unsigned http_version, bool keep_alive,
                                                     std::string_view request_id) {
  const std::string_view reason = bhttp::obsolete_reason(bhttp::int_to_status(info.status));

  std::string body;
  body.reserve(16 + reason.size() + info.text.size() + info.code.size() + 16);
  body += std::to_string(info.status);
  if (info.substatus != 0) {
    body += '.';
    body += std::to_string(info.substatus);
  }
  body += ' ';
  body += reason;
  body += ": ";
  body += info.text;
  body += " (cbagate: ";
  body += info.code;
  body += ")\n";
  if (!request_id.empty()) {
    body += "request id: ";
    body += request_id;
    body += '\n';
  }

  bhttp::response<bhttp::string_body> res;
  res.version(http_version);
  res.result(info.status);
  res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
  res.set(bhttp::field::cache_control, "no-store");
  if (info.retry_after > 0) res.set(bhttp::field::retry_after, std::to_string(info.retry_after));
  res.body() = std::move(body);
  res.keep_alive(keep_alive && !info.must_close);
  res.prepare_payload();
  return res;
}

}  // namespace cbagate::http
