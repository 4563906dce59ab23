// libFuzzer target for tls::parse_proxy_header (PROXY protocol v1/v2 from an L4 balancer).
// Properties checked on every input: a complete header fits in the input and in the limit; the
// header alone (without what follows it) parses to the same result; every strict prefix of a
// complete header is "need more", never a different verdict; an address family is set exactly
// when the header is not LOCAL.
#include "tls/proxy_protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

using cbagate::tls::net_address;
using cbagate::tls::parse_proxy_header;
using state = cbagate::tls::proxy_parse::state;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> input(data, size);
  constexpr std::size_t limit = 16 + 256;
  const auto r = parse_proxy_header(input, limit);
  if (r.status == state::need_more) {
    require(size < limit);
    return 0;
  }
  if (r.status == state::invalid) {
    require(r.error != cbagate::tls::proxy_error::none);
    return 0;
  }
  const auto& h = r.header;
  require(h.length > 0 && h.length <= size && h.length <= limit);
  require(h.version == 1 || h.version == 2);
  require(h.local == (h.source.fam == net_address::family::none));
  require(h.source.fam == h.destination.fam);
  if (!h.local) require(!h.source.address_string().empty());
  const auto alone = parse_proxy_header(input.first(h.length), limit);
  require(alone.status == state::complete && alone.header.length == h.length);
  require(alone.header.source == h.source && alone.header.destination == h.destination);
  for (std::size_t n = 0; n < h.length; ++n)
    require(parse_proxy_header(input.first(n), limit).status == state::need_more);
  return 0;
}
