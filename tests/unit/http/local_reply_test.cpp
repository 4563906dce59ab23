#include "http/local_reply.hpp"

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <doctest/doctest.h>

#include "http/error.hpp"

namespace {

namespace bhttp = boost::beast::http;
using cbagate::http::error_source;
using cbagate::http::info_for;
using cbagate::http::make_local_reply;
using cbagate::http::mapping_denied;
using cbagate::http::reply;
using cbagate::http::reply_for;

struct expected_row {
  reply kind;
  int substatus_in;
  unsigned status;
  int substatus;
  std::string_view code;
  std::string_view body;
  unsigned retry_after;
  bool must_close;
};

// The table as the outside world sees it: status, substatus, stable code, exact body.
const std::vector<expected_row> rows{
    {reply::bad_request, 0, 400, 0, "bad_request",
     "400 Bad Request: malformed request (cbagate: bad_request)\n", 0, true},
    {reply::forbidden, 0, 403, 0, "forbidden",
     "403 Forbidden: access denied by route policy (cbagate: forbidden)\n", 0, false},
    {reply::forbidden, 7, 403, 7, "no_certificate",
     "403.7 Forbidden: client certificate required (cbagate: no_certificate)\n", 0, false},
    {reply::forbidden, 12, 403, 12, "mapping_denied",
     "403.12 Forbidden: client certificate not mapped to an account allowed to log on (cbagate: "
     "mapping_denied)\n",
     0, false},
    {reply::forbidden, 13, 403, 13, "revoked",
     "403.13 Forbidden: client certificate revoked (cbagate: revoked)\n", 0, false},
    {reply::forbidden, 16, 403, 16, "verify_failed",
     "403.16 Forbidden: client certificate untrusted or invalid (cbagate: verify_failed)\n", 0,
     false},
    {reply::forbidden, 17, 403, 17, "expired",
     "403.17 Forbidden: client certificate expired or not yet valid (cbagate: expired)\n", 0,
     false},
    {reply::forbidden, 99, 403, 0, "forbidden",
     "403 Forbidden: access denied by route policy (cbagate: forbidden)\n", 0, false},
    {reply::delegation_denied, 0, 403, 0, "delegation_denied",
     "403 Forbidden: delegation to the backend refused for this user (cbagate: "
     "delegation_denied)\n",
     0, false},
    {reply::not_found, 0, 404, 0, "not_found",
     "404 Not Found: no route for this path (cbagate: not_found)\n", 0, false},
    {reply::method_not_allowed, 0, 405, 0, "method_not_allowed",
     "405 Method Not Allowed: method not allowed on this path (cbagate: method_not_allowed)\n", 0,
     false},
    {reply::request_timeout, 0, 408, 0, "request_timeout",
     "408 Request Timeout: request not received in time (cbagate: request_timeout)\n", 0, true},
    {reply::body_too_large, 0, 413, 0, "body_too_large",
     "413 Payload Too Large: request body too large (cbagate: body_too_large)\n", 0, true},
    {reply::uri_too_long, 0, 414, 0, "uri_too_long",
     "414 URI Too Long: request target too long (cbagate: uri_too_long)\n", 0, true},
    {reply::expectation_failed, 0, 417, 0, "expectation_failed",
     "417 Expectation Failed: unsupported expectation (cbagate: expectation_failed)\n", 0, true},
    {reply::header_too_large, 0, 431, 0, "header_too_large",
     "431 Request Header Fields Too Large: request header too large (cbagate: "
     "header_too_large)\n",
     0, true},
    {reply::internal, 0, 500, 0, "internal",
     "500 Internal Server Error: internal error (cbagate: internal)\n", 0, true},
    {reply::not_implemented, 0, 501, 0, "not_implemented",
     "501 Not Implemented: method not supported (cbagate: not_implemented)\n", 0, true},
    {reply::upstream_connect_failed, 0, 502, 0, "upstream_connect_failed",
     "502 Bad Gateway: backend unreachable (cbagate: upstream_connect_failed)\n", 0, true},
    {reply::upstream_reset, 0, 502, 0, "upstream_reset",
     "502 Bad Gateway: backend closed the connection (cbagate: upstream_reset)\n", 0, true},
    {reply::bad_upstream_response, 0, 502, 0, "bad_upstream_response",
     "502 Bad Gateway: invalid response from backend (cbagate: bad_upstream_response)\n", 0,
     true},
    {reply::service_unavailable, 0, 503, 0, "service_unavailable",
     "503 Service Unavailable: service overloaded, retry later (cbagate: service_unavailable)\n",
     0, true},
    {reply::kdc_unavailable, 0, 503, 0, "kdc_unavailable",
     "503 Service Unavailable: authentication service unavailable, retry later (cbagate: "
     "kdc_unavailable)\n",
     5, true},
    {reply::directory_unavailable, 0, 503, 0, "directory_unavailable",
     "503 Service Unavailable: account directory unavailable, retry later (cbagate: "
     "directory_unavailable)\n",
     5, true},
    {reply::draining, 0, 503, 0, "draining",
     "503 Service Unavailable: server shutting down (cbagate: draining)\n", 0, true},
    {reply::upstream_timeout, 0, 504, 0, "upstream_timeout",
     "504 Gateway Timeout: backend did not answer in time (cbagate: upstream_timeout)\n", 0,
     true},
    {reply::not_found, 16, 404, 0, "not_found",
     "404 Not Found: no route for this path (cbagate: not_found)\n", 0, false},
};

}  // namespace

TEST_CASE("local_reply: every table row gives its status substatus code and body") {
  for (const auto& row : rows) {
    CAPTURE(row.code);
    CAPTURE(row.substatus_in);
    const auto info = info_for(row.kind, row.substatus_in);
    CHECK(info.kind == row.kind);
    CHECK(info.status == row.status);
    CHECK(info.substatus == row.substatus);
    CHECK(info.code == row.code);
    CHECK(info.retry_after == row.retry_after);
    CHECK(info.must_close == row.must_close);

    const auto res = make_local_reply(info, 11, true);
    CHECK(res.result_int() == row.status);
    CHECK(res.version() == 11);
    CHECK(res.body() == row.body);
    CHECK(res[bhttp::field::content_type] == "text/plain; charset=utf-8");
    CHECK(res[bhttp::field::content_length] == std::to_string(row.body.size()));
    CHECK(res[bhttp::field::cache_control] == "no-store");
    if (row.retry_after > 0) {
      CHECK(res[bhttp::field::retry_after] == std::to_string(row.retry_after));
    } else {
      CHECK(res.count(bhttp::field::retry_after) == 0);
    }
    CHECK(res.keep_alive() == !row.must_close);
    CHECK(res.count(bhttp::field::connection) == (row.must_close ? 1U : 0U));
  }
}

TEST_CASE("local_reply: 403.12 has its own code per cause (issue 12)") {
  for (const char* code : {"issuer_not_allowed", "upn_suffix_not_allowed", "template_not_allowed",
                           "not_found", "ambiguous", "no_strong_mapping", "sid_mismatch",
                           "disabled", "locked_out", "account_expired", "issuer_not_in_ntauth"}) {
    CAPTURE(code);
    const auto info = mapping_denied(code);
    CHECK(info.status == 403);
    CHECK(info.substatus == 12);
    CHECK(info.code == code);
    CHECK_FALSE(info.must_close);
    const auto res = make_local_reply(info, 11, true);
    CHECK(res.body().rfind("403.12 Forbidden: ", 0) == 0);
    CHECK(res.body().find(std::string("(cbagate: ") + code + ")") != std::string::npos);
  }
  CHECK(mapping_denied("whatever").code == "mapping_denied");
}

TEST_CASE("local_reply: codes are unique per row") {
  std::vector<std::string_view> codes;
  for (const auto& row : rows) {
    if (row.substatus_in != row.substatus) continue;  // the fallback rows repeat a code
    for (const auto& c : codes) CHECK(c != row.code);
    codes.push_back(row.code);
  }
}

TEST_CASE("local_reply: connection close unless keep-alive is allowed") {
  const auto not_found = info_for(reply::not_found);
  SUBCASE("HTTP/1.1 keep-alive") {
    const auto res = make_local_reply(not_found, 11, true);
    CHECK(res.keep_alive());
    CHECK(res.count(bhttp::field::connection) == 0);
  }
  SUBCASE("HTTP/1.1 close requested") {
    const auto res = make_local_reply(not_found, 11, false);
    CHECK_FALSE(res.keep_alive());
    CHECK(res[bhttp::field::connection] == "close");
  }
  SUBCASE("HTTP/1.0 keep-alive") {
    const auto res = make_local_reply(not_found, 10, true);
    CHECK(res.version() == 10);
    CHECK(res.keep_alive());
    CHECK(res[bhttp::field::connection] == "keep-alive");
  }
  SUBCASE("HTTP/1.0 close") {
    const auto res = make_local_reply(not_found, 10, false);
    CHECK_FALSE(res.keep_alive());
  }
  SUBCASE("must_close overrides the caller") {
    const auto res = make_local_reply(info_for(reply::bad_request), 11, true);
    CHECK_FALSE(res.keep_alive());
    CHECK(res[bhttp::field::connection] == "close");
  }
}

TEST_CASE("local_reply: Retry-After follows the info") {
  auto info = info_for(reply::draining);
  CHECK(make_local_reply(info, 11, false).count(bhttp::field::retry_after) == 0);
  info.retry_after = 30;
  CHECK(make_local_reply(info, 11, false)[bhttp::field::retry_after] == "30");
}

TEST_CASE("local_reply: body holds only table text") {
  // make_local_reply takes no request data at all; each body is exactly
  // "<status>[.<sub>] <reason>: <text> (cbagate: <code>)\n" from the table's constants.
  for (const auto& row : rows) {
    const auto info = info_for(row.kind, row.substatus_in);
    const auto body = make_local_reply(info, 11, false).body();
    CAPTURE(body);
    CHECK(body.find(info.text) != std::string::npos);
    CHECK(body.find(std::string("(cbagate: ") + std::string(info.code) + ")\n") ==
          body.size() - info.code.size() - 12);
    const std::string line = body.substr(0, body.size() - 1);
    CHECK(std::all_of(line.begin(), line.end(), [](char c) { return c >= 0x20 && c < 0x7f; }));
  }
}

TEST_CASE("local_reply: downstream errors map to 4xx") {
  using cbagate::http::errc;
  const auto d = error_source::downstream;
  CHECK(reply_for(d, errc::bare_lf) == reply::bad_request);
  CHECK(reply_for(d, errc::cl_and_te) == reply::bad_request);
  CHECK(reply_for(d, errc::too_many_fields) == reply::header_too_large);
  CHECK(reply_for(d, errc::target_too_long) == reply::uri_too_long);
  CHECK(reply_for(d, bhttp::error::bad_transfer_encoding) == reply::bad_request);
  CHECK(reply_for(d, bhttp::error::multiple_content_length) == reply::bad_request);
  CHECK(reply_for(d, bhttp::error::bad_field) == reply::bad_request);
  CHECK(reply_for(d, bhttp::error::header_limit) == reply::header_too_large);
  CHECK(reply_for(d, bhttp::error::buffer_overflow) == reply::header_too_large);
  CHECK(reply_for(d, bhttp::error::body_limit) == reply::body_too_large);
  CHECK(reply_for(d, boost::beast::error::timeout) == reply::request_timeout);
  CHECK(reply_for(d, boost::asio::error::connection_reset) == reply::bad_request);
}

TEST_CASE("local_reply: upstream errors map to 5xx") {
  const auto c = error_source::upstream_connect;
  CHECK(reply_for(c, boost::asio::error::connection_refused) == reply::upstream_connect_failed);
  CHECK(reply_for(c, boost::asio::error::host_not_found) == reply::upstream_connect_failed);
  CHECK(reply_for(c, boost::beast::error::timeout) == reply::upstream_timeout);
  const auto u = error_source::upstream;
  CHECK(reply_for(u, boost::beast::error::timeout) == reply::upstream_timeout);
  CHECK(reply_for(u, boost::asio::error::timed_out) == reply::upstream_timeout);
  CHECK(reply_for(u, boost::asio::error::eof) == reply::upstream_reset);
  CHECK(reply_for(u, boost::asio::error::connection_reset) == reply::upstream_reset);
  CHECK(reply_for(u, boost::asio::ssl::error::stream_truncated) == reply::upstream_reset);
  CHECK(reply_for(u, bhttp::error::partial_message) == reply::upstream_reset);
  CHECK(reply_for(u, bhttp::error::bad_value) == reply::bad_upstream_response);
  CHECK(reply_for(u, bhttp::error::header_limit) == reply::bad_upstream_response);
  CHECK(reply_for(error_source::internal, boost::asio::error::eof) == reply::internal);
}

TEST_CASE("local_reply: one precise code per certificate refusal, on the page and the row") {
  using cbagate::identity::client_identity;
  using cbagate::identity::rejection;
  struct expect {
    rejection reason;
    bool self_issued;
    std::string_view code;
    int substatus;
    std::string_view words;
  };
  const expect cases[] = {
      {rejection::no_certificate, false, "no_certificate", 7, "required"},
      {rejection::untrusted, false, "untrusted_issuer", 16, "not issued by a trusted CA"},
      {rejection::untrusted, true, "self_signed", 16, "self-signed"},
      {rejection::invalid, false, "invalid_certificate", 16, "invalid"},
      {rejection::wrong_eku, false, "wrong_eku", 16, "client authentication"},
      {rejection::expired, false, "expired", 17, "expired"},
      {rejection::not_yet_valid, false, "not_yet_valid", 17, "not yet valid"},
      {rejection::revoked, false, "revoked", 13, "revoked"},
      {rejection::no_upn, false, "no_upn", 16, "no user principal name"},
      {rejection::multi_upn, false, "multiple_upn", 16, "more than one"},
      {rejection::bad_upn_encoding, false, "bad_upn", 16, "malformed"},
  };
  std::vector<std::string_view> seen;
  for (const auto& e : cases) {
    CAPTURE(e.code);
    client_identity id;
    id.presented = e.reason != rejection::no_certificate;
    id.reason = e.reason;
    id.subject = "CN=Someone";
    id.issuer = e.self_issued ? "CN=Someone" : "CN=Issuing CA";
    const auto r = cbagate::identity::refusal_for(id);
    CHECK(r.code == e.code);
    CHECK(r.substatus == e.substatus);
    const auto info = cbagate::http::info_for_refusal(r);
    CHECK(info.status == 403);
    CHECK_FALSE(info.must_close);
    const auto res = make_local_reply(info, 11, true, "7-3");
    const std::string expected_head = "403." + std::to_string(e.substatus) + " Forbidden: ";
    CHECK(res.body().rfind(expected_head, 0) == 0);
    CHECK(res.body().find(e.words) != std::string::npos);
    CHECK(res.body().find("(cbagate: " + std::string(e.code) + ")\nrequest id: 7-3\n") != std::string::npos);
    for (const auto& s : seen) CHECK(s != e.code);
    seen.push_back(e.code);
  }
}

TEST_CASE("local_reply: an unknown revocation status is never called revoked") {
  const auto r = cbagate::identity::revocation_unknown_refusal();
  CHECK(r.code == "revocation_unknown");
  CHECK(r.substatus == 13);
  const auto res = make_local_reply(cbagate::http::info_for_refusal(r), 11, true);
  CHECK(res.body().find("revocation status unknown") != std::string::npos);
  CHECK(res.body().find("revoked") == std::string::npos);
  CHECK(res.body().find("request id") == std::string::npos);  // only when given
}
