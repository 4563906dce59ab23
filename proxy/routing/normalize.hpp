#pragma once
// Request-target normalization (DESIGN.md request flow step 4). A pure function: the path it
// returns is both the one routes are matched against and the one forwarded to the backend, so
// a backend that decodes once and treats '\' as '/' (IIS) cannot see a different route.
#include "common/expected.hpp"
#include "routing/error.hpp"

#include <cstddef>
#include <string>
#include <string_view>

namespace cbagate::routing {

/** A request-target after normalize_target. */
struct normalized_target {
  std::string path;       ///< canonical absolute path: starts with '/', no dot segments, no "//"
  std::string query;      ///< the query exactly as received, without the '?'
  bool has_query = false; ///< a '?' was present (the query may still be empty)
  std::string authority;  ///< absolute-form only: "host[:port]" as received; "" for origin-form

  /** The target to forward: `path`, plus "?" + `query` when `has_query`. */
  std::string forward_target() const;
};

/**
 * Normalizes an HTTP/1.1 request-target (RFC 9112 3.2) once, for routing and forwarding.
 *
 * Accepts origin-form ("/owa/x?y") and http/https absolute-form ("https://host/owa/x?y"; an
 * empty path becomes "/"). Then, in this order:
 *  - every raw byte must be visible ASCII (0x21-0x7E) and not '#'; the path has no raw '\';
 *  - the path is percent-decoded once; an escape is '%' and two hex digits; a decoded '/', '\' or
 *    NUL is refused, as is any decoded control, a decoded '%' followed by two hex digits (double
 *    encoding), bytes >= 0x80 that are not well-formed UTF-8 (overlong forms, surrogates, ...), and
 *    the code points U+0130, U+0131, U+017F and U+212A, whose Unicode case mapping lands on ASCII
 *    letters (a case-insensitive backend could read "/Microſoft-..." as "/Microsoft-...");
 *  - a segment that ends in '.' or ' ' and is not "." or ".." is refused (Windows drops trailing
 *    dots and spaces, so "owa." or ".. " could name "owa" or "..");
 *  - dot segments are removed (RFC 3986 5.2.4), recognised after decoding ("%2e%2E" is "..");
 *    ".." above the root is an error, never clamped;
 *  - runs of '/' collapse into one;
 *  - the path is re-encoded canonically: unreserved, sub-delims, ':', '@' and '/' literal,
 *    every other byte as %XX with upper-case hex. Every spelling of one path gives one string.
 *  - the query is validated (visible ASCII, no '#') and kept byte for byte, never decoded.
 * normalize_target(r.forward_target()) gives back the same path and query (idempotent).
 *
 * @param request_target  the request-target exactly as read from the request line
 * @param max_bytes       longest accepted request-target (limits.max_target_bytes)
 * @return the normalized target, or a routing::errc: target_too_long, bad_target_form,
 *         bad_character, bad_escape, encoded_separator, double_encoding, bad_utf8,
 *         case_fold_confusable, trailing_dot_or_space, dot_segment_above_root. All mean 400.
 * Thread-safe (no shared state). Allocates the result only.
 */
expected<normalized_target> normalize_target(std::string_view request_target,
                                             std::size_t max_bytes);

}  // namespace cbagate::routing
