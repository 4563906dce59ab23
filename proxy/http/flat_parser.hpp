#pragma once
// Beast's HTTP/1 parser, writing into a flat_fields message (issue 14). Every framing rule,
// limit and error stays Beast's: this derives from boost::beast::http::basic_parser (Beast's
// "custom parser" pattern) and does in each callback exactly what boost::beast::http::parser
// 1.81 does (boost/beast/http/parser.hpp), with flat_fields in place of basic_fields.
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>

#include "http/flat_fields.hpp"

namespace cbagate::http {

/**
 * A parser for one message (like Beast's, it may not be reused: make a new one, or emplace
 * it in an optional, per message). `fields`, when given, becomes the message's header storage
 * (moved in: a cleared flat_fields keeps its allocations, so a connection can hand the same
 * one to each of its messages and take it back with release()).
 * Chunk callbacks (Beast's on_chunk_header/on_chunk_body) are not offered: nothing here uses
 * them.
 */
template <bool isRequest, class Body>
class flat_parser final : public boost::beast::http::basic_parser<isRequest> {
 public:
  using value_type = boost::beast::http::message<isRequest, Body, flat_fields>;

  flat_parser() : rd_(m_.base(), m_.body()) {}
  explicit flat_parser(flat_fields&& fields) : m_(make(std::move(fields))), rd_(m_.base(), m_.body()) {}
  flat_parser(const flat_parser&) = delete;
  flat_parser& operator=(const flat_parser&) = delete;
  ~flat_parser() override = default;

  value_type& get() noexcept { return m_; }
  const value_type& get() const noexcept { return m_; }

  /** Takes the header storage back (cleared, its allocations kept) for the next message;
      the parser's message is empty afterwards. */
  flat_fields release_fields() noexcept {
    flat_fields f = std::move(static_cast<flat_fields&>(m_.base()));
    f.clear();
    return f;
  }

 private:
  static value_type make(flat_fields&& fields) {
    fields.clear();
    boost::beast::http::header<isRequest, flat_fields> h(std::move(fields));
    return value_type(std::move(h));
  }

  // basic_parser's callbacks, each as boost::beast::http::parser 1.81 does it.
  void on_request_impl(boost::beast::http::verb method, boost::beast::string_view method_str,
                       boost::beast::string_view target, int version,
                       boost::beast::error_code& ec) override {
    if constexpr (isRequest) {
      if (used_) {
        ec = boost::beast::http::error::stale_parser;
        return;
      }
      used_ = true;
      m_.target(target);
      if (method != boost::beast::http::verb::unknown)
        m_.method(method);
      else
        m_.method_string(method_str);
      m_.version(static_cast<unsigned>(version));
    } else {
      (void)method, (void)method_str, (void)target, (void)version, (void)ec;
    }
  }

  void on_response_impl(int code, boost::beast::string_view reason, int version,
                        boost::beast::error_code& ec) override {
    if constexpr (!isRequest) {
      if (used_) {
        ec = boost::beast::http::error::stale_parser;
        return;
      }
      used_ = true;
      m_.result(static_cast<unsigned>(code));
      m_.version(static_cast<unsigned>(version));
      m_.reason(reason);
    } else {
      (void)code, (void)reason, (void)version, (void)ec;
    }
  }

  void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                     boost::beast::string_view value, boost::beast::error_code&) override {
    m_.insert(name, name_string, value);
  }

  void on_header_impl(boost::beast::error_code& ec) override { ec = {}; }

  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length,
                         boost::beast::error_code& ec) override {
    rd_.init(content_length, ec);
  }

  std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code& ec) override {
    return rd_.put(boost::asio::buffer(body.data(), body.size()), ec);
  }

  void on_chunk_header_impl(std::uint64_t, boost::beast::string_view, boost::beast::error_code&) override {}

  std::size_t on_chunk_body_impl(std::uint64_t, boost::beast::string_view body,
                                 boost::beast::error_code& ec) override {
    return rd_.put(boost::asio::buffer(body.data(), body.size()), ec);
  }

  void on_finish_impl(boost::beast::error_code& ec) override { rd_.finish(ec); }

  value_type m_;
  typename Body::reader rd_;
  bool used_ = false;
};

template <class Body>
using flat_request_parser = flat_parser<true, Body>;
template <class Body>
using flat_response_parser = flat_parser<false, Body>;

}  // namespace cbagate::http
