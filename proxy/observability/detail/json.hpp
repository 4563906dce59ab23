#pragma once
// JSON line building blocks for the access log: string escaping that survives any input, and
// RFC 3339 timestamps.
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace cbagate::observability::detail {

/**
 * Appends `s` as a JSON string literal (with the quotes) to `out`.
 * Quotes, backslashes, control characters (U+0000..U+001F) and DEL are escaped; every byte that is
 * not part of a well-formed UTF-8 sequence (RFC 3629: no overlongs, surrogates or > U+10FFFF)
 * becomes \ufffd. At most `max_bytes` input bytes are used, cut on a character boundary.
 * The result is always valid JSON on one line.
 */
void append_json_string(std::string& out, std::string_view s, std::size_t max_bytes);

/** `2024-05-01T12:34:56.789Z`: RFC 3339, UTC, milliseconds (truncated, not rounded). */
void append_rfc3339_ms(std::string& out, std::chrono::system_clock::time_point tp);

}  // namespace cbagate::observability::detail
