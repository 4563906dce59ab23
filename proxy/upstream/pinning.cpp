#include "upstream/pinning.hpp"

#include <boost/beast/core/string.hpp>

#include "http/flat_fields.hpp"

namespace cbagate::upstream {
namespace {

namespace bhttp = boost::beast::http;

// RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" /
// "_" / "`" / "|" / "~" / DIGIT / ALPHA.
constexpr bool is_tchar(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

bool names_connection_bound_scheme(std::string_view value) noexcept {
  std::size_t i = 0;
  while (i < value.size()) {
    if (!is_tchar(value[i])) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < value.size() && is_tchar(value[end])) ++end;
    const std::string_view word = value.substr(i, end - i);
    if (boost::beast::iequals(word, "NTLM") || boost::beast::iequals(word, "Negotiate")) return true;
    i = end;
  }
  return false;
}

namespace {

template <class Fields>
bool request_binds(const Fields& request) noexcept {
  for (const auto& f : request) {
    if (f.name() == bhttp::field::authorization && names_connection_bound_scheme(f.value()))
      return true;
  }
  return false;
}

template <class Fields>
bool response_binds(const Fields& response) noexcept {
  for (const auto& f : response) {
    if (f.name() == bhttp::field::www_authenticate && names_connection_bound_scheme(f.value()))
      return true;
    // Not a field Beast knows by enum: compared by name.
    if (f.name() == bhttp::field::unknown &&
        boost::beast::iequals(f.name_string(), "Persistent-Auth") &&
        !boost::beast::iequals(trim(f.value()), "false"))
      return true;
  }
  return false;
}

template <class Fields>
persistence persistent_auth_of(const Fields& response) noexcept {
  persistence said = persistence::unsaid;
  for (const auto& f : response) {
    if (f.name() != bhttp::field::unknown || !boost::beast::iequals(f.name_string(), "Persistent-Auth"))
      continue;
    if (!boost::beast::iequals(trim(f.value()), "true")) return persistence::ends;
    said = persistence::persists;
  }
  return said;
}

}  // namespace

bool request_binds_connection(const http::flat_fields& request) noexcept {
  return request_binds(request);
}
bool response_binds_connection(const http::flat_fields& response) noexcept {
  return response_binds(response);
}
persistence persistent_auth(const http::flat_fields& response) noexcept {
  return persistent_auth_of(response);
}

std::unique_ptr<connection> private_slot::take(const pool& p) {
  if (!conn_) return nullptr;
  std::unique_ptr<connection> c = std::move(conn_);
  if (!p.reusable(*c)) return nullptr;  // closed here: the backend will ask again
  return c;
}

void private_slot::finish(pool& p, std::unique_ptr<connection> conn, bool reusable) {
  if (!conn) return;
  if (!conn->pinned) {
    if (reusable) p.release(std::move(conn));
    return;  // otherwise closed by the destructor
  }
  if (!reusable) return;
  conn->idle_since = clock::now();
  conn->tcp().expires_never();
  conn_ = std::move(conn);
}

}  // namespace cbagate::upstream
