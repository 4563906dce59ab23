#include "config/validate.hpp"

#include <boost/url/ipv4_address.hpp>
#include <boost/url/ipv6_address.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/scheme.hpp>
#include <boost/url/url_view.hpp>

#include <algorithm>
#include <array>
#include <cstdint>

namespace cbagate::config {
namespace {

constexpr char ascii_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// RFC 9110 5.6.2: tchar.
constexpr bool is_tchar(char c) noexcept {
  if (is_digit(c) || is_alpha(c)) return true;
  constexpr std::string_view extra = "!#$%&'*+-.^_`|~";
  return extra.find(c) != std::string_view::npos;
}

// 1..5 digits, value <= 65535.
std::optional<std::uint16_t> parse_port(std::string_view text, std::string& why) {
  if (text.empty()) {
    why = "the port is missing";
    return std::nullopt;
  }
  if (text.size() > 5 || !std::all_of(text.begin(), text.end(), is_digit)) {
    why = "the port must be a number 0..65535";
    return std::nullopt;
  }
  std::uint32_t n = 0;
  for (const char c : text) n = n * 10 + static_cast<std::uint32_t>(c - '0');
  if (n > 65535) {
    why = "the port must be a number 0..65535";
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(n);
}

bool is_dns_name(std::string_view name, std::string& why) {
  if (name.empty()) {
    why = "the host name is empty";
    return false;
  }
  if (name.size() > 253) {
    why = "the host name is longer than 253 characters";
    return false;
  }
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = name.find('.', start);
    const std::string_view label =
        name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63) {
      why = "each label of a host name must have 1 to 63 characters";
      return false;
    }
    for (const char c : label) {
      if (!is_alpha(c) && !is_digit(c) && c != '-') {
        why = "a host name may hold letters, digits, '-' and '.' only";
        return false;
      }
    }
    if (label.front() == '-' || label.back() == '-') {
      why = "a label of a host name must not start or end with '-'";
      return false;
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return true;
}

// "1.2.3.4"-like hosts must be valid IPv4 literals, never names.
bool looks_numeric(std::string_view host) noexcept {
  return std::all_of(host.begin(), host.end(), [](char c) { return is_digit(c) || c == '.'; });
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

bool is_valid_hsts(std::string_view value, std::string& why) {
  auto trim = [](std::string_view t) {
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    return t;
  };
  bool max_age = false;
  bool subdomains = false;
  bool preload = false;
  std::size_t index = 0;
  while (true) {
    const std::size_t semi = value.find(';');
    const std::string_view part = trim(value.substr(0, semi));
    if (index == 0) {
      constexpr std::string_view prefix = "max-age=";
      const std::string_view digits =
          part.size() > prefix.size() ? part.substr(prefix.size()) : std::string_view();
      if (!iequals(part.substr(0, std::min(part.size(), prefix.size())), prefix) ||
          digits.empty() || digits.size() > 10 ||
          !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        why = "must start with max-age=SECONDS (RFC 6797), e.g. \"max-age=31536000\"";
        return false;
      }
      max_age = true;
    } else if (iequals(part, "includeSubDomains") && !subdomains) {
      subdomains = true;
    } else if (iequals(part, "preload") && !preload) {
      preload = true;
    } else {
      why = "unexpected directive \"" + std::string(part) +
            "\" (after max-age only includeSubDomains and preload, each once)";
      return false;
    }
    ++index;
    if (semi == std::string_view::npos) break;
    value.remove_prefix(semi + 1);
  }
  return max_age;
}

bool is_valid_host_name(std::string_view name, std::string& why) {
  if (!name.empty() && name.front() == '[' && name.back() == ']') {
    if (!boost::urls::parse_ipv6_address(name.substr(1, name.size() - 2))) {
      why = "not a valid IPv6 address";
      return false;
    }
    return true;
  }
  if (name.find(':') != std::string_view::npos) {
    if (!boost::urls::parse_ipv6_address(name)) {
      why = "not a valid IPv6 address";
      return false;
    }
    return true;
  }
  if (!name.empty() && looks_numeric(name)) {
    if (!boost::urls::parse_ipv4_address(name)) {
      why = "not a valid IPv4 address";
      return false;
    }
    return true;
  }
  return is_dns_name(name, why);
}

std::optional<ldap_uri> parse_ldap_uri(std::string_view text, std::string& why) {
  ldap_uri out;
  std::string_view rest;
  if (text.starts_with("ldap://")) {
    rest = text.substr(7);
  } else if (text.starts_with("ldaps://")) {
    out.ldaps = true;
    rest = text.substr(8);
  } else {
    why = "must start with ldap:// or ldaps://";
    return std::nullopt;
  }
  if (rest.ends_with("/")) rest.remove_suffix(1);
  if (rest.find_first_of("/?#@ ") != std::string_view::npos) {
    why = "only scheme, host and port are allowed (the base DN is directory.base_dn)";
    return std::nullopt;
  }
  std::string_view host = rest;
  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) {
      why = "unterminated IPv6 literal";
      return std::nullopt;
    }
    host = rest.substr(0, close + 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':') {
        why = "unexpected text after the IPv6 literal";
        return std::nullopt;
      }
      port_text = rest.substr(close + 2);
      has_port = true;
    }
  } else if (const std::size_t colon = rest.find(':'); colon != std::string_view::npos &&
                                                       rest.find(':', colon + 1) == std::string_view::npos) {
    host = rest.substr(0, colon);
    port_text = rest.substr(colon + 1);
    has_port = true;
  }
  if (host.empty()) {
    why = "no host";
    return std::nullopt;
  }
  if (host.front() != '[' && host.find(':') != std::string_view::npos) {
    why = "an IPv6 address must be written in brackets";
    return std::nullopt;
  }
  if (!is_valid_host_name(host, why)) return std::nullopt;
  out.host = host.front() == '[' ? std::string(host.substr(1, host.size() - 2)) : std::string(host);
  out.port = out.ldaps ? 636 : 389;
  if (has_port) {
    const auto port = parse_port(port_text, why);
    if (!port) return std::nullopt;
    if (*port == 0) {
      why = "port must be 1..65535";
      return std::nullopt;
    }
    out.port = *port;
  }
  if (const auto v4 = boost::urls::parse_ipv4_address(out.host)) {
    out.loopback = (v4->to_uint() >> 24) == 127;
  } else if (const auto v6 = boost::urls::parse_ipv6_address(out.host)) {
    out.loopback = v6->is_loopback();
  }
  return out;
}

bool is_valid_upn_suffix(std::string_view suffix, std::string& why) {
  if (suffix.find('@') != std::string_view::npos) {
    why = "write the domain only, without '@'";
    return false;
  }
  if (!suffix.empty() && suffix.back() == '.') {
    why = "no trailing dot";
    return false;
  }
  if (!suffix.empty() && looks_numeric(suffix)) {
    why = "not a domain name";
    return false;
  }
  return is_dns_name(suffix, why);
}

bool is_valid_template(std::string_view name, std::string& why) {
  if (name.empty()) {
    why = "must not be empty";
    return false;
  }
  if (name.front() == ' ' || name.back() == ' ') {
    why = "no leading or trailing space";
    return false;
  }
  if (name.size() > 256) {
    why = "longer than 256 bytes";
    return false;
  }
  return true;
}

std::optional<endpoint> parse_endpoint(std::string_view text, std::string& why) {
  endpoint ep;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      why = "missing ']' after the IPv6 address";
      return std::nullopt;
    }
    const std::string_view v6 = text.substr(1, close - 1);
    if (!boost::urls::parse_ipv6_address(v6)) {
      why = "not a valid IPv6 address";
      return std::nullopt;
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      why = "expected \"[v6]:port\"";
      return std::nullopt;
    }
    ep.host = std::string(v6);
    port_text = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      why = "expected \"host:port\" or \"[v6]:port\"";
      return std::nullopt;
    }
    const std::string_view host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      why = "an IPv6 address must be written in brackets: \"[v6]:port\"";
      return std::nullopt;
    }
    if (host.empty()) {
      why = "the host is missing (use 0.0.0.0 or [::] for every address)";
      return std::nullopt;
    }
    if (!is_valid_host_name(host, why)) return std::nullopt;
    ep.host = std::string(host);
    port_text = text.substr(colon + 1);
  }
  const auto port = parse_port(port_text, why);
  if (!port) return std::nullopt;
  ep.port = *port;
  return ep;
}

std::optional<upstream_server> parse_upstream_url(std::string_view text, std::string& why) {
  const auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    why = "not a valid URL (" + parsed.error().message() + ")";
    return std::nullopt;
  }
  const boost::urls::url_view& u = *parsed;
  upstream_server s;
  s.url = std::string(text);
  if (u.scheme_id() == boost::urls::scheme::http) {
    s.tls = false;
  } else if (u.scheme_id() == boost::urls::scheme::https) {
    s.tls = true;
  } else {
    why = "the scheme must be http or https";
    return std::nullopt;
  }
  if (u.has_userinfo()) {
    why = "user information (user@) is not allowed";
    return std::nullopt;
  }
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
      s.host = u.host_ipv4_address().to_string();
      break;
    case boost::urls::host_type::ipv6:
      s.host = u.host_ipv6_address().to_string();
      break;
    case boost::urls::host_type::name: {
      if (u.encoded_host_name().find('%') != std::string_view::npos) {
        why = "percent-encoding is not allowed in the host";
        return std::nullopt;
      }
      s.host = std::string(u.encoded_host_name());
      if (!is_valid_host_name(s.host, why)) return std::nullopt;
      break;
    }
    default:
      why = "the host is missing or not a name, IPv4 or IPv6 address";
      return std::nullopt;
  }
  if (u.has_port()) {
    const auto port = parse_port(u.port(), why);
    if (!port) return std::nullopt;
    if (*port == 0) {
      why = "the port must be 1..65535";
      return std::nullopt;
    }
    s.port = *port;
  } else {
    s.port = s.tls ? 443 : 80;
  }
  if (!u.encoded_path().empty() && u.encoded_path() != "/") {
    why = "a path is not allowed (requests keep their own path)";
    return std::nullopt;
  }
  if (u.has_query()) {
    why = "a query is not allowed";
    return std::nullopt;
  }
  if (u.has_fragment()) {
    why = "a fragment is not allowed";
    return std::nullopt;
  }
  return s;
}

bool is_valid_http_fetch_url(std::string_view text, std::string& why) {
  const auto parsed = boost::urls::parse_uri(text);
  if (!parsed) {
    why = "not a valid URL (" + parsed.error().message() + ")";
    return false;
  }
  const boost::urls::url_view& u = *parsed;
  if (u.scheme_id() != boost::urls::scheme::http) {
    why = "must be an http:// URL (responders and CRLs are fetched over plain HTTP)";
    return false;
  }
  if (u.has_userinfo()) {
    why = "user information (user@) is not allowed";
    return false;
  }
  switch (u.host_type()) {
    case boost::urls::host_type::ipv4:
    case boost::urls::host_type::ipv6:
      break;
    case boost::urls::host_type::name: {
      if (u.encoded_host_name().find('%') != std::string_view::npos) {
        why = "percent-encoding is not allowed in the host";
        return false;
      }
      if (!is_valid_host_name(std::string(u.encoded_host_name()), why)) return false;
      break;
    }
    default:
      why = "the host is missing or not a name, IPv4 or IPv6 address";
      return false;
  }
  if (u.has_port()) {
    const auto port = parse_port(u.port(), why);
    if (!port) return false;
    if (*port == 0) {
      why = "the port must be 1..65535";
      return false;
    }
  }
  if (u.has_query()) {
    why = "a query is not allowed";
    return false;
  }
  if (u.has_fragment()) {
    why = "a fragment is not allowed";
    return false;
  }
  return true;
}

bool is_valid_route_prefix(std::string_view prefix, std::string& why) {
  if (prefix.empty() || prefix.front() != '/') {
    why = "must start with \"/\"";
    return false;
  }
  for (const char c : prefix) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      why = "must hold visible ASCII characters only (no space, control or non-ASCII character)";
      return false;
    }
    if (c == '%' || c == '\\' || c == '?' || c == '#') {
      why = std::string("must not contain '") + c + "' (prefixes are matched on normalized paths)";
      return false;
    }
  }
  if (prefix.find("//") != std::string_view::npos) {
    why = "must not contain \"//\"";
    return false;
  }
  if (prefix.size() > 1 && prefix.back() == '/') {
    why = "must not end with \"/\" (except the bare \"/\")";
    return false;
  }
  std::size_t start = 1;
  while (start <= prefix.size()) {
    std::size_t end = prefix.find('/', start);
    if (end == std::string_view::npos) end = prefix.size();
    const std::string_view segment = prefix.substr(start, end - start);
    if (segment == "." || segment == "..") {
      why = "must not contain a \".\" or \"..\" segment";
      return false;
    }
    start = end + 1;
  }
  return true;
}

bool is_valid_route_method(std::string_view method, std::string& why) {
  if (method.empty() || method.size() > 32) {
    why = "must be 1..32 characters";
    return false;
  }
  if (!std::all_of(method.begin(), method.end(), is_tchar)) {
    why = "must be an HTTP method token (letters, digits and !#$%&'*+-.^_`|~ only)";
    return false;
  }
  if (iequals(method, "CONNECT")) {
    why = "CONNECT is never proxied (no tunnels)";
    return false;
  }
  return true;
}

bool is_valid_identity_header(std::string_view name, std::string& why) {
  if (name.empty()) {
    why = "must not be empty";
    return false;
  }
  if (name.size() > 64) {
    why = "must be at most 64 characters";
    return false;
  }
  if (!std::all_of(name.begin(), name.end(), is_tchar)) {
    why = "must be an HTTP field name (letters, digits and !#$%&'*+-.^_`|~ only)";
    return false;
  }
  // Fields that frame the message, are hop-by-hop (RFC 9110 7.6.1), carry credentials, or are
  // set by the proxy itself: an identity header with one of these names would be dropped,
  // reinterpreted or forged.
  static constexpr std::array<std::string_view, 20> reserved = {
      "host",          "content-length",      "transfer-encoding", "connection",
      "keep-alive",    "proxy-connection",    "te",                "trailer",
      "upgrade",       "expect",              "authorization",     "proxy-authorization",
      "proxy-authenticate", "www-authenticate", "cookie",          "forwarded",
      "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",  "content-type"};
  for (const std::string_view r : reserved) {
    if (iequals(name, r)) {
      why = "\"" + std::string(name) +
            "\" is a framing, hop-by-hop, credential or proxy-set field; choose another name";
      return false;
    }
  }
  return true;
}

bool is_valid_sni_name(std::string_view name, std::string& why) {
  if (name.size() >= 2 && name.substr(0, 2) == "*.") {
    const std::string_view rest = name.substr(2);
    if (rest.find('*') != std::string_view::npos || rest.find('.') == std::string_view::npos) {
      why = "a wildcard must be \"*.\" followed by a name of at least two labels";
      return false;
    }
    return is_dns_name(rest, why);
  }
  if (name.find('*') != std::string_view::npos) {
    why = "a wildcard is allowed only as the whole leftmost label (\"*.example.com\")";
    return false;
  }
  return is_dns_name(name, why);
}

}  // namespace cbagate::config
