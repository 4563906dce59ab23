// libFuzzer target: chunked request-body framing. The session hands a chunked body to Beast's
// request_parser<buffer_body> (no body limit; the relay bounds its buffers), reading it into a
// fixed buffer piece by piece as the relay does. The input is the body only, after a fixed
// chunked header; it is fed in pieces of a size taken from the first input byte.
// Properties: the parser never reports more body bytes than the input holds, never writes
// outside the relay buffer, and a message reported complete consumed at most the input.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>

namespace {

namespace bhttp = boost::beast::http;

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = 1 + data[0] % 64;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  constexpr std::string_view head =
      "POST /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: mail.lab.test\r\n"
      "Transfer-Encoding: chunked\r\n\r\n";

  bhttp::request_parser<bhttp::buffer_body> parser;
  parser.header_limit(49152 + 4);
  parser.body_limit(boost::none);
  boost::beast::error_code ec;
  require(parser.put(boost::asio::buffer(head.data(), head.size()), ec) == head.size() && !ec);
  require(parser.is_header_done() && parser.chunked());

  std::array<char, 4096> relay{};
  std::string pending;
  std::size_t offset = 0;
  std::size_t body_bytes = 0;
  auto feed = [&] {
    const std::size_t n = std::min(piece, body.size() - offset);
    pending.append(body.substr(offset, n));
    offset += n;
  };
  // Bounded: each round either consumes input, fills the relay buffer, or adds a piece.
  for (std::size_t round = 0; !parser.is_done() && round < 4 * size + 16; ++round) {
    if (pending.empty()) {
      if (offset >= body.size()) break;  // the client stopped sending
      feed();
    }
    auto& b = parser.get().body();
    b.data = relay.data();
    b.size = relay.size();
    const std::size_t used = parser.put(boost::asio::buffer(pending.data(), pending.size()), ec);
    const std::size_t got = relay.size() - b.size;
    body_bytes += got;
    require(body_bytes <= body.size());
    require(used <= pending.size());
    pending.erase(0, used);
    if (ec == bhttp::error::need_buffer) {
      ec = {};
      continue;  // the relay buffer was full: the relay sends it and reads on
    }
    if (ec == bhttp::error::need_more) {
      ec = {};
      if (offset >= body.size()) break;  // the input ended inside a chunk line
      feed();
      continue;
    }
    if (ec) return 0;  // a framing error: the session answers 400 and closes
  }
  if (parser.is_done()) require(offset <= body.size());
  return 0;
}
