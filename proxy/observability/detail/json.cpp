#include "observability/detail/json.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

namespace cbagate::observability::detail {

namespace {

// Length of the well-formed UTF-8 sequence at the start of `s`, or 0 if it is not one.
// Table 3-7 of the Unicode standard (the same rules as RFC 3629 section 4).
std::size_t utf8_sequence_length(std::string_view s) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(s[i]); };
  const auto cont = [&](std::size_t i) { return i < s.size() && (byte(i) & 0xC0U) == 0x80U; };
  const std::uint8_t b0 = byte(0);
  if (b0 < 0x80U) {
    return 1;
  }
  if (b0 >= 0xC2U && b0 <= 0xDFU) {
    return cont(1) ? 2 : 0;
  }
  if (b0 >= 0xE0U && b0 <= 0xEFU) {
    if (!cont(1) || !cont(2)) {
      return 0;
    }
    const std::uint8_t b1 = byte(1);
    if (b0 == 0xE0U && b1 < 0xA0U) {
      return 0;  // overlong
    }
    if (b0 == 0xEDU && b1 > 0x9FU) {
      return 0;  // UTF-16 surrogate
    }
    return 3;
  }
  if (b0 >= 0xF0U && b0 <= 0xF4U) {
    if (!cont(1) || !cont(2) || !cont(3)) {
      return 0;
    }
    const std::uint8_t b1 = byte(1);
    if (b0 == 0xF0U && b1 < 0x90U) {
      return 0;  // overlong
    }
    if (b0 == 0xF4U && b1 > 0x8FU) {
      return 0;  // above U+10FFFF
    }
    return 4;
  }
  return 0;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s, std::size_t max_bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t i = 0;
  const std::size_t limit = std::min(s.size(), max_bytes);
  while (i < s.size()) {
    // A run of printable ASCII that needs no escape goes in one append (most of a line).
    std::size_t j = i;
    while (j < limit) {
      const auto c = static_cast<unsigned char>(s[j]);
      if (c < 0x20U || c >= 0x7FU || c == '"' || c == '\\') break;
      ++j;
    }
    if (j > i) {
      out.append(s.data() + i, j - i);
      i = j;
      continue;
    }
    const std::size_t len = utf8_sequence_length(s.substr(i));
    const std::size_t used = len == 0 ? 1 : len;
    if (i + used > max_bytes) {
      break;
    }
    if (len == 0) {
      out += "\\ufffd";
    } else if (len > 1) {
      out.append(s.substr(i, len));
    } else {
      const auto c = static_cast<unsigned char>(s[i]);
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20U || c == 0x7FU) {
            out += "\\u00";
            out.push_back(hex[c >> 4U]);
            out.push_back(hex[c & 0x0FU]);
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
    }
    i += used;
  }
  out.push_back('"');
}

void append_rfc3339_ms(std::string& out, std::chrono::system_clock::time_point tp) {
  using namespace std::chrono;
  const auto ms = floor<milliseconds>(tp.time_since_epoch());
  const auto day = floor<days>(ms);
  const year_month_day ymd{sys_days{day}};
  const hh_mm_ss hms{ms - day};
  fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                 static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                 static_cast<unsigned>(ymd.day()), hms.hours().count(), hms.minutes().count(),
                 hms.seconds().count(), hms.subseconds().count());
}

}  // namespace cbagate::observability::detail
