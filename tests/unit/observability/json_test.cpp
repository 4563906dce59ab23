#include "observability/detail/json.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>

namespace obs = cbagate::observability;

namespace {

std::string quoted(std::string_view s, std::size_t max = 1000) {
  std::string out;
  obs::detail::append_json_string(out, s, max);
  return out;
}

}  // namespace

TEST_CASE("observability: json string escapes quotes, backslash and control characters") {
  CHECK(quoted("a\"b\\c") == R"("a\"b\\c")");
  CHECK(quoted("l1\nl2\r\t") == R"("l1\nl2\r\t")");
  CHECK(quoted(std::string_view("\x01\x1f\x7f", 3)) == R"("\u0001\u001f\u007f")");
  CHECK(quoted(std::string_view("a\0b", 3)) == R"("a\u0000b")");
}

TEST_CASE("observability: json string replaces invalid UTF-8 and keeps valid UTF-8") {
  CHECK(quoted("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
  CHECK(quoted("\xf0\x9f\x98\x80") == "\"\xf0\x9f\x98\x80\"");
  CHECK(quoted("a\xff" "b") == R"("a\ufffdb")");
  CHECK(quoted("\xc0\xaf") == R"("\ufffd\ufffd")");           // overlong '/'
  CHECK(quoted("\xed\xa0\x80") == R"("\ufffd\ufffd\ufffd")");  // surrogate
  CHECK(quoted("\xc3") == R"("\ufffd")");                      // truncated sequence
}

TEST_CASE("observability: json string truncates on a character boundary") {
  CHECK(quoted("abcdef", 3) == R"("abc")");
  CHECK(quoted("ab\xc3\xa9", 3) == R"("ab")");
  CHECK(quoted("ab\xc3\xa9", 4) == "\"ab\xc3\xa9\"");
}

TEST_CASE("observability: rfc3339 timestamp in UTC with milliseconds") {
  using namespace std::chrono;
  std::string out;
  const sys_time<milliseconds> t = sys_days{2024y / 2 / 29} + 23h + 59min + 58s + 7ms;
  obs::detail::append_rfc3339_ms(out, time_point_cast<system_clock::duration>(t) + microseconds(999));
  CHECK(out == "2024-02-29T23:59:58.007Z");
  out.clear();
  obs::detail::append_rfc3339_ms(out, system_clock::time_point{});
  CHECK(out == "1970-01-01T00:00:00.000Z");
}
