// libFuzzer target: the identity a session ticket carries (tls/ticket_identity: decoded on
// every resumption). Property: a record the decoder accepts is exactly what the encoder writes
// for the decoded identity (no second spelling of one identity, nothing ignored), and that
// identity keeps the ticket bounds.
#include "tls/ticket_identity.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cbagate::identity::client_identity id;
  if (!cbagate::tls::detail::decode_ticket_identity(data, size, id)) return 0;
  const std::string again = cbagate::tls::detail::encode_ticket_identity(id);
  require(again.size() == size && std::memcmp(again.data(), data, size) == 0);
  require(id.chain.size() <= 10);
  if (id.reason != cbagate::identity::rejection::none) require(id.chain.empty());
  return 0;
}
