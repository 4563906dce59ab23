#pragma once
// Errors of the routing module (category "proxy.routing"). Every request-target error maps to
// HTTP 400 in http/local_reply.cpp; the route-table errors are startup (configuration) errors.
#include <boost/system/error_code.hpp>

#include <type_traits>

namespace cbagate::routing {

/** Why a request-target (or a configured route prefix) was refused. Values are stable. */
enum class errc {
  bad_target_form = 1,     ///< not origin-form or http(s) absolute-form: "*", authority-form, empty
  bad_character,           ///< raw byte outside visible ASCII, raw '\\' or '#', or a decoded control
  bad_escape,              ///< '%' not followed by two hex digits ("%zz", "%4", trailing "%")
  encoded_separator,       ///< "%2F", "%5C" or "%00" in the path
  double_encoding,         ///< a decoded '%' followed by two hex digits ("%252e", "%25%32%65")
  bad_utf8,                ///< decoded bytes >= 0x80 that are not well-formed UTF-8 (overlong, ...)
  case_fold_confusable,    ///< a code point that case-folds onto ASCII (U+0130 U+0131 U+017F U+212A)
  trailing_dot_or_space,   ///< a path segment ending in '.' or ' ' other than "." and ".."
  dot_segment_above_root,  ///< ".." climbing above "/" (rejected, never clamped)
  target_too_long,         ///< request-target longer than the caller's limit
  bad_route_prefix,        ///< route_table: a configured prefix that is not a clean absolute path
  duplicate_route_prefix,  ///< route_table: two prefixes equal once normalized (case-insensitive)
};

/** The "proxy.routing" category. Thread-safe, a function-local static. */
const boost::system::error_category& routing_category() noexcept;

/** Makes `errc` usable as a boost::system::error_code. */
boost::system::error_code make_error_code(errc e) noexcept;

}  // namespace cbagate::routing

template <>
struct boost::system::is_error_code_enum<cbagate::routing::errc> : std::true_type {};
