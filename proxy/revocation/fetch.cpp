#include "revocation/fetch.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>

namespace cbagate::revocation::detail {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

http_result fail(fetch_error e, std::string message) {
  return http_result{e, std::move(message), {}};
}

struct target_url {
  std::string host;  // for the resolver (IPv6 without brackets)
  std::string port;
  std::string target;
  std::string host_and_port;  // the Host header
};

bool split_url(const std::string& url, target_url& out) {
  const auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return false;
  const boost::urls::url_view& u = *parsed;
  if (u.scheme_id() != boost::urls::scheme::http || !u.has_authority() || u.has_userinfo() ||
      u.encoded_host().empty())
    return false;
  out.host = u.host_address();
  out.port = u.has_port() ? std::string(u.port()) : "80";
  out.target = std::string(u.encoded_target());
  if (out.target.empty() || out.target.front() != '/') out.target.insert(0, "/");
  out.host_and_port = std::string(u.encoded_host_and_port());
  return true;
}

}  // namespace

std::string_view to_string(fetch_error e) noexcept {
  switch (e) {
    case fetch_error::none: return "none";
    case fetch_error::connect: return "connect";
    case fetch_error::timeout: return "timeout";
    case fetch_error::http_status: return "http_status";
    case fetch_error::too_large: return "too_large";
    case fetch_error::malformed: return "malformed";
    case fetch_error::signature: return "signature";
    case fetch_error::stale: return "stale";
    case fetch_error::other: return "other";
  }
  return "other";
}

// GCC 12 reports a false -Wmismatched-new-delete on this coroutine's frame (Asio's awaitable
// frames pair their own operator new and delete).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
net::awaitable<http_result> http_exchange(std::string url, std::string post_body,
                                          std::string_view content_type, std::size_t max_body,
                                          std::chrono::milliseconds timeout) {
  target_url t;
  if (!split_url(url, t)) co_return fail(fetch_error::other, "not a plain http:// URL");
  const std::string& host = t.host;
  const std::string& port = t.port;
  const std::string& target = t.target;

  const auto ex = co_await net::this_coro::executor;
  const auto deadline = std::chrono::steady_clock::now() + timeout;

  // The resolver has no deadline of its own: a timer cancels it.
  tcp::resolver resolver(ex);
  net::steady_timer guard(ex);
  guard.expires_at(deadline);
  guard.async_wait([&resolver](boost::system::error_code ec) {
    if (!ec) resolver.cancel();
  });
  auto [rec, endpoints] = co_await resolver.async_resolve(host, port, use_tuple);
  guard.cancel();
  if (rec) {
    if (std::chrono::steady_clock::now() >= deadline)
      co_return fail(fetch_error::timeout, "timeout");
    co_return fail(fetch_error::connect, "resolve: " + rec.message());
  }

  beast::tcp_stream stream(ex);
  stream.expires_at(deadline);
  auto [cec, ep] = co_await stream.async_connect(endpoints, use_tuple);
  if (cec == beast::error::timeout) co_return fail(fetch_error::timeout, "timeout");
  if (cec) co_return fail(fetch_error::connect, "connect: " + cec.message());

  http::request<http::string_body> req{post_body.empty() ? http::verb::get : http::verb::post,
                                       target, 11};
  req.set(http::field::host, t.host_and_port);
  req.set(http::field::user_agent, "cbagate");
  req.set(http::field::connection, "close");
  if (!post_body.empty()) {
    req.set(http::field::content_type, content_type);
    req.body() = std::move(post_body);
  }
  req.prepare_payload();
  stream.expires_at(deadline);
  auto [wec, written] = co_await http::async_write(stream, req, use_tuple);
  if (wec == beast::error::timeout) co_return fail(fetch_error::timeout, "timeout");
  if (wec) co_return fail(fetch_error::connect, "send: " + wec.message());

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(static_cast<std::uint64_t>(max_body));
  stream.expires_at(deadline);
  auto [ec, read] = co_await http::async_read(stream, buffer, parser, use_tuple);
  if (ec == beast::error::timeout) co_return fail(fetch_error::timeout, "timeout");
  if (ec == http::error::body_limit)
    co_return fail(fetch_error::too_large,
                   "too_large: body over " + std::to_string(max_body) + " bytes");
  if (ec && ec != http::error::end_of_stream &&
      ec.category() == make_error_code(http::error::bad_version).category())
    co_return fail(fetch_error::malformed, "malformed HTTP response: " + ec.message());
  if (ec) co_return fail(fetch_error::other, "receive: " + ec.message());

  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  auto& res = parser.get();
  if (res.result() != http::status::ok)
    co_return fail(fetch_error::http_status, "http_status " + std::to_string(res.result_int()));
  co_return http_result{fetch_error::none, {}, std::move(res.body())};
}
#pragma GCC diagnostic pop

}  // namespace cbagate::revocation::detail
