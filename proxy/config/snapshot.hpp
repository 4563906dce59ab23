#pragma once
// The immutable, typed result of loading a configuration file. Built once by config::load,
// shared as std::shared_ptr<const snapshot>; a reload builds a new one (STYLE.md 5.3).
// Every field maps to one row of the schema table (schema.cpp); names follow the TOML keys.
// operator== compares every field (a reload can tell which sections changed).
#include <chrono>
#include <map>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/cidr.hpp"

namespace cbagate::config {

using seconds_f = std::chrono::duration<double>;

/** `host:port`; host may be an IPv4 literal, a bracketed IPv6 literal or a name. */
struct endpoint {
  std::string host;
  std::uint16_t port = 0;

  bool operator==(const endpoint&) const = default;
};

enum class client_cert_mode { request, require };           // tls.client_cert
enum class route_cert_policy { require, optional, none };   // route.client_cert
enum class identity_mode { header, kerberos };              // identity.mode
enum class upn_mapping { realm, enterprise };               // kerberos.upn_to_principal
enum class revocation_mode { off, crl, ocsp, crl_and_ocsp }; // revocation.mode
enum class fail_mode { closed, open };                       // revocation.fail, route.revocation_fail
enum class mapping_mode { upn, directory };                  // auth.mapping
enum class directory_bind { sasl_gssapi, simple };           // directory.bind
enum class directory_tls { starttls, ldaps, none };          // directory.tls

struct sni_certificate {
  std::vector<std::string> server_names;  // exact names or "*.suffix"
  std::string certificate;                // absolute path
  std::string private_key;                // absolute path

  bool operator==(const sni_certificate&) const = default;
};

struct server_section {
  std::vector<endpoint> listen;           // server.listen
  unsigned threads = 0;                   // server.threads, 0 = one per core
  std::string admin_listen;               // server.admin_listen, "" = off
  bool proxy_protocol = false;            // server.proxy_protocol (PROXY v1/v2 from an L4 balancer)
  std::vector<cidr> proxy_protocol_from;  // server.proxy_protocol_from
  std::uint32_t max_connections = 0;      // server.max_connections, 0 = no limit
  std::uint32_t max_connections_per_address = 0;  // 0 = no limit
  std::uint32_t max_handshakes_per_address = 0;   // per second, 0 = no limit

  bool operator==(const server_section&) const = default;
};

/** The TLS 1.2 cipher list of Mozilla's "intermediate" profile without DHE: ECDHE key
 *  exchange and AEAD ciphers only (no CBC, so no LUCKY13 and no padding oracles). */
inline constexpr std::string_view default_tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
/** The TLS 1.3 suites (all three of RFC 8446 that OpenSSL enables). */
inline constexpr std::string_view default_tls13_suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
/** Key-exchange groups, in preference order. */
inline constexpr std::string_view default_tls_groups = "X25519:P-256:P-384";

/** tls.ocsp_stapling. */
enum class ocsp_stapling { auto_fetch, file, off };

struct tls_section {
  std::string certificate;                // absolute paths from here on
  std::string private_key;
  std::string client_ca;
  std::string client_intermediates;       // "" = none
  std::vector<std::string> crl;
  client_cert_mode client_cert = client_cert_mode::request;
  std::string min_version = "1.2";        // "1.2" or "1.3"
  // Mozilla's "intermediate" profile (issue 16): TLS 1.2 with ECDHE and AEAD only, TLS 1.3.
  std::string ciphers = std::string(default_tls12_ciphers);     // "" = OpenSSL default
  std::string ciphersuites = std::string(default_tls13_suites); // "" = OpenSSL default
  std::string groups = std::string(default_tls_groups);         // "" = OpenSSL default
  ocsp_stapling stapling = ocsp_stapling::auto_fetch;
  std::string ocsp_response;              // stapling == file: the DER OCSPResponse to staple
  bool session_tickets = true;
  seconds_f session_timeout{7200};
  std::string ticket_keys;                // shared key file, "" = per process
  seconds_f ticket_key_rotation{3600};    // without ticket_keys, with session_cache = 0
  std::size_t session_cache = 20000;      // sessions kept in memory; 0 = self-contained tickets
  unsigned verify_depth = 5;
  std::vector<sni_certificate> sni;       // [[tls.sni]]

  bool operator==(const tls_section&) const = default;
};

struct auth_section {
  bool upn_from_san = true;               // auth.upn_sources contains "san"
  bool upn_from_subject = false;          // auth.upn_sources contains "subject"
  bool upn_from_directory = false;        // auth.upn_sources contains "directory" (issue 12)
  std::size_t max_upn_length = 256;
  // Trust limits (issue 12, docs/directory.md).
  std::string issuing_cas;                // absolute path; "" = any issuer below client_ca
  std::vector<std::string> upn_suffixes;  // lower-case domains; empty = any
  std::vector<std::string> certificate_templates;  // OIDs or v1 names; empty = not checked
  mapping_mode mapping = mapping_mode::upn;

  bool operator==(const auth_section&) const = default;
};

struct limits_section {
  std::size_t max_request_header_bytes = 49152;
  std::size_t read_ahead_bytes = 49152;
  std::size_t max_header_fields = 100;
  std::size_t max_target_bytes = 16384;
  std::uint64_t max_body_bytes = 0;       // default for routes, 0 = no limit
  std::size_t max_response_header_bytes = 65536;

  bool operator==(const limits_section&) const = default;
};

struct timeouts_section {
  seconds_f handshake{10};
  seconds_f proxy_header{5};
  seconds_f request_header{30};
  seconds_f idle{120};                    // keep-alive idle between requests
  seconds_f upstream_connect{5};
  seconds_f upstream_response{120};       // default per-route response timeout
  seconds_f body_idle{60};                // no body byte in either direction for this long
  seconds_f drain{30};
  seconds_f drain_notice{0};              // /readyz 503 before the listeners close

  bool operator==(const timeouts_section&) const = default;
};

struct identity_section {
  identity_mode mode = identity_mode::header;
  std::string header = "X-Client-UPN";

  bool operator==(const identity_section&) const = default;
};

struct kerberos_section {
  std::string keytab;
  std::string principal;
  std::string target_spn;
  upn_mapping upn_to_principal = upn_mapping::realm;
  std::string krb5_config;                // "" = the environment's
  bool persistent_auth = true;            // no token on a backend connection kept authenticated

  bool operator==(const kerberos_section&) const = default;
};

// [directory]: certificate -> Active Directory account (auth.mapping = "directory").
struct directory_section {
  std::vector<std::string> uris;          // "ldap://host[:port]" / "ldaps://...", in failover order
  std::string base_dn;
  directory_bind bind = directory_bind::sasl_gssapi;
  std::string bind_dn;                    // simple bind
  std::string password_file;              // simple bind; absolute path
  std::string keytab;                     // sasl_gssapi; "" = kerberos.keytab
  directory_tls tls = directory_tls::starttls;
  std::string ca;                         // CA bundle for the directory's certificate; "" = system
  seconds_f timeout{5};
  seconds_f cache_ttl{300};
  seconds_f negative_ttl{60};
  std::size_t cache_max = 100000;
  bool ntauth = false;
  seconds_f ntauth_refresh{3600};
  std::size_t connections = 2;
  seconds_f lockout_duration{1800};

  bool operator==(const directory_section&) const = default;
};

struct upstream_server {
  std::string url;                        // as written
  bool tls = false;                       // https://
  std::string host;
  std::uint16_t port = 0;

  bool operator==(const upstream_server&) const = default;
};

struct upstream_section {
  std::vector<upstream_server> servers;
  std::string ca;                         // CA bundle for https:// upstreams, "" = system store
  std::string server_name;                // SNI/hostname to verify, "" = the URL's host
  std::size_t max_idle_per_server = 64;
  seconds_f idle_timeout{60};
  // Backend health (issue 13, upstream/health.hpp).
  std::string health_check;               // path of an active check ("/owa/healthcheck.htm"), "" = off
  seconds_f health_interval{10};
  seconds_f health_timeout{5};
  unsigned healthy_threshold = 2;         // passes in a row that bring a server back
  unsigned unhealthy_threshold = 2;       // failures in a row that eject it
  unsigned max_failures = 5;              // passive: 5xx or connect failures in a row; 0 = off
  seconds_f ejection_time{30};            // passive ejection without active checks lasts this long

  bool operator==(const upstream_section&) const = default;
};

struct access_log_section {
  std::string path = "-";                 // "-" = stdout, "" = off
  bool log_upn = true;

  bool operator==(const access_log_section&) const = default;
};

struct log_section {
  std::string level = "info";             // trace, debug, info, warn, error, critical, off
  std::string path = "-";                 // "-" = stderr

  bool operator==(const log_section&) const = default;
};

// [revocation] (docs/revocation.md). Durations are written "100ms", "5s", "5m", "1h" (or a
// number of seconds) and stored in seconds.
struct revocation_section {
  // Absent = derived (the "default mode" of docs/revocation.md): "crl", strict when tls.crl
  // is non-empty, else only for certificates that carry an http:// CDP.
  std::optional<revocation_mode> mode{};
  bool fetch_cdp = true;
  fail_mode fail = fail_mode::closed;
  std::string ocsp_responder;             // "" = the AIA OCSP URL of each certificate
  seconds_f timeout{5};
  std::uint64_t max_crl_bytes = 33554432;
  std::uint64_t max_ocsp_bytes = 65536;
  seconds_f refresh_ahead{300};
  seconds_f retry_after{30};
  seconds_f default_lifetime{3600};
  seconds_f max_clock_skew{300};
  std::size_t cache_max_crls = 64;
  std::size_t cache_max_ocsp = 100000;
  seconds_f watch_interval{2};            // 0 = no file watch

  bool operator==(const revocation_section&) const = default;
};

struct route {
  std::string prefix;                     // "/owa"; matched case-insensitively on whole segments
  route_cert_policy client_cert = route_cert_policy::require;
  std::uint64_t max_body_bytes = 0;       // 0 = limits.max_body_bytes
  seconds_f response_timeout{0};          // 0 = timeouts.upstream_response
  std::optional<fail_mode> revocation_fail{};  // absent = revocation.fail
  // "" = forward; else the prefix itself gets 302 to this location, paths under it 404 (issue 13).
  std::string redirect{};
  // Methods forwarded; others get 405 + Allow. Empty = the virtual directory's default
  // (routing/namespace.hpp: RPC_IN_DATA/RPC_OUT_DATA on /rpc, ...), none for other prefixes.
  std::vector<std::string> methods{};
  // Whether the client's Authorization reaches the backend (when no certificate identity is
  // forwarded). Absent = true on "none"/"optional" routes, false on "require" routes.
  std::optional<bool> pass_authorization{};
  std::string hsts{};                     // Strict-Transport-Security value, "" = none added

  bool operator==(const route&) const = default;
};

// [errors] (issue 13, http/error_pages.hpp): status -> page file, for cbagate's own answers.
struct errors_section {
  std::map<unsigned, std::string> pages;

  bool operator==(const errors_section&) const = default;
};

struct snapshot {
  std::string source;                     // path of the file this came from
  server_section server;
  tls_section tls;
  auth_section auth;
  limits_section limits;
  timeouts_section timeouts;
  identity_section identity;
  kerberos_section kerberos;              // meaningful when identity.mode == kerberos
  directory_section directory;            // meaningful when auth.mapping == directory
  revocation_section revocation;
  upstream_section upstream;
  access_log_section access_log;
  log_section log;
  std::vector<route> routes;              // [[route]], in file order
  errors_section errors;                  // [errors]: custom pages per status

  bool operator==(const snapshot&) const = default;
};

}  // namespace cbagate::config
