#include "http/error.hpp"

#include "common/error.hpp"

#include <array>
#include <string>

namespace cbagate::http {
namespace {

struct errc_row {
  errc value;
  std::string_view name;
  std::string_view message;
};

// One row per enumerator, in enumerator order (checked below).
constexpr std::array<errc_row, 21> errc_rows{{
    {errc::nul_byte, "nul_byte", "NUL byte in the request header"},
    {errc::bare_cr, "bare_cr", "CR not followed by LF in the request header"},
    {errc::bare_lf, "bare_lf", "line ending without CR in the request header"},
    {errc::obs_fold, "obs_fold", "obsolete line folding in a header field"},
    {errc::space_before_colon, "space_before_colon", "whitespace between field name and colon"},
    {errc::bad_field_name, "bad_field_name", "header field name is not a token"},
    {errc::control_in_value, "control_in_value", "control character in a header field value"},
    {errc::bad_request_line, "bad_request_line", "malformed request line"},
    {errc::incomplete_header, "incomplete_header", "request header does not end with an empty line"},
    {errc::too_many_fields, "too_many_fields", "too many header fields"},
    {errc::target_too_long, "target_too_long", "request target too long"},
    {errc::cl_and_te, "cl_and_te", "both Content-Length and Transfer-Encoding"},
    {errc::multiple_content_length, "multiple_content_length", "more than one Content-Length"},
    {errc::bad_content_length, "bad_content_length", "Content-Length is not a plain decimal"},
    {errc::unsupported_transfer_coding, "unsupported_transfer_coding",
     "Transfer-Encoding other than a single chunked"},
    {errc::te_in_http10, "te_in_http10", "Transfer-Encoding in an HTTP/1.0 request"},
    {errc::missing_host, "missing_host", "HTTP/1.1 request without Host"},
    {errc::multiple_host, "multiple_host", "more than one Host"},
    {errc::bad_host, "bad_host", "invalid Host"},
    {errc::fragment_in_target, "fragment_in_target", "fragment in the request target"},
    {errc::bad_target_form, "bad_target_form", "request target is not in origin form"},
}};

constexpr bool rows_in_order() {
  for (std::size_t i = 0; i < errc_rows.size(); ++i) {
    if (static_cast<std::size_t>(errc_rows[i].value) != i + 1) return false;
  }
  return true;
}
static_assert(rows_in_order(), "errc_rows must list every errc in enumerator order");

const errc_row* find_row(int v) noexcept {
  if (v < 1 || static_cast<std::size_t>(v) > errc_rows.size()) return nullptr;
  return &errc_rows[static_cast<std::size_t>(v) - 1];
}

std::string describe(errc e) {
  const errc_row* row = find_row(static_cast<int>(e));
  return row ? std::string(row->message) : std::string("unknown proxy.http error");
}

}  // namespace

const boost::system::error_category& http_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.http");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), http_category()};
}

std::string_view to_string(errc e) noexcept {
  const errc_row* row = find_row(static_cast<int>(e));
  return row ? row->name : std::string_view("unknown");
}

}  // namespace cbagate::http
