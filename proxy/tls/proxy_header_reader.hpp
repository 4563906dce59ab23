#pragma once
// Reads the PROXY protocol header of a freshly accepted connection, under its own deadline
// (timeouts.proxy_header), before any TLS byte is touched. Reads exactly the header's bytes:
// everything after it (the ClientHello) stays in the socket for the TLS stream.
#include <chrono>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "tls/proxy_protocol.hpp"

namespace cbagate::tls {

/** The outcome of reading a PROXY header. */
struct proxy_read {
  enum class outcome : std::uint8_t {
    ok,         ///< `header` is complete and valid
    invalid,    ///< the bytes are not a valid header (`error` says why)
    truncated,  ///< the peer closed before a complete header (no byte at all included)
    timeout,    ///< no complete header within the deadline
    io_error,   ///< the socket failed
  };
  outcome result = outcome::io_error;
  proxy_error error = proxy_error::none;
  proxy_header header;
  std::size_t bytes_seen = 0;  ///< for the log line of a refusal

  /** "ok", "malformed:bad_address", "truncated", "timeout", "io_error" (log word; metric label
   *  is the part before ':'). */
  std::string describe() const;
};

/**
 * Peeks at the socket until a complete header is there (or it cannot be one), then consumes
 * exactly its bytes. Never throws; the socket stays open (the caller closes it on failure).
 * @param timeout the whole header must have arrived within this time.
 * @param max_length longest header accepted (v2 with TLVs); longer is invalid (too_long).
 */
boost::asio::awaitable<proxy_read> read_proxy_header(boost::asio::ip::tcp::socket& socket,
                                                     std::chrono::steady_clock::duration timeout,
                                                     std::size_t max_length = proxy_v2_default_max);

}  // namespace cbagate::tls
