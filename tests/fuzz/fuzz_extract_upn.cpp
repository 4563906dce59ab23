// libFuzzer target: identity::extract_upn_der over arbitrary bytes (STYLE.md 5.9).
// Built as a fuzzer with PROXY_FUZZ=ON (clang); replay_main.cpp runs it over the corpus in every
// normal test run (ctest fuzz_extract_upn_corpus).
#include "identity/upn.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

namespace {

using cbagate::identity::rejection;
using cbagate::identity::upn_options;
using cbagate::identity::upn_result;

// The contract every answer must keep, whatever the input: a UPN only on acceptance, and an
// accepted UPN passes the UPN rules on its own.
void check_invariants(const upn_result& r, const upn_options& options) {
  if (!r.ok()) {
    if (!r.upn.empty()) std::abort();
    return;
  }
  std::string detail;
  if (cbagate::identity::check_upn(r.upn, options.max_length, detail) != rejection::none)
    std::abort();
  for (const char c : r.detail)
    if (static_cast<unsigned char>(c) < 0x20) std::abort();  // details are log-safe
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const unsigned char> der{data, size};
  static constexpr upn_options san_only{};
  static constexpr upn_options both{.from_san = true, .from_subject = true, .max_length = 64};
  static constexpr upn_options subject_only{.from_san = false, .from_subject = true};
  for (const upn_options* options : {&san_only, &both, &subject_only}) {
    const upn_result r = cbagate::identity::extract_upn_der(der, *options);
    check_invariants(r, *options);
  }
  return 0;
}
