// libFuzzer target: the configuration loader (TOML -> validated snapshot) over arbitrary text.
// Properties: it never throws or crashes; a result is either a snapshot or errors, never both;
// every error points inside the text (line 0 = the file as a whole).
#include "config/load.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // Relative paths resolve under a directory that does not exist: no file is ever read.
  const auto r = cbagate::config::load_string(text, "fuzz.toml", "/nonexistent-cbagate-fuzz");
  require(r.ok() != !r.errors.empty() || (r.value == nullptr && !r.errors.empty()));
  require((r.value != nullptr) == r.errors.empty());
  const std::size_t lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
  for (const auto& d : r.errors) {
    require(d.line <= lines + 1);
    require(!d.to_string().empty());
  }
  return 0;
}
