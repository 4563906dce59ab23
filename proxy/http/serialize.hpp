#pragma once
// A message header as bytes, exactly as Beast's serializer writes it: the start line, each field
// as stored ("Name: value\r\n", in order) and the blank line. The relay writes headers this
// way (issue 14: Beast's serializer spent about a tenth of a keep-alive request's instructions in
// its buffer-sequence machinery); bodies that need chunk framing still go through Beast.
#include <cstddef>

#include <boost/beast/http/message.hpp>

#include "http/flat_fields.hpp"

namespace cbagate::http {

/** The number of bytes put_header() writes for `h`. Pure. */
std::size_t header_size(const boost::beast::http::request_header<>& h) noexcept;
/** The number of bytes put_header() writes for `h` (its reason, or the status's usual one). */
std::size_t header_size(const boost::beast::http::response_header<>& h) noexcept;

/**
 * Writes `h` to `out`, which must have room for header_size(h) bytes. The bytes equal what
 * boost::beast::http::serializer writes for the header of a message with this header.
 * @return one past the last byte written.
 */
char* put_header(const boost::beast::http::request_header<>& h, char* out) noexcept;
char* put_header(const boost::beast::http::response_header<>& h, char* out) noexcept;

/** The same for a header held in flat_fields (the relay's): the same bytes as Beast's
    serializer writes for a basic_fields header with these fields in this order. */
std::size_t header_size(const boost::beast::http::request_header<flat_fields>& h) noexcept;
std::size_t header_size(const boost::beast::http::response_header<flat_fields>& h) noexcept;
char* put_header(const boost::beast::http::request_header<flat_fields>& h, char* out) noexcept;
char* put_header(const boost::beast::http::response_header<flat_fields>& h, char* out) noexcept;

}  // namespace cbagate::http
