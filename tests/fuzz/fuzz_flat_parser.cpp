// libFuzzer target (issue 14): the differential check of http::flat_parser against Beast's own
// parser (tests/support/flat_differential.hpp). The first byte chooses the way of feeding
// (header and body limits, eager, skip, body buffer and piece sizes; bit 7: a response), the
// rest is the message. Any difference in errors, body bytes, fields, start line, message
// helpers, header bytes or edits aborts.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "flat_differential.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool request = (data[0] & 0x80) == 0;
  const std::string diff = cbagate::test::flat_difference(
      bytes, request, cbagate::test::feed_from(static_cast<unsigned char>(data[0] & 0x7f)));
  if (!diff.empty()) {
    std::fprintf(stderr, "%s\n", diff.c_str());
    std::abort();
  }
  return 0;
}
