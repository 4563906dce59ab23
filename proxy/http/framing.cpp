#include "http/framing.hpp"

#include <array>
#include <charconv>
#include <cstdint>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>

namespace cbagate::http {
namespace {

namespace bhttp = boost::beast::http;

// tchar, RFC 9110 5.6.2.
constexpr std::array<bool, 256> make_tchar_table() {
  std::array<bool, 256> t{};
  for (unsigned c = '0'; c <= '9'; ++c) t[c] = true;
  for (unsigned c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (unsigned c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (unsigned char c : std::string_view("!#$%&'*+-.^_`|~")) t[c] = true;
  return t;
}
constexpr std::array<bool, 256> tchar = make_tchar_table();

// What the header scan does with a byte: most bytes are plain; CR ends a line; NUL and a bare LF
// are refused at once; other controls (and DEL) are judged with their line. HTAB is plain here
// (field values may hold it); the request line checks it itself.
enum class byte_class : unsigned char { plain, cr, lf, nul, ctl };
constexpr std::array<byte_class, 256> make_scan_table() {
  std::array<byte_class, 256> t{};
  for (unsigned c = 0; c < 0x20; ++c) t[c] = byte_class::ctl;
  t[0x7f] = byte_class::ctl;
  t['\t'] = byte_class::plain;
  t['\r'] = byte_class::cr;
  t['\n'] = byte_class::lf;
  t[0] = byte_class::nul;
  return t;
}
constexpr std::array<byte_class, 256> scan_class = make_scan_table();

constexpr bool is_tchar(char c) noexcept { return tchar[static_cast<unsigned char>(c)]; }
constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }
constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// request-line = method SP request-target SP HTTP-version (RFC 9112 3). Structure is Beast's
// to check; here only bytes that Beast would otherwise reject with a less precise error, or
// that a lenient parser elsewhere could read differently.
std::optional<errc> check_request_line(std::string_view line, bool had_ctl,
                                       const scan_limits& limits) noexcept {
  // RFC 9112 2.2 lets a server skip empty lines before the request line; an empty line here
  // means stray bytes after a previous message, so the connection is out of sync: refuse.
  if (line.empty()) return errc::bad_request_line;
  // The scan saw any control byte but HTAB (had_ctl); HTAB is one here too.
  if (had_ctl || line.find('\t') != std::string_view::npos) return errc::bad_request_line;
  const auto first_sp = line.find(' ');
  const auto last_sp = line.rfind(' ');
  if (first_sp != std::string_view::npos && last_sp > first_sp &&
      last_sp - first_sp - 1 > limits.max_target) {
    return errc::target_too_long;
  }
  return std::nullopt;
}

// field-line = field-name ":" OWS field-value OWS (RFC 9112 5).
// had_ctl: the scan saw a control byte other than HTAB in the line.
std::optional<errc> check_field_line(std::string_view line, bool had_ctl) noexcept {
  if (is_ows(line.front())) return errc::obs_fold;  // RFC 9112 5.2: obs-fold, we refuse
  std::size_t i = 0;
  while (i < line.size() && is_tchar(line[i])) ++i;
  if (i == line.size()) return errc::bad_field_name;  // no colon at all
  if (line[i] != ':') {
    // RFC 9112 5.1: "No whitespace is allowed between the field name and colon", and a server
    // MUST reject such a message with 400: a lenient proxy would see a different name.
    if (i > 0 && is_ows(line[i])) {
      std::size_t j = i;
      while (j < line.size() && is_ows(line[j])) ++j;
      if (j < line.size() && line[j] == ':') return errc::space_before_colon;
    }
    return errc::bad_field_name;
  }
  if (i == 0) return errc::bad_field_name;  // empty name
  // field-vchar / SP / HTAB / obs-text: a control byte here is in the value (the name is all
  // tchar); CR, LF and NUL were rejected by the line scan.
  if (had_ctl) return errc::control_in_value;
  return std::nullopt;
}

// host = IP-literal / IPv4address / reg-name, narrowed to what a real Exchange name can be.
bool valid_host(std::string_view v) noexcept {
  if (v.empty()) return false;
  std::size_t i = 0;
  if (v[0] == '[') {
    // IPv6 literal; no IPvFuture and no zone id.
    i = 1;
    while (i < v.size() &&
           (is_digit(v[i]) || (v[i] >= 'a' && v[i] <= 'f') || (v[i] >= 'A' && v[i] <= 'F') ||
            v[i] == ':' || v[i] == '.')) {
      ++i;
    }
    if (i == 1 || i == v.size() || v[i] != ']') return false;
    ++i;
  } else {
    while (i < v.size() && (is_digit(v[i]) || (v[i] >= 'a' && v[i] <= 'z') ||
                            (v[i] >= 'A' && v[i] <= 'Z') || v[i] == '-' || v[i] == '.' ||
                            v[i] == '_')) {
      ++i;
    }
    if (i == 0) return false;
  }
  if (i == v.size()) return true;
  if (v[i] != ':') return false;
  const std::string_view port = v.substr(i + 1);
  // RFC 3986 allows an empty port ("host:"); nothing legitimate sends one, so refuse it.
  if (port.empty() || port.size() > 5) return false;
  unsigned value = 0;
  for (char c : port) {
    if (!is_digit(c)) return false;
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  return value <= 65535;
}

// Content-Length = 1*DIGIT (RFC 9110 8.6), and it must fit in 64 bits.
bool valid_content_length(std::string_view v) noexcept {
  if (v.empty()) return false;
  for (char c : v) {
    if (!is_digit(c)) return false;
  }
  std::uint64_t n = 0;
  const auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  return ec == std::errc{} && ptr == v.data() + v.size();
}

// An absolute-form target "http(s)://authority[/path][?query]" whose authority equals the one
// Host field (case-insensitive).
template <class Fields>
bool absolute_form_on_host(const bhttp::request_header<Fields>& h) noexcept {
  std::string_view t = h.target();
  std::size_t scheme_len = 0;
  if (t.size() > 7 && boost::beast::iequals(t.substr(0, 7), "http://")) {
    scheme_len = 7;
  } else if (t.size() > 8 && boost::beast::iequals(t.substr(0, 8), "https://")) {
    scheme_len = 8;
  } else {
    return false;
  }
  t.remove_prefix(scheme_len);
  const std::string_view authority = t.substr(0, t.find_first_of("/?"));
  if (authority.empty() || h.count(bhttp::field::host) != 1) return false;
  return boost::beast::iequals(authority, h.find(bhttp::field::host)->value());
}

}  // namespace

header_scan scan_header_prefix(std::string_view buffered, const scan_limits& limits) noexcept {
  header_scan out;
  const char* const b = buffered.data();
  const std::size_t n = buffered.size();
  std::size_t line_start = 0;
  bool had_ctl = false;  // a control byte other than HTAB in the current line
  bool request_line = true;
  std::size_t i = 0;
  while (i < n) {
    // One table lookup per ordinary byte: the fast path of a keep-alive request (issue 14).
    while (i < n && scan_class[static_cast<unsigned char>(b[i])] == byte_class::plain) ++i;
    if (i == n) break;
    switch (scan_class[static_cast<unsigned char>(b[i])]) {
      case byte_class::nul:
        out.error = errc::nul_byte;
        return out;
      case byte_class::lf:  // an LF that did not follow a CR (those are consumed below)
        out.error = errc::bare_lf;
        return out;
      case byte_class::ctl:  // judged with its line: where it is decides the error
        had_ctl = true;
        ++i;
        continue;
      default:  // CR
        break;
    }
    if (i + 1 == n) return out;  // the LF has not arrived yet
    if (b[i + 1] != '\n') {
      out.error = errc::bare_cr;
      return out;
    }
    const std::string_view line = buffered.substr(line_start, i - line_start);
    const bool line_had_ctl = had_ctl;
    i += 2;
    line_start = i;
    had_ctl = false;
    if (request_line) {
      request_line = false;
      out.error = check_request_line(line, line_had_ctl, limits);
    } else if (line.empty()) {
      out.size = i;  // the empty line: end of the header block
      return out;
    } else {
      out.error = check_field_line(line, line_had_ctl);
      if (!out.error && ++out.field_count > limits.max_fields) out.error = errc::too_many_fields;
    }
    if (out.error) return out;
  }
  return out;
}

std::optional<framing_error> scan_header_block(std::string_view raw,
                                               const scan_limits& limits) noexcept {
  const header_scan scan = scan_header_prefix(raw, limits);
  if (scan.error) return scan.error;
  if (scan.size == 0) return errc::incomplete_header;
  return std::nullopt;
}

namespace {

template <class Fields>
std::optional<framing_error> check_framing(const bhttp::request_header<Fields>& h) noexcept {
  const std::string_view target = h.target();
  // RFC 9112 3.2: a fragment is never sent; a '#' would be read as a path byte by some and as
  // the end of the path by others.
  if (target.find('#') != std::string_view::npos) return errc::fragment_in_target;
  // Origin-form reaches routing (RFC 9112 3.2.1); authority-form is CONNECT, which we do not
  // tunnel. Absolute-form (http/https) MUST be accepted by a server (RFC 9112 3.2.2), but it
  // would put a second authority next to Host: it is accepted only when its authority is
  // exactly the single Host value, so there is never a choice between two authorities.
  const bool asterisk = target == "*" && h.method() == bhttp::verb::options;
  if (!asterisk && (target.empty() || target.front() != '/') && !absolute_form_on_host(h)) {
    return errc::bad_target_form;
  }

  const std::size_t hosts = h.count(bhttp::field::host);
  if (hosts > 1) return errc::multiple_host;
  if (hosts == 0) {
    // RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
    if (h.version() >= 11) return errc::missing_host;
  } else if (!valid_host(h.find(bhttp::field::host)->value())) {
    return errc::bad_host;
  }

  const std::size_t tes = h.count(bhttp::field::transfer_encoding);
  const std::size_t cls = h.count(bhttp::field::content_length);
  // RFC 9112 6.1: a Transfer-Encoding in an HTTP/1.0 message means faulty framing.
  if (tes > 0 && h.version() < 11) return errc::te_in_http10;
  // RFC 9112 6.3 lets a server process such a request by Transfer-Encoding, but "ought to"
  // close afterwards; it is the classic smuggling vector, so refuse it outright.
  if (tes > 0 && cls > 0) return errc::cl_and_te;
  if (cls > 1) return errc::multiple_content_length;
  if (cls == 1 && !valid_content_length(h.find(bhttp::field::content_length)->value())) {
    return errc::bad_content_length;
  }
  if (tes > 1) return errc::unsupported_transfer_coding;
  if (tes == 1 &&
      !boost::beast::iequals(h.find(bhttp::field::transfer_encoding)->value(), "chunked")) {
    return errc::unsupported_transfer_coding;
  }
  return std::nullopt;
}

}  // namespace

std::optional<framing_error> check_request_framing(
    const bhttp::request_header<flat_fields>& h) noexcept {
  return check_framing(h);
}

std::optional<framing_error> check_request_framing(const bhttp::request_header<>& h) noexcept {
  return check_framing(h);
}

}  // namespace cbagate::http
