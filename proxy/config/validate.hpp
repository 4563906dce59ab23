#pragma once
// The format checks behind the schema's constraints, as pure functions so other modules (admin/
// parses server.admin_listen) and tests can use them. Each returns the value or sets `why` to a
// short reason ("port must be 0..65535") and returns nothing / false.
#include "config/snapshot.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cbagate::config {

/**
 * "host:port" or "[v6]:port". The host is an IPv4 literal, a bracketed IPv6 literal (stored
 * without brackets) or a DNS name; the port is 0..65535 (0 = any free port).
 */
std::optional<endpoint> parse_endpoint(std::string_view text, std::string& why);

/**
 * "http://host[:port]" or "https://host[:port]" (parsed with Boost.URL; default port 80/443);
 * no userinfo, path (other than "/"), query or fragment; port 1..65535. IPv6 hosts are stored
 * without brackets.
 */
std::optional<upstream_server> parse_upstream_url(std::string_view text, std::string& why);

/**
 * A route prefix: starts with "/", visible ASCII only (no space or control character), no "%",
 * "\\", "?", "#" or "//", no "." or ".." segment, no trailing "/" except the bare "/".
 * Such a prefix is already in the canonical form of a normalized path.
 */
bool is_valid_route_prefix(std::string_view prefix, std::string& why);

/**
 * A name for the identity header: an HTTP field name (RFC 9110 5.1 token) that is not a
 * hop-by-hop, framing, authentication or proxy-set field (Host, Content-Length, Connection,
 * Authorization, X-Forwarded-For, ...).
 */
bool is_valid_identity_header(std::string_view name, std::string& why);

/**
 * An HTTP method for route.methods: an RFC 9110 token of at most 32 characters, not CONNECT (no
 * tunnels through the proxy). Methods are case-sensitive (RFC 9110 9.1): "get" is not "GET".
 */
bool is_valid_route_method(std::string_view method, std::string& why);

/** A DNS host name (letters, digits, hyphens; labels 1..63; at most 253) or an IP literal. */
bool is_valid_host_name(std::string_view name, std::string& why);

/** An SNI server name to match: a DNS name or "*.suffix" (one wildcard label, leftmost). */
bool is_valid_sni_name(std::string_view name, std::string& why);

/**
 * An http:// URL to fetch from (revocation.ocsp_responder): scheme http, a host (name, IPv4 or
 * bracketed IPv6), optional port 1..65535 and path; no userinfo, query or fragment.
 */
bool is_valid_http_fetch_url(std::string_view text, std::string& why);

/** One directory server URI (directory.uris): "ldap://host[:port]" or "ldaps://host[:port]". */
struct ldap_uri {
  bool ldaps = false;
  std::string host;        // IPv6 without brackets
  std::uint16_t port = 0;  // 389 / 636 when not written
  bool loopback = false;   // host is a loopback IP literal (127.0.0.0/8 or ::1)
};

/**
 * Parses a directory URI: scheme ldap or ldaps (lower case), a host (DNS name, IPv4 or bracketed
 * IPv6 literal), an optional port 1..65535 and an optional "/"; no user, DN, filter or other
 * RFC 4516 part (the base DN is directory.base_dn).
 */
std::optional<ldap_uri> parse_ldap_uri(std::string_view text, std::string& why);

/**
 * An AD UPN suffix (auth.upn_suffixes): a DNS name (letters, digits, hyphens, dots), no '@',
 * no trailing dot.
 */
bool is_valid_upn_suffix(std::string_view suffix, std::string& why);

/** An AD CS template (auth.certificate_templates): a dotted OID, or a name of printable
 *  characters without leading or trailing space. */
bool is_valid_template(std::string_view name, std::string& why);

/**
 * A Strict-Transport-Security value (RFC 6797 6.1) as route.hsts accepts it: "max-age=N"
 * (N decimal, at most 10 digits), then optionally "; includeSubDomains" and "; preload" (each
 * once, any letter case, spaces around ';' allowed). Nothing else.
 */
bool is_valid_hsts(std::string_view value, std::string& why);

/** ASCII case-insensitive equality. */
bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace cbagate::config
