#pragma once
// The HTTP limits of one session: documented defaults and hard bounds (STYLE.md 5.6).
//
// The values in force come from the configuration snapshot ([limits] and per-route keys);
// this header is the one place that says what each limit means, what its default is and how
// far configuration may move it. config/ validates a configured value against `min`/`max`
// here; the session applies the configured value to each fresh parser.
//
// Beast 1.81 defaults that the session must override on every parser (they are NOT ours):
//   - header_limit: 8 KiB                  -> set max_request_header_bytes / max_response_header_bytes
//   - request body_limit: 1 MiB            -> set the route's max_body_bytes, or boost::none when 0
//   - response body_limit: 8 MiB           -> set boost::none (responses stream through the relay)
//   - no field-count limit at all          -> enforced by scan_header_block (framing.hpp)
//   - no separate target-length limit      -> enforced by scan_header_block (framing.hpp)
#include <cstddef>
#include <cstdint>

namespace cbagate::http {

/** A limit: its default and the range configuration may choose from (inclusive). */
struct limit_range {
  std::uint64_t default_value;
  std::uint64_t min;
  std::uint64_t max;

  constexpr bool contains(std::uint64_t v) const noexcept { return v >= min && v <= max; }
};

/**
 * Request line + fields + final CRLF, in bytes (`limits.max_request_header_bytes`).
 * Over it: 431, nothing forwarded. The default matches DESIGN.md and is above IIS's 16 KiB
 * MaxRequestBytes so that large OWA cookies pass; the ceiling bounds per-connection memory.
 */
inline constexpr limit_range request_header_bytes{49152, 4096, 1048576};

/**
 * Number of header fields in one request (`limits.max_header_fields`). Over it: 431.
 * Beast has no such limit; the raw-header scan counts field lines.
 */
inline constexpr limit_range header_fields{100, 16, 1000};

/**
 * Length of the request-target in bytes (`limits.max_target_bytes`). Over it: 414.
 * ActiveSync puts its command in the query string; 16 KiB is far above what it needs.
 */
inline constexpr limit_range target_bytes{16384, 256, 65536};

/**
 * Request body bytes buffered while the upstream is not ready yet (connecting, Kerberos)
 * (`limits.read_ahead_bytes`): the uploadReadAheadSize analogue. Reaching it pauses reading
 * (backpressure); it never produces a 413. 0 = read nothing ahead.
 */
inline constexpr limit_range read_ahead_bytes{49152, 0, 16777216};

/**
 * Size of one relay buffer, in each direction (not configurable today). Every chunk read or
 * written has its own deadline (STYLE.md 5.4), so the chunk size bounds the work per deadline.
 */
inline constexpr limit_range relay_chunk_bytes{16384, 1024, 1048576};

/**
 * Status line + fields of an upstream response, in bytes
 * (`limits.max_response_header_bytes`). Over it: 502. Kerberos-mode responses can carry a
 * large `WWW-Authenticate: Negotiate` token, hence more room than for requests.
 */
inline constexpr limit_range response_header_bytes{65536, 4096, 1048576};

/**
 * Request body bytes per route (`route.max_body_bytes`, default `limits.max_body_bytes`).
 * Over it: 413. 0 = no limit (the parser's body_limit must then be boost::none).
 */
inline constexpr limit_range request_body_bytes{0, 0, UINT64_MAX};

}  // namespace cbagate::http
