#pragma once
// detail: one HTTP/1.1 exchange with a CDP or OCSP server (plain http:// only, no redirects),
// with a deadline for the whole exchange and a body size limit. Runs on the fetch thread.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>

namespace cbagate::revocation::detail {

/** Why a fetch failed: the `reason` label of cbagate_revocation_fetch_errors_total. */
enum class fetch_error : std::uint8_t {
  none, connect, timeout, http_status, too_large, malformed, signature, stale, other
};
inline constexpr std::size_t fetch_error_count = 9;

/** "connect", "timeout", ... ("none" for none). */
std::string_view to_string(fetch_error e) noexcept;

struct http_result {
  fetch_error error = fetch_error::none;
  std::string message;  ///< on error: "connect: Connection refused", "HTTP 404", ...
  std::string body;     ///< on success (status 200)
};

/**
 * GET `url` (post_body empty) or POST `post_body` with `content_type`; HTTP 200 only.
 * @param max_body a larger response body is abandoned (too_large).
 * @param timeout deadline of resolve + connect + send + receive.
 * Never throws (except std::bad_alloc).
 */
boost::asio::awaitable<http_result> http_exchange(std::string url, std::string post_body,
                                                  std::string_view content_type,
                                                  std::size_t max_body,
                                                  std::chrono::milliseconds timeout);

}  // namespace cbagate::revocation::detail
