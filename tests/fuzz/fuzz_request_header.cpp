// libFuzzer target: the request path of http/session.cpp over arbitrary bytes, exactly in its
// order: the raw-header scan (scan_header_prefix on every prefix length the read loop could
// see, then scan_header_block), Beast's parser into flat_fields (flat_parser, as the session
// parses) with the session's limits, the framing
// check of the parsed header, then sanitize_request and add_forwarding_headers.
// Properties checked: the incremental scan agrees with the whole-block scan; an accepted header
// leaves no identity, hop-by-hop or forwarding field that the client sent.
#include "http/flat_parser.hpp"
#include "http/framing.hpp"
#include "http/sanitize.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <boost/beast/core/buffer_traits.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

namespace {

namespace bhttp = boost::beast::http;

void require(bool condition) {
  if (!condition) std::abort();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const cbagate::http::scan_limits limits{.max_fields = 100, .max_target = 16384};

  // The read loop calls the scan on growing prefixes: once it reports an error or a size, a
  // longer prefix must report the same.
  const cbagate::http::header_scan whole = cbagate::http::scan_header_prefix(bytes, limits);
  for (std::size_t cut = 0; cut < size; cut += 1 + cut / 4) {
    const auto part = cbagate::http::scan_header_prefix(bytes.substr(0, cut), limits);
    if (part.error) require(whole.error == part.error);
    if (part.size != 0) require(whole.size == part.size && !whole.error);
  }
  if (whole.error || whole.size == 0) return 0;
  require(whole.size <= size);
  const std::string_view raw = bytes.substr(0, whole.size);
  require(!cbagate::http::scan_header_block(raw, limits).has_value());

  cbagate::http::flat_request_parser<bhttp::buffer_body> parser;
  parser.header_limit(49152 + 4);
  parser.body_limit(boost::none);
  boost::beast::error_code ec;
  const std::size_t used = parser.put(boost::asio::buffer(raw.data(), raw.size()), ec);
  if (ec || !parser.is_header_done() || used != raw.size()) return 0;
  auto& req = parser.get();
  if (cbagate::http::check_request_framing(req.base())) return 0;

  cbagate::http::sanitize_options options{.identity_header = "X-Client-UPN",
                                          .strip_authorization = true};
  cbagate::http::sanitize_request(req.base(), options);
  cbagate::http::add_forwarding_headers(
      req.base(), {.client_address = "192.0.2.1", .proto = "https", .host = "mail.lab.test"});
  for (const auto& field : req.base()) {
    const std::string_view name = field.name_string();
    for (const std::string_view banned :
         {"X-Client-UPN", "X_Client_UPN", "X-Forwarded-Client-Cert", "X-Remote-User",
          "Authorization", "Connection", "Transfer-Encoding", "Upgrade", "Proxy-Authorization",
          "TE", "Keep-Alive", "Forwarded", "X-Original-URL"})
      require(!iequals(name, banned));
    if (iequals(name, "X-Forwarded-For")) require(field.value() == "192.0.2.1");
  }
  return 0;
}
