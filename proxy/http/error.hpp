#pragma once
// The errors of the http module: category "proxy.http" (STYLE.md 5.2).
#include <string_view>
#include <type_traits>

#include <boost/system/error_code.hpp>

namespace cbagate::http {

/**
 * Why a request is refused before anything is forwarded. Every value maps to a local reply
 * through `reply_for` (local_reply.hpp): 400 unless noted. Values are stable (logs, metrics).
 */
enum class errc {
  // --- raw header block (scan_header_block, framing.hpp) -----------------------------------
  nul_byte = 1,                 ///< a NUL byte anywhere in the header block
  bare_cr,                      ///< CR not followed by LF
  bare_lf,                      ///< LF not preceded by CR (RFC 9112 2.2 allows; we refuse)
  obs_fold,                     ///< a field line starting with SP or HT (RFC 9112 5.2)
  space_before_colon,           ///< whitespace between field name and ':' (RFC 9112 5.1)
  bad_field_name,               ///< a field name that is empty or not a token, or no ':'
  control_in_value,             ///< a control byte other than HT, or DEL, in a field value
  bad_request_line,             ///< empty or control bytes in the request line
  incomplete_header,            ///< the block does not end with an empty line
  too_many_fields,              ///< more field lines than the configured limit -> 431
  target_too_long,              ///< request-target longer than the configured limit -> 414
  // --- parsed header (check_request_framing, framing.hpp) ----------------------------------
  cl_and_te,                    ///< both Content-Length and Transfer-Encoding
  multiple_content_length,      ///< more than one Content-Length field (even equal values)
  bad_content_length,           ///< Content-Length is not 1*DIGIT or overflows 64 bits
  unsupported_transfer_coding,  ///< Transfer-Encoding other than exactly one "chunked"
  te_in_http10,                 ///< Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1)
  missing_host,                 ///< HTTP/1.1 request without Host (RFC 9112 3.2)
  multiple_host,                ///< more than one Host field
  bad_host,                     ///< Host empty or not [host-chars][:port]
  fragment_in_target,           ///< '#' in the request-target
  bad_target_form,              ///< not origin-form ("/..."), nor "*" with OPTIONS
};

/** The "proxy.http" category. Thread-safe (a function-local constant). */
const boost::system::error_category& http_category() noexcept;

/** For `error_code ec = errc::bare_lf;`. */
boost::system::error_code make_error_code(errc e) noexcept;

/** Stable snake_case name of `e` ("bare_lf"), for logs and metrics; "unknown" otherwise. */
std::string_view to_string(errc e) noexcept;

}  // namespace cbagate::http

template <>
struct boost::system::is_error_code_enum<cbagate::http::errc> : std::true_type {};
