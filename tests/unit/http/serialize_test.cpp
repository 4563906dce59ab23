#include "http/serialize.hpp"

#include <sstream>
#include <string>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <doctest/doctest.h>

namespace {

namespace bhttp = boost::beast::http;

// What Beast writes for the header (its serializer and operator<< share the fields writer).
template <bool isRequest>
std::string beast_bytes(const bhttp::header<isRequest>& h) {
  std::ostringstream os;
  os << h;
  return os.str();
}

template <bool isRequest>
std::string our_bytes(const bhttp::header<isRequest>& h) {
  std::string out(cbagate::http::header_size(h), '\0');
  char* end = cbagate::http::put_header(h, out.data());
  CHECK(end == out.data() + out.size());  // header_size is exact
  return out;
}

}  // namespace

TEST_CASE("serialize: a request header is written byte for byte as Beast writes it") {
  bhttp::request_header<> h;
  h.method(bhttp::verb::get);
  h.target("/owa/?ae=Item&a=b%20c");
  h.version(11);
  h.insert("Host", "mail.example.com");
  h.insert("x-Mixed-CASE", "  value with spaces ");
  h.insert("X-Client-UPN", "alice@corp.example.com");
  h.insert(bhttp::field::content_length, "0");
  h.insert("Empty", "");
  CHECK(our_bytes(h) == beast_bytes(h));

  SUBCASE("an unknown method keeps its spelling") {
    h.method_string("RPC_IN_DATA");
    CHECK(our_bytes(h) == beast_bytes(h));
  }
  SUBCASE("HTTP/1.0, no fields") {
    bhttp::request_header<> h10;
    h10.method(bhttp::verb::head);
    h10.target("/");
    h10.version(10);
    CHECK(our_bytes(h10) == beast_bytes(h10));
    CHECK(our_bytes(h10) == "HEAD / HTTP/1.0\r\n\r\n");
  }
}

TEST_CASE("serialize: a response header is written byte for byte as Beast writes it") {
  bhttp::response_header<> h;
  h.result(200);
  h.version(11);
  h.insert(bhttp::field::content_type, "text/html; charset=utf-8");
  h.insert(bhttp::field::content_length, "42");
  h.insert("Set-Cookie", "a=b; path=/");
  h.insert("Set-Cookie", "c=d");
  SUBCASE("no stored reason: the status's usual one") {
    CHECK(our_bytes(h) == beast_bytes(h));
    CHECK(our_bytes(h).starts_with("HTTP/1.1 200 OK\r\n"));
  }
  SUBCASE("a stored reason is kept") {
    h.reason("Fine Thanks");
    CHECK(our_bytes(h) == beast_bytes(h));
  }
  SUBCASE("an unusual status") {
    h.result(449);
    h.version(10);
    CHECK(our_bytes(h) == beast_bytes(h));
  }
  SUBCASE("no fields") {
    bhttp::response_header<> empty;
    empty.result(204);
    CHECK(our_bytes(empty) == beast_bytes(empty));
    CHECK(our_bytes(empty) == "HTTP/1.1 204 No Content\r\n\r\n");
  }
}
