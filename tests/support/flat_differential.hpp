#pragma once
// The differential check of issue 14: the same bytes through Beast's own parser (basic_fields)
// and through http::flat_parser (flat_fields) must give the same errors at the same places,
// the same body bytes, the same (name, value) sequence, start line, keep_alive(), chunked(),
// content length, and the same header bytes (serialize.hpp and Beast's writer); and the same
// message edits (the ones the session and the relay make) must leave both equal again.
// Used by tests/unit/http/flat_parser_test.cpp and tests/fuzz/fuzz_flat_parser.cpp.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>

#include "http/flat_parser.hpp"
#include "http/serialize.hpp"

namespace cbagate::test {

namespace flat_diff_detail {

namespace bhttp = boost::beast::http;

// How one input is fed: header limit, body limit, eager/skip, body buffer size, piece size.
struct feed {
  std::uint32_t header_limit = 49156;
  std::optional<std::uint64_t> body_limit;  // nullopt = none
  bool eager = true;
  bool skip = false;
  std::size_t body_buffer = 7;
  std::size_t piece = 0;  // 0 = all bytes at once, else at most this many per put()
};

template <class Fields>
std::string describe_header(const bhttp::header<true, Fields>& h) {
  std::string s = std::string(h.method_string()) + " " + std::string(h.target()) + " " +
                  std::to_string(h.version()) + " verb=" + std::to_string(static_cast<int>(h.method()));
  return s;
}
template <class Fields>
std::string describe_header(const bhttp::header<false, Fields>& h) {
  return std::to_string(h.result_int()) + " [" + std::string(h.reason()) + "] " +
         std::to_string(h.version());
}

template <bool isRequest, class Fields>
std::string describe(const bhttp::header<isRequest, Fields>& h) {
  std::string s = describe_header(h) + "\n";
  for (const auto& f : h) {
    s += std::to_string(static_cast<int>(f.name())) + " " + std::string(f.name_string()) + ": [" +
         std::string(f.value()) + "]\n";
  }
  return s;
}

template <bool isRequest, class Body, class Fields>
std::string describe_message(const bhttp::message<isRequest, Body, Fields>& m) {
  std::string s = describe(m.base());
  s += "keep_alive=" + std::to_string(m.keep_alive()) + " chunked=" + std::to_string(m.chunked()) +
       " need_eof=" + std::to_string(m.need_eof()) +
       " has_content_length=" + std::to_string(m.has_content_length()) + "\n";
  // Header bytes: ours (serialize.hpp) for flat_fields; Beast's writer (operator<<) for both.
  std::ostringstream os;
  os << m.base();
  s += "beast-bytes:" + os.str() + "\n";
  if constexpr (std::is_same_v<Fields, http::flat_fields> || std::is_same_v<Fields, bhttp::fields>) {
    std::string ours(http::header_size(m.base()), '\0');
    char* end = http::put_header(m.base(), ours.data());
    if (end != ours.data() + ours.size()) s += "header_size is not exact\n";
    s += "our-bytes:" + ours + "\n";
  }
  return s;
}

// The edits of session.cpp (rewrite_for_upstream) and relay.cpp (relay_response), in turn,
// with a snapshot after each.
template <bool isRequest, class Body, class Fields>
std::string edit_and_describe(bhttp::message<isRequest, Body, Fields>& m) {
  std::string s;
  const bool ka = m.keep_alive();
  m.keep_alive(!ka);
  s += "after keep_alive(!):\n" + describe_message(m);
  m.keep_alive(ka);
  s += "after keep_alive():\n" + describe_message(m);
  m.set(bhttp::field::expect, "  100-continue ");
  m.erase(bhttp::field::expect);
  m.set("X-Forwarded-For", "192.0.2.1");
  m.set("x-forwarded-proto", "https");
  m.erase("X-Forwarded-Host");
  m.insert("Set-Cookie", "a=b");
  m.insert(bhttp::field::connection, "close");
  s += "after set/erase/insert:\n" + describe_message(m);
  const bool chunked = m.chunked();
  m.chunked(true);
  s += "after chunked(true):\n" + describe_message(m);
  m.chunked(false);
  s += "after chunked(false):\n" + describe_message(m);
  m.content_length(12345);
  s += "after content_length:\n" + describe_message(m);
  m.chunked(chunked);
  m.version(11);
  m.keep_alive(true);
  if constexpr (isRequest) m.target("/owa/?x=1");
  s += "after version/keep_alive/target:\n" + describe_message(m);
  // Erase during iteration, as sanitize does: every unknown-named field and every Host.
  for (auto it = m.begin(); it != m.end();) {
    if (it->name() == bhttp::field::unknown || it->name() == bhttp::field::host)
      it = m.erase(it);
    else
      ++it;
  }
  s += "after erase loop:\n" + describe_message(m);
  return s;
}

// Feeds `bytes` to parser `p` (a Beast-style parser whose message has a buffer_body or an
// empty_body), recording each put()'s result and the body bytes; then the header, the message
// helpers and the edits.
template <class Parser>
std::string run(Parser& p, std::string_view bytes, const feed& how) {
  std::string trace;
  p.header_limit(how.header_limit);
  if (how.body_limit)
    p.body_limit(*how.body_limit);
  else
    p.body_limit(boost::none);
  p.eager(how.eager);
  p.skip(how.skip);
  std::string body;
  std::vector<char> buf(how.body_buffer + 1);
  std::size_t at = 0;
  const std::size_t step = how.piece > 0 ? how.piece : bytes.size() + 1;
  std::size_t window = step;
  for (int rounds = 0; rounds < 1000000; ++rounds) {
    auto& m = p.get();
    constexpr bool buffered =
        std::is_same_v<typename std::decay_t<decltype(m)>::body_type, bhttp::buffer_body>;
    if constexpr (buffered) {
      m.body().data = buf.data();
      m.body().size = how.body_buffer;
    }
    const std::string_view rest = bytes.substr(at, window);
    boost::beast::error_code ec;
    if (rest.empty()) {
      if (!p.got_some()) break;  // put_eof's precondition (Beast asserts it)
      p.put_eof(ec);
      trace += "eof " + ec.message() + (p.is_done() ? " D" : "") + "\n";
      break;
    }
    const std::size_t offered_end = at + rest.size();
    const std::size_t used = p.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    at += used;
    if constexpr (buffered) body.append(buf.data(), how.body_buffer - m.body().size);
    trace += "put " + std::to_string(used) + " " + ec.message() + (p.is_header_done() ? " H" : "") +
             (p.is_done() ? " D" : "") + "\n";
    if (ec == bhttp::error::need_buffer) continue;
    if (ec == bhttp::error::need_more) {
      if (offered_end >= bytes.size()) {
        // All there is was offered: the end of the stream.
        if (!p.got_some()) break;  // put_eof's precondition (Beast asserts it)
        boost::beast::error_code eec;
        p.put_eof(eec);
        trace += "eof " + eec.message() + (p.is_done() ? " D" : "") + "\n";
        break;
      }
      window += step;
      continue;
    }
    if (ec || p.is_done()) break;
    window = step;
  }
  trace += "body[" + body + "]\n";
  if (!p.is_header_done()) return trace;
  trace += "content_length=" + (p.content_length() ? std::to_string(*p.content_length()) : "-") +
           " parser.chunked=" + std::to_string(p.chunked()) +
           " parser.keep_alive=" + std::to_string(p.keep_alive()) + "\n";
  trace += describe_message(p.get());
  trace += edit_and_describe(p.get());
  return trace;
}

}  // namespace flat_diff_detail

/** One way of feeding: chosen from a byte (the fuzz target's first byte). */
inline flat_diff_detail::feed feed_from(unsigned char b) {
  flat_diff_detail::feed f;
  f.header_limit = (b & 1) ? 8192 : 49156;
  if (b & 2) f.body_limit = (b & 4) ? 16 : 1024 * 1024;
  f.eager = (b & 8) == 0;
  f.skip = (b & 16) != 0;
  f.body_buffer = (b & 32) ? 1 : 7;
  f.piece = (b & 64) ? 5 : 0;
  return f;
}

/**
 * Parses `bytes` as a request (or a response) with Beast's parser and with flat_parser, with
 * buffer_body and with empty_body, fed as `how` says.
 * @return "" when both agree in everything; else both descriptions, to print.
 */
inline std::string flat_difference(std::string_view bytes, bool request,
                                   const flat_diff_detail::feed& how = {}) {
  namespace bhttp = boost::beast::http;
  using flat_diff_detail::run;
  std::string out;
  const auto compare = [&out](const std::string& beast, const std::string& flat, const char* what) {
    if (beast != flat) out += std::string(what) + "\n--- beast\n" + beast + "--- flat\n" + flat;
  };
  if (request) {
    {
      bhttp::request_parser<bhttp::buffer_body> b;
      http::flat_request_parser<bhttp::buffer_body> f;
      compare(run(b, bytes, how), run(f, bytes, how), "request buffer_body");
    }
    {
      bhttp::request_parser<bhttp::empty_body> b;
      http::flat_request_parser<bhttp::empty_body> f;
      compare(run(b, bytes, how), run(f, bytes, how), "request empty_body");
    }
  } else {
    {
      bhttp::response_parser<bhttp::buffer_body> b;
      http::flat_response_parser<bhttp::buffer_body> f;
      compare(run(b, bytes, how), run(f, bytes, how), "response buffer_body");
    }
    {
      bhttp::response_parser<bhttp::empty_body> b;
      http::flat_response_parser<bhttp::empty_body> f;
      compare(run(b, bytes, how), run(f, bytes, how), "response empty_body");
    }
  }
  return out;
}

}  // namespace cbagate::test
