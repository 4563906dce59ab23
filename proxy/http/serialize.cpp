#include "http/serialize.hpp"

#include <cstring>
#include <string_view>

namespace cbagate::http {
namespace {

namespace bhttp = boost::beast::http;

void put(char*& p, std::string_view s) noexcept {
  std::memcpy(p, s.data(), s.size());
  p += s.size();
}

// "HTTP/X.Y"; Beast writes the version as two digits (11 -> "1.1").
void put_version(char*& p, unsigned version) noexcept {
  put(p, "HTTP/");
  *p++ = static_cast<char>('0' + version / 10);
  *p++ = '.';
  *p++ = static_cast<char>('0' + version % 10);
}

// Beast writes the stored reason, or the status's usual one when none is stored.
std::string_view reason_of(const bhttp::response_header<>& h) noexcept {
  return h.reason().empty() ? bhttp::obsolete_reason(h.result()) : h.reason();
}

std::size_t fields_size(const bhttp::fields& f) noexcept {
  std::size_t n = 2;  // the blank line
  for (const auto& field : f) n += field.name_string().size() + 2 + field.value().size() + 2;
  return n;
}

void put_fields(char*& p, const bhttp::fields& f) noexcept {
  for (const auto& field : f) {
    put(p, field.name_string());
    put(p, ": ");
    put(p, field.value());
    put(p, "\r\n");
  }
  put(p, "\r\n");
}

}  // namespace

std::size_t header_size(const bhttp::request_header<>& h) noexcept {
  // "<method> <target> HTTP/X.Y\r\n"
  return h.method_string().size() + 1 + h.target().size() + 1 + 8 + 2 + fields_size(h);
}

std::size_t header_size(const bhttp::response_header<>& h) noexcept {
  // "HTTP/X.Y ### <reason>\r\n"
  return 8 + 1 + 3 + 1 + reason_of(h).size() + 2 + fields_size(h);
}

char* put_header(const bhttp::request_header<>& h, char* p) noexcept {
  put(p, h.method_string());
  *p++ = ' ';
  put(p, h.target());
  *p++ = ' ';
  put_version(p, h.version());
  put(p, "\r\n");
  put_fields(p, h);
  return p;
}

char* put_header(const bhttp::response_header<>& h, char* p) noexcept {
  put_version(p, h.version());
  const unsigned code = h.result_int();
  *p++ = ' ';
  *p++ = static_cast<char>('0' + code / 100 % 10);
  *p++ = static_cast<char>('0' + code / 10 % 10);
  *p++ = static_cast<char>('0' + code % 10);
  *p++ = ' ';
  put(p, reason_of(h));
  put(p, "\r\n");
  put_fields(p, h);
  return p;
}

std::size_t header_size(const bhttp::request_header<flat_fields>& h) noexcept {
  return flat_fields::request_size(h, h.version(), h.method());
}

std::size_t header_size(const bhttp::response_header<flat_fields>& h) noexcept {
  return flat_fields::response_size(h, h.version(), h.result_int());
}

char* put_header(const bhttp::request_header<flat_fields>& h, char* p) noexcept {
  return flat_fields::put_request(h, h.version(), h.method(), p);
}

char* put_header(const bhttp::response_header<flat_fields>& h, char* p) noexcept {
  return flat_fields::put_response(h, h.version(), h.result_int(), p);
}

}  // namespace cbagate::http
