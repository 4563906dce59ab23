#pragma once
// The request-smuggling guard: two pure checks the session runs on every request, one on the
// raw header bytes before Beast parses them, one on the parsed header. Either failing means
// 400 (431/414 for the two limit codes) and no byte is forwarded.
//
// What Beast 1.81's request_parser already refuses by itself, and what it lets through
// (pinned by tests/unit/http/beast_parser_test.cpp; the session maps every parser error from
// the downstream to a local reply with `reply_for`, local_reply.hpp):
//
//   input                                Beast 1.81 put()            ours
//   NUL in value / name / target         bad_value/bad_field/bad_target  nul_byte
//   bare CR                              bad_line_ending             bare_cr
//   bare LF ending a field line          bad_value                   bare_lf
//   bare LF ending the request line      bad_version                 bare_lf
//   obs-fold (continuation line)         ACCEPTED, joined with SP    obs_fold
//   obs-fold on the first field line     bad_field                   obs_fold
//   SP/HT before ':'                     bad_field                   space_before_colon
//   non-token byte in a field name       bad_field                   bad_field_name
//   CTL (not HT) or DEL in a value       bad_value                   control_in_value
//   obs-text 0x80-0xFF in a value        accepted                    accepted
//   leading empty line before request    bad_method                  bad_request_line
//   Content-Length then T-E              bad_transfer_encoding       cl_and_te
//   T-E: chunked then Content-Length     bad_content_length          cl_and_te
//   T-E: gzip + Content-Length           ACCEPTED (CL framing)       cl_and_te
//   Content-Length twice, equal          ACCEPTED (collapsed)        multiple_content_length
//   Content-Length twice, different      multiple_content_length     multiple_content_length
//   Content-Length "5, 5"                ACCEPTED (collapsed)        bad_content_length
//   Content-Length "5,6"                 multiple_content_length     bad_content_length
//   Content-Length "+5" "-5" "0x5" ""    bad_content_length          bad_content_length
//   T-E "chunked, chunked"               ACCEPTED as NOT chunked, no body   unsupported_transfer_coding
//   T-E "gzip, chunked"                  ACCEPTED as chunked         unsupported_transfer_coding
//   T-E "chunked, gzip"/"identity"/"xchunked"  ACCEPTED, no body    unsupported_transfer_coding
//   T-E twice, both "chunked"            bad_transfer_encoding       unsupported_transfer_coding
//   T-E "gzip" then T-E "chunked"        ACCEPTED as chunked         unsupported_transfer_coding
//   T-E in HTTP/1.0                      ACCEPTED as chunked         te_in_http10
//   two Host / no Host on 1.1            accepted                    multiple_host / missing_host
//   Host "a@b", "a b"                    accepted                    bad_host
//   '#' in target                        accepted                    fragment_in_target
//   absolute-form / authority-form       accepted                    bad_target_form (absolute-
//                                                                    form passes only when its
//                                                                    authority equals Host)
//   any number of fields                 accepted (no count limit)   too_many_fields
//   header bigger than header_limit      header_limit                (session: 431)
//   body bigger than body_limit          body_limit (default 1 MiB!) (session: 413)
//
// "ACCEPTED" rows are the smuggling risks: Beast alone would frame these requests differently
// from another HTTP implementation, so both checks must run before anything is forwarded.
#include <cstddef>
#include <optional>
#include <string_view>

#include <boost/beast/http/message.hpp>

#include "http/error.hpp"
#include "http/flat_fields.hpp"
#include "http/limits.hpp"

namespace cbagate::http {

/** The error a framing check reports: one of the `errc` values. */
using framing_error = errc;

/** The limits the raw-header scan enforces (from `[limits]`; defaults from limits.hpp). */
struct scan_limits {
  std::size_t max_fields = static_cast<std::size_t>(header_fields.default_value);
  std::size_t max_target = static_cast<std::size_t>(target_bytes.default_value);
};

/** What `scan_header_prefix` found in the bytes read so far. */
struct header_scan {
  /** Bytes of the complete header block (request line .. empty line, CRLFs included);
      0 while the empty line has not arrived. */
  std::size_t size = 0;
  /** Field lines seen so far. */
  std::size_t field_count = 0;
  /** The first violation, if any; once set, `size` is 0 and the request must be refused. */
  std::optional<framing_error> error;
};

/**
 * Scans the bytes of a request read so far, for the session's read loop: reports a violation
 * as soon as its bytes are in `buffered`, or the size of the complete header block. Bytes
 * after the block (body, a pipelined request) are not examined.
 *
 * The rules (fail closed, stricter than RFC 9112 where it allows leniency):
 *  - every line ends in CRLF: a CR without LF is `bare_cr`, an LF without CR is `bare_lf`;
 *  - NUL anywhere is `nul_byte`;
 *  - the request line is non-empty (no leading empty line) and holds no control byte or DEL
 *    (`bad_request_line`); its target (between the first and last SP) is at most
 *    `limits.max_target` bytes (`target_too_long`);
 *  - a field line starting with SP/HT is `obs_fold`;
 *  - a field name is 1*tchar followed directly by ':' (`space_before_colon`,
 *    `bad_field_name`);
 *  - a field value holds no byte < 0x20 except HT, and no DEL (`control_in_value`);
 *    obs-text (0x80-0xFF) is allowed;
 *  - at most `limits.max_fields` field lines (`too_many_fields`).
 * The session still applies its header byte limit to `buffered` (431).
 *
 * @param buffered the bytes received on the connection for this request, from its first byte.
 * @return `error` set on the first violation; else `size` > 0 once the block is complete.
 * Thread-safe, no allocation, linear in `buffered`.
 */
header_scan scan_header_prefix(std::string_view buffered, const scan_limits& limits = {}) noexcept;

/**
 * The same rules on one complete header block.
 *
 * @param raw the request line and fields up to and including the empty line; bytes after
 *            the empty line are ignored.
 * @return the first violation; `incomplete_header` when `raw` has no empty line.
 */
std::optional<framing_error> scan_header_block(std::string_view raw,
                                               const scan_limits& limits = {}) noexcept;

/**
 * Checks the framing of a parsed request header (after Beast accepted it).
 *
 * Refused, in this order:
 *  - `fragment_in_target`: '#' in the target;
 *  - `bad_target_form`: a target that is not origin-form ('/'...), nor "*" with OPTIONS, nor
 *    absolute-form "http(s)://authority[/path][?query]" whose authority equals the single Host
 *    value (case-insensitive; RFC 9112 3.2.2 says a server MUST accept absolute-form, and this
 *    way there is never a choice between two authorities). CONNECT's authority-form is refused
 *    here; a session that wants 501 for CONNECT checks the method first. An accepted
 *    absolute-form target still carries its scheme and authority: routing must take the path
 *    from it, not match the whole target;
 *  - `multiple_host`, `missing_host` (HTTP/1.1 only), `bad_host`: Host must be one field of
 *    `host [":" port]`, host = 1*(ALPHA / DIGIT / "-" / "." / "_") or "[" IPv6 "]" (hex
 *    digits, ':', '.'), port = 1*5DIGIT <= 65535; an empty Host is refused as well;
 *  - `te_in_http10`: Transfer-Encoding in an HTTP/1.0 request (RFC 9112 6.1);
 *  - `cl_and_te`: both Content-Length and Transfer-Encoding, in any order (RFC 9112 6.3);
 *  - `multiple_content_length`: two or more Content-Length fields, even with equal values
 *    (RFC 9110 8.6 lets a recipient collapse equal values; we refuse: fail closed);
 *  - `bad_content_length`: a value that is not 1*DIGIT fitting in 64 bits ("+5", "5, 5",
 *    "5 5", "0x5", "");
 *  - `unsupported_transfer_coding`: anything but exactly one Transfer-Encoding field whose
 *    value is "chunked" (any case). Beast strips the optional whitespace around a value, so
 *    "Transfer-Encoding:  chunked\t" is accepted (legal OWS); whitespace inside the value
 *    ("chunked ,", "chun ked"), other bytes (NBSP 0xA0) and lists ("gzip, chunked") are not.
 *    The Transfer-Encoding field itself is never forwarded (sanitize_request drops it; the
 *    relay re-frames).
 *
 * @param h a request header as Beast parsed it.
 * @return the first violation, or nullopt. Thread-safe, no allocation.
 */
std::optional<framing_error> check_request_framing(
    const boost::beast::http::request_header<flat_fields>& h) noexcept;
/** The same on a header in Beast's own fields (the tests pin Beast's parser with it). */
std::optional<framing_error> check_request_framing(
    const boost::beast::http::request_header<>& h) noexcept;

}  // namespace cbagate::http
