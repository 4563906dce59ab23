#include "http/flat_parser.hpp"

#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include "flat_differential.hpp"

namespace {

// Requests: the session's usual ones and every framing row of framing.hpp's table.
constexpr std::string_view requests[] = {
    "GET /owa/ HTTP/1.1\r\nHost: mail.lab.test\r\nUser-Agent: ab\r\nAccept: */*\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    "POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
    "Content-Type: application/vnd.ms-sync.wbxml\r\n\r\nhello",
    "POST /owa/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    "5;ext=1\r\nhello\r\n0\r\nTrailer-Field: x\r\n\r\n",
    "RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: h\r\nContent-Length: 1073741824\r\n\r\nabc",
    "GET / HTTP/1.1\r\nHost: h\r\nX-Client-UPN: a\r\nx-client-upn: b\r\nHost: h2\r\n"
    "Connection: X-Client-UPN, close\r\nConnection: keep-alive\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nFoo: a\r\n  folded\r\n\r\n",
    "GET / HTTP/1.1\r\n folded: x\r\n\r\n",
    "GET / HTTP/1.1\r\nHost : h\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\nabc",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    "3\r\nabc\r\n0\r\n\r\n",
    "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
    "\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\nX: \x80\xff\r\nEmpty:\r\nSpaces:   \t \r\n\r\n",
    "GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\n",  // incomplete
    "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /next HTTP/1.1\r\n\r\n",  // pipelined
    "GET / HTTP/2.0\r\n\r\n",
    "get / HTTP/1.1\r\n\r\n",
};

constexpr std::string_view responses[] = {
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    "HTTP/1.1 200 Fine Thanks\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=b\r\n"
    "Set-Cookie: c=d\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.0 200 OK\r\n\r\nclose-delimited body",
    "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody until eof",
    "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\n"
    "Persistent-Auth: true\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nConnection: keep-alive, X-Secret\r\n"
    "X-Secret: s\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    "HTTP/1.1 20 OK\r\n\r\n",
};

void check_all(std::string_view bytes, bool request) {
  for (unsigned mode = 0; mode < 128; ++mode) {
    const std::string diff =
        cbagate::test::flat_difference(bytes, request, cbagate::test::feed_from(static_cast<unsigned char>(mode)));
    INFO("mode ", mode, " input ", std::string(bytes));
    CHECK_MESSAGE(diff.empty(), diff);
    if (!diff.empty()) return;
  }
}

}  // namespace

TEST_CASE("flat_parser: requests parse exactly as with Beast's parser and basic_fields") {
  for (const std::string_view r : requests) check_all(r, true);
}

TEST_CASE("flat_parser: responses parse exactly as with Beast's parser and basic_fields") {
  for (const std::string_view r : responses) check_all(r, false);
}

TEST_CASE("flat_parser: release_fields keeps the storage for the next message") {
  namespace bhttp = boost::beast::http;
  cbagate::http::flat_fields spare;
  const char* storage = nullptr;
  for (int i = 0; i < 3; ++i) {
    cbagate::http::flat_request_parser<bhttp::empty_body> p(std::move(spare));
    const std::string_view req = "GET /owa/ HTTP/1.1\r\nHost: mail.lab.test\r\nX-A: 1\r\n\r\n";
    boost::beast::error_code ec;
    p.put(boost::asio::buffer(req.data(), req.size()), ec);
    REQUIRE(!ec);
    REQUIRE(p.is_done());
    CHECK(p.get()[bhttp::field::host] == "mail.lab.test");
    CHECK(p.get().target() == "/owa/");
    if (i == 0) storage = p.get().target().data();
    CHECK(p.get().target().data() == storage);  // the same buffer every time
    spare = p.release_fields();
    CHECK(spare.empty());
  }
}
