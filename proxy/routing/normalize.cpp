#include "routing/normalize.hpp"

#include <boost/url/parse.hpp>

#include <array>
#include <cstdint>
#include <vector>

namespace cbagate::routing {
namespace {

constexpr bool is_visible_ascii(unsigned char c) noexcept { return c >= 0x21 && c <= 0x7E; }

constexpr int hex_value(unsigned char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr bool is_hex(unsigned char c) noexcept { return hex_value(c) >= 0; }

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

// Bytes written literally in a canonical path: RFC 3986 pchar without pct-encoded, plus '/'
// (unreserved / sub-delims / ":" / "@"). Everything else is written as %XX.
constexpr std::array<bool, 256> make_literal_table() {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (unsigned char c : std::string_view("-._~!$&'()*+,;=:@/")) t[c] = true;
  return t;
}
constexpr std::array<bool, 256> literal_table = make_literal_table();

error_code make_err(errc e) noexcept { return make_error_code(e); }

// Well-formed UTF-8 per Unicode Table 3-7: no overlong forms, no surrogates, <= U+10FFFF.
// Also refuses the four code points whose simple case mapping lands on ASCII letters
// (U+0130 -> 'i', U+0131 -> 'I', U+017F -> 'S', U+212A -> 'k'): a backend comparing paths
// case-insensitively with Unicode tables could match them against an ASCII route prefix.
error_code check_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      if (b0 == 0xE0) lo = 0xA0;        // overlong
      else if (b0 == 0xED) hi = 0x9F;   // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      if (b0 == 0xF0) lo = 0x90;        // overlong
      else if (b0 == 0xF4) hi = 0x8F;   // above U+10FFFF
    } else {
      return make_err(errc::bad_utf8);  // continuation byte, C0/C1 overlong lead, F5..FF
    }
    if (n - i < len) return make_err(errc::bad_utf8);
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return make_err(errc::bad_utf8);
    for (std::size_t k = 2; k < len; ++k) {
      const auto bk = static_cast<unsigned char>(s[i + k]);
      if (bk < 0x80 || bk > 0xBF) return make_err(errc::bad_utf8);
    }
    if (len == 2 && ((b0 == 0xC4 && (b1 == 0xB0 || b1 == 0xB1)) || (b0 == 0xC5 && b1 == 0xBF))) {
      return make_err(errc::case_fold_confusable);
    }
    if (len == 3 && b0 == 0xE2 && b1 == 0x84 && static_cast<unsigned char>(s[i + 2]) == 0xAA) {
      return make_err(errc::case_fold_confusable);
    }
    i += len;
  }
  return {};
}

// Decodes every %XX of a raw path once. The raw path holds visible ASCII only (checked before).
error_code percent_decode_path(std::string_view raw, std::string& out) {
  out.clear();
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c == '\\') return make_err(errc::bad_character);  // IIS reads it as '/'
    if (c != '%') {
      out.push_back(static_cast<char>(c));
      continue;
    }
    if (raw.size() - i < 3) return make_err(errc::bad_escape);
    const int h = hex_value(static_cast<unsigned char>(raw[i + 1]));
    const int l = hex_value(static_cast<unsigned char>(raw[i + 2]));
    if (h < 0 || l < 0) return make_err(errc::bad_escape);
    const auto b = static_cast<unsigned char>(h * 16 + l);
    if (b == '/' || b == '\\' || b == 0) return make_err(errc::encoded_separator);
    if (b < 0x20 || b == 0x7F) return make_err(errc::bad_character);
    out.push_back(static_cast<char>(b));
    i += 2;
  }
  // A decoded '%' that still starts an escape would be decoded again by a backend that decodes
  // twice (or by a second hop): "%252e" and "%25%32%65" both become "%2e" here.
  for (std::size_t i = 0; i + 2 < out.size(); ++i) {
    if (out[i] == '%' && is_hex(static_cast<unsigned char>(out[i + 1])) &&
        is_hex(static_cast<unsigned char>(out[i + 2]))) {
      return make_err(errc::double_encoding);
    }
  }
  return check_utf8(out);
}

void append_encoded(std::string_view segment, std::string& out) {
  static constexpr char digits[] = "0123456789ABCDEF";
  for (char ch : segment) {
    const auto c = static_cast<unsigned char>(ch);
    if (literal_table[c]) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 0x0F]);
    }
  }
}

// `decoded` starts with '/' and holds no '/' that came from an escape, so splitting it on '/'
// gives the request's own segments. Dot segments are removed as in RFC 3986 5.2.4 (empty
// segments are kept until then), then runs of '/' are collapsed while re-encoding.
expected<std::string> canonical_path(std::string_view decoded) {
  std::vector<std::string_view> out;
  bool trailing_slash = false;
  std::size_t pos = 1;  // past the leading '/'
  while (true) {
    const std::size_t end = decoded.find('/', pos);
    const bool last = end == std::string_view::npos;
    const std::string_view seg = decoded.substr(pos, last ? std::string_view::npos : end - pos);
    if (seg == ".") {
      trailing_slash = last;
    } else if (seg == "..") {
      if (out.empty()) return make_err(errc::dot_segment_above_root);
      out.pop_back();
      trailing_slash = last;
    } else {
      // Windows drops trailing dots and spaces from names: "owa." and ".. " are refused.
      if (!seg.empty() && (seg.back() == '.' || seg.back() == ' ')) {
        return make_err(errc::trailing_dot_or_space);
      }
      out.push_back(seg);
      trailing_slash = last && seg.empty();
    }
    if (last) break;
    pos = end + 1;
  }

  std::string path;
  path.reserve(decoded.size() + 16);
  path.push_back('/');
  for (const std::string_view seg : out) {
    if (seg.empty()) continue;  // "//" collapses
    if (path.back() != '/') path.push_back('/');
    append_encoded(seg, path);
  }
  if (trailing_slash && path.back() != '/') path.push_back('/');
  return path;
}

}  // namespace

std::string normalized_target::forward_target() const {
  if (!has_query) return path;
  std::string t;
  t.reserve(path.size() + 1 + query.size());
  t.append(path).append(1, '?').append(query);
  return t;
}

expected<normalized_target> normalize_target(std::string_view target, std::size_t max_bytes) {
  if (target.size() > max_bytes) return make_err(errc::target_too_long);
  if (target.empty()) return make_err(errc::bad_target_form);
  for (char ch : target) {
    // '#' never belongs to a request-target (RFC 9112 3.2: no fragment).
    if (!is_visible_ascii(static_cast<unsigned char>(ch)) || ch == '#') {
      return make_err(errc::bad_character);
    }
  }

  normalized_target result;
  std::string_view rest;
  if (target.front() == '/') {
    rest = target;  // origin-form
  } else {
    // absolute-form (RFC 9112 3.2.2), http and https only; "*" and authority-form are refused.
    const std::size_t sep = target.find("://");
    if (sep == std::string_view::npos) return make_err(errc::bad_target_form);
    const std::string_view scheme = target.substr(0, sep);
    if (!iequals(scheme, "http") && !iequals(scheme, "https")) {
      return make_err(errc::bad_target_form);
    }
    const std::string_view after = target.substr(sep + 3);
    const std::size_t auth_end = after.find_first_of("/?");
    const std::string_view authority = after.substr(0, auth_end);
    if (authority.empty()) return make_err(errc::bad_target_form);
    const auto parsed = boost::urls::parse_authority(authority);
    // userinfo in an http(s) URI is deprecated and a classic spoofing device (RFC 9110 4.2.4).
    if (!parsed || parsed->has_userinfo() || parsed->host().empty()) {
      return make_err(errc::bad_target_form);
    }
    result.authority = std::string(authority);
    rest = auth_end == std::string_view::npos ? std::string_view{} : after.substr(auth_end);
  }

  const std::size_t qmark = rest.find('?');
  std::string_view raw_path = rest.substr(0, qmark);
  if (qmark != std::string_view::npos) {
    result.has_query = true;
    result.query = std::string(rest.substr(qmark + 1));
  }
  if (raw_path.empty()) raw_path = "/";  // absolute-form with an empty path (RFC 9110 4.2.3)

  std::string decoded;
  if (const error_code ec = percent_decode_path(raw_path, decoded)) return ec;
  auto path = canonical_path(decoded);
  if (!path) return path.error();
  result.path = std::move(*path);
  return result;
}

}  // namespace cbagate::routing
