#include "config/schema.hpp"

#include "config/detail/cursor.hpp"
#include "config/validate.hpp"

#include <cstdint>
#include <limits>
#include <ostream>
#include <string>

namespace cbagate::config {
namespace {

using detail::cursor;

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t one_day = 86400;

constexpr std::string_view client_cert_modes[] = {"request", "require"};
constexpr std::string_view tls_versions[] = {"1.2", "1.3"};
constexpr std::string_view ocsp_stapling_modes[] = {"auto", "file", "off"};
constexpr std::string_view upn_source_names[] = {"san", "subject", "directory"};
constexpr std::string_view identity_modes[] = {"header", "kerberos"};
constexpr std::string_view upn_mappings[] = {"realm", "enterprise"};
constexpr std::string_view log_levels[] = {"trace", "debug", "info", "warn",
                                           "error", "critical", "off"};
constexpr std::string_view route_policies[] = {"require", "optional", "none"};
constexpr std::string_view revocation_modes[] = {"off", "crl", "ocsp", "crl+ocsp"};
constexpr std::string_view fail_modes[] = {"closed", "open"};
constexpr std::string_view mapping_modes[] = {"upn", "directory"};
constexpr std::string_view directory_binds[] = {"sasl_gssapi", "simple"};
constexpr std::string_view directory_tls_modes[] = {"starttls", "ldaps", "none"};

// `values` lists the enumerators in the order of the row's choices.
template <class E, std::size_t N>
E pick(const cursor& c, const E (&values)[N]) {
  return values[c.choice() < N ? c.choice() : 0];
}

void apply_upn_sources(cursor& c) {
  auto& auth = c.snap().auth;
  auth.upn_from_san = false;
  auth.upn_from_subject = false;
  auth.upn_from_directory = false;
  for (const std::size_t i : c.choice_list()) {
    (i == 0 ? auth.upn_from_san : i == 1 ? auth.upn_from_subject : auth.upn_from_directory) = true;
  }
}

void apply_sni_names(cursor& c) {
  auto names = c.sni_names();
  auto& sni = c.snap().tls.sni;
  // One name must select one certificate: no repeats, in this entry or an earlier one.
  for (std::size_t i = 0; i < names.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (iequals(names[i], names[j])) c.error("\"" + names[i] + "\" is listed twice");
    }
    for (std::size_t e = 0; e < c.index(); ++e) {
      for (const std::string& other : sni[e].server_names) {
        if (iequals(names[i], other)) {
          c.error("\"" + names[i] + "\" is already served by tls.sni[" + std::to_string(e) + "]");
        }
      }
    }
  }
  sni[c.index()].server_names = std::move(names);
}

void apply_route_prefix(cursor& c) {
  std::string prefix = c.route_prefix();
  if (prefix.empty()) return;
  auto& routes = c.snap().routes;
  // Matching is case-insensitive (IIS virtual directories), so "/OWA" and "/owa" collide.
  for (std::size_t i = 0; i < c.index(); ++i) {
    if (iequals(routes[i].prefix, prefix)) {
      const std::string other = "route[" + std::to_string(i) + "].prefix";
      const detail::position at = c.where_of(other);
      c.error("duplicate route prefix \"" + prefix + "\" (case-insensitive): same as " + other +
              (at.line ? " at line " + std::to_string(at.line) : std::string()));
      return;
    }
  }
  routes[c.index()].prefix = std::move(prefix);
}

// [errors]: one row per status cbagate answers itself (http/local_reply.cpp's table).
template <unsigned Status>
void apply_error_page(cursor& c) {
  c.snap().errors.pages[Status] = c.input_file();
}

constexpr std::string_view error_page_doc =
    "Custom page for this status, instead of the built-in text (cbagate's own answers only; "
    "a backend's pages pass unchanged). Read at start and reload, at most 64 KiB; .html/.htm "
    "is sent as text/html, others as text/plain. {{status}}, {{code}}, {{text}} and "
    "{{request_id}} are replaced; {{request_id}} is required.";
constexpr std::string_view error_page_constraint =
    "a readable file containing {{request_id}}; relative to this file's directory";

void apply_route_redirect(cursor& c) {
  const std::string& v = c.string();
  bool ok = v.empty() || (v.front() == '/' && !v.starts_with("//")) || v.starts_with("https://");
  for (const char ch : v)
    ok = ok && static_cast<unsigned char>(ch) > 0x20 && ch != 0x7f && ch != '\\';
  if (!ok) c.error("must be \"\", a path starting with \"/\" or an https:// URL, without spaces");
  c.snap().routes[c.index()].redirect = v;
}

void apply_proxy_protocol_from(cursor& c) {
  std::vector<cidr> out;
  for (std::size_t i = 0; i < c.items().size(); ++i) {
    const auto& e = c.items()[i];
    cidr range;
    if (!parse_cidr(e.text, range)) {
      c.error(e, i, "\"" + e.text + "\" is not an address range (\"10.0.0.0/8\", "
                    "\"2001:db8::/32\" or one address; no bits set past the prefix)");
      continue;
    }
    out.push_back(std::move(range));
  }
  c.snap().server.proxy_protocol_from = std::move(out);
}

void apply_route_methods(cursor& c) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < c.items().size(); ++i) {
    const auto& item = c.items()[i];
    std::string why;
    if (is_valid_route_method(item.text, why)) {
      out.push_back(item.text);
    } else {
      c.error(item, i, "bad method \"" + item.text + "\": " + why);
    }
  }
  c.snap().routes[c.index()].methods = std::move(out);
}

void apply_pass_authorization(cursor& c) {
  auto& r = c.snap().routes[c.index()];
  // Rows apply in table order: route.client_cert is already set. A require route always
  // forwards a certificate identity, and a client's own credentials must never travel beside
  // it (the backend could prefer them): there Authorization is always removed.
  if (c.boolean() && r.client_cert == route_cert_policy::require) {
    c.error("cannot be true on a client_cert = \"require\" route: Authorization is always "
            "removed where a certificate identity is forwarded");
    return;
  }
  r.pass_authorization = c.boolean();
}

bool kerberos_mode(cursor& c) { return c.snap().identity.mode == identity_mode::kerberos; }
bool directory_mode(cursor& c) { return c.snap().auth.mapping == mapping_mode::directory; }

void apply_upn_suffixes(cursor& c) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < c.items().size(); ++i) {
    std::string why;
    const std::string& text = c.items()[i].text;
    if (!is_valid_upn_suffix(text, why)) {
      c.error(c.items()[i], i, "bad UPN suffix \"" + text + "\": " + why);
      continue;
    }
    std::string lower = text;
    for (char& ch : lower)
      if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
    for (const std::string& earlier : out)
      if (earlier == lower) c.error(c.items()[i], i, "\"" + text + "\" is listed twice");
    out.push_back(std::move(lower));
  }
  c.snap().auth.upn_suffixes = std::move(out);
}

void apply_templates(cursor& c) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < c.items().size(); ++i) {
    std::string why;
    if (!is_valid_template(c.items()[i].text, why)) {
      c.error(c.items()[i], i, "bad template: " + why);
      continue;
    }
    out.push_back(c.items()[i].text);
  }
  c.snap().auth.certificate_templates = std::move(out);
}

void apply_directory_uris(cursor& c) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < c.items().size(); ++i) {
    std::string why;
    if (!parse_ldap_uri(c.items()[i].text, why)) {
      c.error(c.items()[i], i, "bad directory URI \"" + c.items()[i].text + "\": " + why);
      continue;
    }
    out.push_back(c.items()[i].text);
  }
  c.snap().directory.uris = std::move(out);
}

// directory.tls; its consistency with directory.uris is checked once every key is read
// (load.cpp, check_directory): the tls key may be absent.
void apply_directory_tls(cursor& c) {
  c.snap().directory.tls =
      pick(c, {directory_tls::starttls, directory_tls::ldaps, directory_tls::none});
}

// A bind password is a secret: refused when group or others may access it (issue 16's one
// check, config::secret_file_problem).
void apply_password_file(cursor& c) {
  c.snap().directory.password_file = c.secret_file(directory_mode(c));
}

constexpr std::string_view file_constraint = "a readable file; relative to this file's directory";
// Rows that name a secret (cursor::secret_file): also no permission for group or others.
constexpr std::string_view secret_constraint =
    "a readable file, mode without group or other bits (e.g. 0600); relative to this file's "
    "directory";

// The schema. Order: parents before children; identity before kerberos (kerberos keys depend on
// identity.mode); the same order as config/cbagate.toml.
constexpr schema_row rows[] = {
    // ---------------------------------------------------------------- [server]
    {.key = "server", .kind = value_kind::table,
     .doc = "Listeners and process-wide connection settings."},
    {.key = "server.listen", .kind = value_kind::string_array, .need = presence::required,
     .constraint = "each \"host:port\" or \"[v6]:port\", port 0..65535",
     .doc = "Addresses to accept TLS connections on. The host is an IPv4 literal, a bracketed IPv6 "
            "literal or a name (0.0.0.0 / [::] = every address); port 0 takes any free port.",
     .min = 1,
     .apply = [](cursor& c) { c.snap().server.listen = c.endpoints(); }},
    {.key = "server.threads", .kind = value_kind::integer, .default_text = "0",
     .doc = "I/O threads; 0 = one per CPU core.",
     .min = 0, .max = 1024,
     .apply = [](cursor& c) { c.snap().server.threads = c.integer<unsigned>(); }},
    {.key = "server.admin_listen", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or \"host:port\"",
     .doc = "Plain-HTTP listener for /healthz, /readyz and /metrics; keep it on loopback or a "
            "management network. \"\" = off.",
     .apply = [](cursor& c) { c.snap().server.admin_listen = c.endpoint_or_empty(); }},
    {.key = "server.proxy_protocol_from", .kind = value_kind::string_array, .default_text = "[]",
     .constraint = "each \"address/prefix\" or one address (IPv4 or IPv6); required with "
                   "server.proxy_protocol = true",
     .doc = "The L4 balancers allowed to send a PROXY header. With server.proxy_protocol = "
            "true a connection from any other address is closed before a byte is read.",
     .apply = apply_proxy_protocol_from},
    {.key = "server.proxy_protocol", .kind = value_kind::boolean, .default_text = "false",
     .doc = "Expect a PROXY protocol header (v1 or v2, HAProxy's send-proxy / send-proxy-v2) on "
            "every connection from server.proxy_protocol_from; the client address then comes "
            "from it (access log, X-Forwarded-For, per-address limits). LOCAL headers (balancer "
            "health checks) are accepted; a missing, malformed or oversized header closes the "
            "connection.",
     .apply = [](cursor& c) {
       c.snap().server.proxy_protocol = c.boolean();
       if (c.boolean() && c.snap().server.proxy_protocol_from.empty())
         c.error("true needs server.proxy_protocol_from (the balancers' addresses): a PROXY "
                 "header from anyone would let any client choose its address");
     }},
    {.key = "server.max_connections", .kind = value_kind::integer, .default_text = "0",
     .doc = "Open client connections at most; 0 = no limit.",
     .min = 0, .max = 10'000'000,
     .apply = [](cursor& c) { c.snap().server.max_connections = c.integer<std::uint32_t>(); }},
    {.key = "server.max_connections_per_address", .kind = value_kind::integer,
     .default_text = "0",
     .doc = "Open connections at most from one client address (after the PROXY header); more are "
            "closed before the TLS handshake. 0 = no limit.",
     .min = 0, .max = 10'000'000,
     .apply = [](cursor& c) {
       c.snap().server.max_connections_per_address = c.integer<std::uint32_t>();
     }},
    {.key = "server.max_handshakes_per_address", .kind = value_kind::integer,
     .default_text = "0",
     .doc = "New connections (TLS handshakes) per second at most from one client address (after "
            "the PROXY header), with a burst of as many; more are closed before the handshake. "
            "0 = no limit.",
     .min = 0, .max = 10'000'000,
     .apply = [](cursor& c) {
       c.snap().server.max_handshakes_per_address = c.integer<std::uint32_t>();
     }},

    // ---------------------------------------------------------------- [tls]
    {.key = "tls", .kind = value_kind::table,
     .doc = "The TLS server side: certificates, client-certificate trust, protocol settings."},
    {.key = "tls.certificate", .kind = value_kind::string, .need = presence::required,
     .constraint = file_constraint,
     .doc = "Server certificate chain (PEM): the leaf first, then its intermediates.",
     .apply = [](cursor& c) { c.snap().tls.certificate = c.input_file(); }},
    {.key = "tls.private_key", .kind = value_kind::string, .need = presence::required,
     .constraint = secret_constraint,
     .doc = "Private key of tls.certificate (PEM). Refused unless readable by its owner only "
            "(no permission for group or others, as ssh requires: chmod 600).",
     .apply = [](cursor& c) { c.snap().tls.private_key = c.secret_file(); }},
    {.key = "tls.client_ca", .kind = value_kind::string, .need = presence::required,
     .constraint = file_constraint,
     .doc = "Trust anchors for client certificates (PEM bundle), the analogue of Active "
            "Directory's NTAuth store: only chains ending at one of these are accepted.",
     .apply = [](cursor& c) { c.snap().tls.client_ca = c.input_file(); }},
    {.key = "tls.client_intermediates", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file",
     .doc = "Extra intermediate CA certificates (PEM) for building client chains when clients "
            "send only their leaf; never trusted as anchors. \"\" = none.",
     .apply = [](cursor& c) { c.snap().tls.client_intermediates = c.input_file(); }},
    {.key = "tls.crl", .kind = value_kind::string_array, .default_text = "[]",
     .constraint = "each a readable file",
     .doc = "Certificate revocation lists (PEM or DER files) of the client CAs; a revoked "
            "client certificate gets 403.13.",
     .apply = [](cursor& c) { c.snap().tls.crl = c.input_files(); }},
    {.key = "tls.client_cert", .kind = value_kind::string, .default_text = "\"request\"",
     .doc = "\"request\": every client is asked for a certificate and each route decides; "
            "\"require\": the handshake fails without a valid one (no public routes then).",
     .choices = client_cert_modes,
     .apply = [](cursor& c) {
       c.snap().tls.client_cert = pick(c, {client_cert_mode::request, client_cert_mode::require});
     }},
    {.key = "tls.min_version", .kind = value_kind::string, .default_text = "\"1.2\"",
     .doc = "Lowest TLS version accepted.",
     .choices = tls_versions,
     .apply = [](cursor& c) { c.snap().tls.min_version = c.string(); }},
    {.key = "tls.ciphers", .kind = value_kind::string,
     .default_text = "\"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                     "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                     "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305\"",
     .constraint = "OpenSSL cipher-list syntax",
     .doc = "TLS 1.2 cipher list. The default is Mozilla's \"intermediate\" profile without "
            "DHE: ECDHE key exchange with AEAD ciphers only (no CBC: no LUCKY13, no padding "
            "oracle); \"\" = OpenSSL's default, which adds CBC and RSA key exchange.",
     .apply = [](cursor& c) { c.snap().tls.ciphers = c.string(); }},
    {.key = "tls.ciphersuites", .kind = value_kind::string,
     .default_text = "\"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256\"",
     .constraint = "OpenSSL ciphersuites syntax",
     .doc = "TLS 1.3 cipher suites; \"\" = OpenSSL's default.",
     .apply = [](cursor& c) { c.snap().tls.ciphersuites = c.string(); }},
    {.key = "tls.groups", .kind = value_kind::string, .default_text = "\"X25519:P-256:P-384\"",
     .constraint = "OpenSSL groups-list syntax",
     .doc = "Key-exchange groups (elliptic curves) for ECDHE, in preference order; "
            "\"\" = OpenSSL's default (which adds P-521 and finite-field groups).",
     .apply = [](cursor& c) { c.snap().tls.groups = c.string(); }},
    {.key = "tls.ocsp_response", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file; required with ocsp_stapling = \"file\"",
     .doc = "With tls.ocsp_stapling = \"file\": the DER OCSP response for tls.certificate "
            "to staple, kept fresh by someone else (re-read on reload).",
     .apply = [](cursor& c) { c.snap().tls.ocsp_response = c.input_file(); }},
    {.key = "tls.ocsp_stapling", .kind = value_kind::string, .default_text = "\"auto\"",
     .doc = "OCSP stapling of the server certificates (RFC 6066 status_request): \"auto\" = "
            "fetched from the responder in each certificate's AIA on the revocation fetch "
            "thread, refreshed before its nextUpdate, the last good response kept while the "
            "responder is down (a certificate without an OCSP URL is served without one); "
            "\"file\" = tls.ocsp_response for tls.certificate; \"off\" = none.",
     .choices = ocsp_stapling_modes,
     .apply = [](cursor& c) {
       c.snap().tls.stapling =
           pick(c, {ocsp_stapling::auto_fetch, ocsp_stapling::file, ocsp_stapling::off});
       if (c.snap().tls.stapling == ocsp_stapling::file && c.snap().tls.ocsp_response.empty())
         c.error("\"file\" needs tls.ocsp_response (the DER OCSP response to staple)");
     }},
    {.key = "tls.session_tickets", .kind = value_kind::boolean, .default_text = "true",
     .doc = "Issue session tickets so clients can resume sessions without a full handshake.",
     .apply = [](cursor& c) { c.snap().tls.session_tickets = c.boolean(); }},
    {.key = "tls.session_timeout", .kind = value_kind::seconds, .default_text = "7200",
     .doc = "How long a TLS session may be resumed, in seconds.",
     .max = 7 * one_day,
     .apply = [](cursor& c) { c.snap().tls.session_timeout = c.seconds(); }},
    {.key = "tls.ticket_keys", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file, mode without group or other bits (e.g. 0600)",
     .doc = "Session-ticket key file shared by several instances (cbagate --new-ticket-keys FILE "
            "writes one): one key per line, the first encrypts new tickets, all decrypt. Read "
            "again on SIGHUP and when the file changes. \"\" = keys of this process only, "
            "random, rotated every tls.ticket_key_rotation (with tls.session_cache = 0; by "
            "default sessions stay in memory, tls.session_cache).",
     .apply = [](cursor& c) { c.snap().tls.ticket_keys = c.secret_file(); }},
    {.key = "tls.ticket_key_rotation", .kind = value_kind::duration, .default_text = "\"1h\"",
     .doc = "Without tls.ticket_keys and with tls.session_cache = 0: a new random key encrypts "
            "tickets this often; older keys still decrypt for tls.session_timeout.",
     .max = 7 * one_day,
     .apply = [](cursor& c) { c.snap().tls.ticket_key_rotation = c.seconds(); }},
    {.key = "tls.session_cache", .kind = value_kind::integer, .default_text = "20000",
     .doc = "Without tls.ticket_keys: how many resumable sessions this process keeps in memory "
            "(the least recently used makes room); a device holds only a reference to its "
            "session, which is never serialized, so resuming does not parse its certificate "
            "again. 0 = self-contained tickets under process-local keys "
            "(tls.ticket_key_rotation). Unused with tls.ticket_keys (tickets every instance "
            "opens) or tls.session_tickets = false.",
     .min = 0, .max = 10000000,
     .apply = [](cursor& c) { c.snap().tls.session_cache = c.integer<std::size_t>(); }},
    {.key = "tls.verify_depth", .kind = value_kind::integer, .default_text = "5",
     .doc = "Most intermediate CA certificates allowed in a client chain.",
     .min = 1, .max = 32,
     .apply = [](cursor& c) { c.snap().tls.verify_depth = c.integer<unsigned>(); }},
    {.key = "tls.sni", .kind = value_kind::table_array,
     .doc = "Extra server certificates chosen by the SNI server name ([[tls.sni]]); "
            "tls.certificate serves every other name.",
     .apply = [](cursor& c) { c.snap().tls.sni.resize(c.count()); }},
    {.key = "tls.sni.server_names", .kind = value_kind::string_array, .need = presence::required,
     .constraint = "each a DNS name or \"*.suffix\"; unique across entries (case-insensitive)",
     .doc = "Server names this certificate serves.",
     .min = 1,
     .apply = apply_sni_names},
    {.key = "tls.sni.certificate", .kind = value_kind::string, .need = presence::required,
     .constraint = file_constraint,
     .doc = "Certificate chain (PEM) for these names, leaf first.",
     .apply = [](cursor& c) { c.snap().tls.sni[c.index()].certificate = c.input_file(); }},
    {.key = "tls.sni.private_key", .kind = value_kind::string, .need = presence::required,
     .constraint = secret_constraint,
     .doc = "Private key (PEM) of this certificate; owner-only permissions, like tls.private_key.",
     .apply = [](cursor& c) { c.snap().tls.sni[c.index()].private_key = c.secret_file(); }},

    // ---------------------------------------------------------------- [revocation]
    {.key = "revocation", .kind = value_kind::table,
     .doc = "Revocation status of client certificates (CRL files, CRL Distribution Points, "
            "OCSP), checked at every request on a certificate route; see docs/revocation.md."},
    {.key = "revocation.mode", .kind = value_kind::string,
     .constraint = "absent: \"crl\" for every certificate when tls.crl is non-empty, else "
                   "\"crl\" only for certificates with an http:// CDP",
     .doc = "Which sources establish the status: \"off\", \"crl\" (tls.crl files and CDP "
            "downloads), \"ocsp\", \"crl+ocsp\" (revoked if any says so). Written explicitly, "
            "every certificate of the chain but the anchor needs a status.",
     .choices = revocation_modes,
     .apply = [](cursor& c) {
       c.snap().revocation.mode =
           pick(c, {revocation_mode::off, revocation_mode::crl, revocation_mode::ocsp,
                    revocation_mode::crl_and_ocsp});
     }},
    {.key = "revocation.fetch_cdp", .kind = value_kind::boolean, .default_text = "true",
     .doc = "Download CRLs from the http:// CRL Distribution Points of certificates.",
     .apply = [](cursor& c) { c.snap().revocation.fetch_cdp = c.boolean(); }},
    {.key = "revocation.fail", .kind = value_kind::string, .default_text = "\"closed\"",
     .doc = "When the status cannot be established: \"closed\" = 403.13; \"open\" = allowed, "
            "logged and counted. A route may override it (route.revocation_fail).",
     .choices = fail_modes,
     .apply = [](cursor& c) {
       c.snap().revocation.fail = pick(c, {fail_mode::closed, fail_mode::open});
     }},
    {.key = "revocation.ocsp_responder", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or an http:// URL",
     .doc = "OCSP responder asked for every certificate; \"\" = the AIA OCSP URL of each "
            "certificate.",
     .apply = [](cursor& c) {
       std::string why;
       if (!c.string().empty() && !is_valid_http_fetch_url(c.string(), why)) {
         c.error(why);
         return;
       }
       c.snap().revocation.ocsp_responder = c.string();
     }},
    {.key = "revocation.timeout", .kind = value_kind::duration, .default_text = "\"5s\"",
     .doc = "Deadline of one CRL download or OCSP exchange (connect, send, receive); also the "
            "longest a request waits for a first answer.",
     .max = 3600,
     .apply = [](cursor& c) { c.snap().revocation.timeout = c.seconds(); }},
    {.key = "revocation.max_crl_bytes", .kind = value_kind::integer,
     .default_text = "33554432",
     .doc = "A larger CRL download is abandoned.",
     .min = 1, .max = std::int64_t{1} << 32,
     .apply = [](cursor& c) { c.snap().revocation.max_crl_bytes = c.integer<std::uint64_t>(); }},
    {.key = "revocation.max_ocsp_bytes", .kind = value_kind::integer, .default_text = "65536",
     .doc = "A larger OCSP response is abandoned.",
     .min = 1, .max = 16 << 20,
     .apply = [](cursor& c) {
       c.snap().revocation.max_ocsp_bytes = c.integer<std::uint64_t>();
     }},
    {.key = "revocation.refresh_ahead", .kind = value_kind::duration, .default_text = "\"5m\"",
     .doc = "Re-download a CDP CRL, or ask OCSP again, this long before its nextUpdate (in the "
            "background; the old answer serves meanwhile).",
     .max = 7 * one_day,
     .apply = [](cursor& c) { c.snap().revocation.refresh_ahead = c.seconds(); }},
    {.key = "revocation.retry_after", .kind = value_kind::duration, .default_text = "\"30s\"",
     .doc = "After a failed download or exchange, the URL is not tried again before this (the "
            "status stays unknown meanwhile: the fail mode decides).",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().revocation.retry_after = c.seconds(); }},
    {.key = "revocation.default_lifetime", .kind = value_kind::duration,
     .default_text = "\"1h\"",
     .doc = "How long a CRL or OCSP answer without nextUpdate is cached.",
     .max = 7 * one_day,
     .apply = [](cursor& c) { c.snap().revocation.default_lifetime = c.seconds(); }},
    {.key = "revocation.max_clock_skew", .kind = value_kind::duration,
     .default_text = "\"5m\"",
     .doc = "Leeway on the thisUpdate and nextUpdate checks of CRLs and OCSP answers.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().revocation.max_clock_skew = c.seconds(); }},
    {.key = "revocation.cache_max_crls", .kind = value_kind::integer, .default_text = "64",
     .doc = "CDP CRLs kept in memory (least recently used evicted; tls.crl files not counted).",
     .min = 1, .max = 1'000'000,
     .apply = [](cursor& c) { c.snap().revocation.cache_max_crls = c.integer<std::size_t>(); }},
    {.key = "revocation.cache_max_ocsp", .kind = value_kind::integer, .default_text = "100000",
     .doc = "OCSP answers kept in memory (least recently used evicted).",
     .min = 1, .max = 100'000'000,
     .apply = [](cursor& c) { c.snap().revocation.cache_max_ocsp = c.integer<std::size_t>(); }},
    {.key = "revocation.watch_interval", .kind = value_kind::duration_or_zero,
     .default_text = "\"2s\"",
     .doc = "How often the files of [tls] (certificates, keys, client CAs, intermediates, CRLs, "
            "[[tls.sni]]) are checked for changes; a change reloads like SIGHUP. \"0s\" = no "
            "watch.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().revocation.watch_interval = c.seconds(); }},

    // ---------------------------------------------------------------- [auth]
    {.key = "auth", .kind = value_kind::table,
     .doc = "How a client certificate becomes a user principal name (UPN)."},
    {.key = "auth.upn_sources", .kind = value_kind::string_array, .default_text = "[\"san\"]",
     .doc = "Where the UPN may come from: \"san\" = the SAN otherName 1.3.6.1.4.1.311.20.2.3 (as "
            "AD certificate mapping does); \"subject\" = the subject CN when it has the form "
            "user@domain; \"directory\" (needs auth.mapping = \"directory\"): a certificate "
            "without a UPN from the sources before it is located by its strong "
            "altSecurityIdentities strings, and the account's userPrincipalName is the user. "
            "Tried in the order san, subject, directory.",
     .min = 1, .choices = upn_source_names,
     .apply = apply_upn_sources},
    {.key = "auth.max_upn_length", .kind = value_kind::integer, .default_text = "256",
     .doc = "Longest UPN accepted, in bytes; a longer one is rejected.",
     .min = 1, .max = 1024,
     .apply = [](cursor& c) { c.snap().auth.max_upn_length = c.integer<std::size_t>(); }},
    {.key = "auth.issuing_cas", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file of CA certificates",
     .doc = "The issuing CAs allowed to issue logon certificates (PEM), the meaning of AD's "
            "NTAuth store: the client certificate's direct issuer must be one of them, whatever "
            "root of tls.client_ca the chain reaches; else 403.12 (issuer_not_allowed). They "
            "also help build chains, never as anchors. \"\" = any issuer below tls.client_ca.",
     .apply = [](cursor& c) { c.snap().auth.issuing_cas = c.input_file(); }},
    {.key = "auth.upn_suffixes", .kind = value_kind::string_array, .default_text = "[]",
     .constraint = "each a domain name without '@'",
     .doc = "UPN suffixes (domains after '@') accepted, compared case-insensitively, no "
            "subdomains: like AD's list of UPN suffixes. A UPN outside the list gets 403.12 "
            "(upn_suffix_not_allowed). [] = any.",
     .apply = apply_upn_suffixes},
    {.key = "auth.certificate_templates", .kind = value_kind::string_array, .default_text = "[]",
     .constraint = "each a dotted OID or a template name",
     .doc = "AD CS certificate templates accepted: a dotted OID matches the template extension "
            "1.3.6.1.4.1.311.21.7 (v2 templates), a name matches the v1 template name extension "
            "1.3.6.1.4.1.311.20.2 (case-insensitive). A certificate with none of them gets 403.12 "
            "(template_not_allowed). [] = not checked.",
     .apply = apply_templates},
    {.key = "auth.mapping", .kind = value_kind::string, .default_text = "\"upn\"",
     .doc = "\"upn\": the certificate's UPN is the user (no directory). \"directory\": as a "
            "domain controller under KB5014754 full enforcement: the UPN only locates the "
            "account in [directory], which must be strongly bound to the certificate "
            "(altSecurityIdentities <I><SR>, <SKI> or <SHA1-PUKEY>, or the SID extension equal "
            "to objectSid) and enabled, unlocked and unexpired; else 403.12 with the reason "
            "(docs/directory.md).",
     .choices = mapping_modes,
     .apply = [](cursor& c) {
       c.snap().auth.mapping = pick(c, {mapping_mode::upn, mapping_mode::directory});
     }},

    // ---------------------------------------------------------------- [limits]
    {.key = "limits", .kind = value_kind::table,
     .doc = "Size limits of requests and responses (bytes unless stated)."},
    {.key = "limits.max_request_header_bytes", .kind = value_kind::integer,
     .default_text = "49152",
     .doc = "Request line plus header fields; over it the client gets 431 and nothing is "
            "forwarded.",
     .min = 1024, .max = 1 << 20,
     .apply = [](cursor& c) {
       c.snap().limits.max_request_header_bytes = c.integer<std::size_t>();
     }},
    {.key = "limits.read_ahead_bytes", .kind = value_kind::integer, .default_text = "49152",
     .doc = "Request body buffered while the upstream is not ready yet (connecting, Kerberos), "
            "the analogue of IIS uploadReadAheadSize; then reading pauses (backpressure, not 413).",
     .min = 0, .max = 64 << 20,
     .apply = [](cursor& c) { c.snap().limits.read_ahead_bytes = c.integer<std::size_t>(); }},
    {.key = "limits.max_header_fields", .kind = value_kind::integer, .default_text = "100",
     .doc = "Most header fields in a request; over it: 431.",
     .min = 1, .max = 10000,
     .apply = [](cursor& c) { c.snap().limits.max_header_fields = c.integer<std::size_t>(); }},
    {.key = "limits.max_target_bytes", .kind = value_kind::integer, .default_text = "16384",
     .doc = "Longest request target (path and query); over it: 414.",
     .min = 16, .max = 1 << 20,
     .apply = [](cursor& c) { c.snap().limits.max_target_bytes = c.integer<std::size_t>(); }},
    {.key = "limits.max_body_bytes", .kind = value_kind::integer, .default_text = "0",
     .doc = "Largest request body for routes without their own max_body_bytes; over it: 413. "
            "0 = no limit.",
     .min = 0, .max = int64_max,
     .apply = [](cursor& c) { c.snap().limits.max_body_bytes = c.integer<std::uint64_t>(); }},
    {.key = "limits.max_response_header_bytes", .kind = value_kind::integer,
     .default_text = "65536",
     .doc = "Largest response header accepted from the upstream; over it: 502.",
     .min = 1024, .max = 1 << 20,
     .apply = [](cursor& c) {
       c.snap().limits.max_response_header_bytes = c.integer<std::size_t>();
     }},

    // ---------------------------------------------------------------- [timeouts]
    {.key = "timeouts", .kind = value_kind::table,
     .doc = "Deadlines, in seconds (an integer or a float such as 0.5)."},
    {.key = "timeouts.handshake", .kind = value_kind::seconds, .default_text = "10",
     .doc = "TCP accept to the end of the TLS handshake (PROXY header included).",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.handshake = c.seconds(); }},
    {.key = "timeouts.proxy_header", .kind = value_kind::seconds, .default_text = "5",
     .doc = "With server.proxy_protocol: the PROXY header must arrive within this many seconds "
            "of the connection (at least 3 covers a TCP retransmit).",
     .max = 3600,
     .apply = [](cursor& c) { c.snap().timeouts.proxy_header = c.seconds(); }},
    {.key = "timeouts.request_header", .kind = value_kind::seconds, .default_text = "30",
     .doc = "Reading one complete request header (slow-loris protection).",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.request_header = c.seconds(); }},
    {.key = "timeouts.idle", .kind = value_kind::seconds, .default_text = "120",
     .doc = "Keep-alive: how long a client connection may sit idle between requests.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.idle = c.seconds(); }},
    {.key = "timeouts.upstream_connect", .kind = value_kind::seconds, .default_text = "5",
     .doc = "Connecting to an upstream server (TCP and TLS).",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.upstream_connect = c.seconds(); }},
    {.key = "timeouts.upstream_response", .kind = value_kind::seconds, .default_text = "120",
     .doc = "Waiting for the upstream's response header, for routes without their own "
            "response_timeout.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.upstream_response = c.seconds(); }},
    {.key = "timeouts.body_idle", .kind = value_kind::seconds, .default_text = "60",
     .doc = "A body transfer with no byte in either direction for this long is aborted.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.body_idle = c.seconds(); }},
    {.key = "timeouts.drain", .kind = value_kind::seconds, .default_text = "30",
     .doc = "On shutdown, how long requests in flight may still finish.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().timeouts.drain = c.seconds(); }},
    {.key = "timeouts.drain_notice", .kind = value_kind::seconds_or_zero, .default_text = "0",
     .doc = "On SIGTERM, /readyz answers 503 this many seconds before the listeners close, so "
            "a balancer's health check takes the instance out before it refuses a connection "
            "(behind HAProxy: more than its check interval times fall). 0 = close at once.",
     .max = 3600,
     .apply = [](cursor& c) { c.snap().timeouts.drain_notice = c.seconds(); }},

    // ---------------------------------------------------------------- [identity]
    {.key = "identity", .kind = value_kind::table,
     .doc = "How the backend learns who the user is."},
    {.key = "identity.mode", .kind = value_kind::string, .default_text = "\"header\"",
     .doc = "\"header\": identity.header carries the UPN (the backend must trust the proxy); "
            "\"kerberos\": Authorization: Negotiate from S4U2Self + S4U2Proxy (see [kerberos]), "
            "for an unmodified Exchange.",
     .choices = identity_modes,
     .apply = [](cursor& c) {
       c.snap().identity.mode = pick(c, {identity_mode::header, identity_mode::kerberos});
     }},
    {.key = "identity.header", .kind = value_kind::string, .default_text = "\"X-Client-UPN\"",
     .constraint = "an HTTP field name; not a framing, hop-by-hop, credential or proxy-set field",
     .doc = "Request header with the UPN in header mode. Client-sent copies are removed on "
            "every route, in both modes.",
     .apply = [](cursor& c) { c.snap().identity.header = c.header_name(); }},

    // ---------------------------------------------------------------- [kerberos]
    {.key = "kerberos", .kind = value_kind::table,
     .doc = "Kerberos constrained delegation; used (and required) when identity.mode = "
            "\"kerberos\"."},
    {.key = "kerberos.keytab", .kind = value_kind::string, .need = presence::kerberos,
     .constraint = secret_constraint,
     .doc = "Keytab with the key of kerberos.principal; refused unless readable by its owner only "
            "(chmod 600).",
     .apply = [](cursor& c) { c.snap().kerberos.keytab = c.secret_file(kerberos_mode(c)); }},
    {.key = "kerberos.principal", .kind = value_kind::string, .need = presence::kerberos,
     .constraint = "no spaces",
     .doc = "The proxy's service principal as in the keytab (HTTP/cbagate.corp.example.com@"
            "CORP.EXAMPLE.COM); its account needs constrained delegation to target_spn with "
            "protocol transition.",
     .apply = [](cursor& c) { c.snap().kerberos.principal = c.no_spaces(); }},
    {.key = "kerberos.target_spn", .kind = value_kind::string, .need = presence::kerberos,
     .constraint = "no spaces",
     .doc = "Service principal of the Exchange backend that tickets are requested for "
            "(HTTP/exchange.corp.example.com).",
     .apply = [](cursor& c) { c.snap().kerberos.target_spn = c.no_spaces(); }},
    {.key = "kerberos.upn_to_principal", .kind = value_kind::string,
     .default_text = "\"realm\"",
     .doc = "How a UPN names the user for S4U2Self: \"realm\" = its domain upper-cased is the "
            "realm (alice@corp.example.com -> alice@CORP.EXAMPLE.COM); \"enterprise\" = the UPN "
            "is an enterprise principal name that the KDC resolves (UPN suffixes other than the "
            "realm).",
     .choices = upn_mappings,
     .apply = [](cursor& c) {
       c.snap().kerberos.upn_to_principal = pick(c, {upn_mapping::realm, upn_mapping::enterprise});
     }},
    {.key = "kerberos.krb5_config", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file",
     .doc = "krb5.conf to use; \"\" = the environment's (KRB5_CONFIG or /etc/krb5.conf).",
     .apply = [](cursor& c) { c.snap().kerberos.krb5_config = c.input_file(kerberos_mode(c)); }},
    {.key = "kerberos.persistent_auth", .kind = value_kind::boolean, .default_text = "true",
     .doc = "Session-based Kerberos, as Windows clients do with IIS (authPersistNonNTLM): a "
            "backend connection that answered the user's token with Persistent-Auth: true "
            "carries that user's later requests without a new token while the user's delegated "
            "credential is cached (backend connections are per user in this mode). A request "
            "sent so is one whose body is already at hand; a 401 to it is answered by sending it "
            "again with a token, never passed on. false = a token on every request.",
     .apply = [](cursor& c) { c.snap().kerberos.persistent_auth = c.boolean(); }},

    // ---------------------------------------------------------------- [directory]
    {.key = "directory", .kind = value_kind::table,
     .doc = "The Active Directory domain controllers that auth.mapping = \"directory\" asks "
            "(LDAP); required and used only in that mode. See docs/directory.md."},
    {.key = "directory.uris", .kind = value_kind::string_array, .need = presence::directory,
     .constraint = "each \"ldap://host[:port]\" or \"ldaps://host[:port]\"",
     .doc = "Domain controllers, tried in this order (the next one when a connection, bind or "
            "search fails). Use the DCs' DNS names: SASL GSSAPI asks for ldap/<host>.",
     .min = 1,
     .apply = apply_directory_uris},
    {.key = "directory.base_dn", .kind = value_kind::string, .need = presence::directory,
     .constraint = "a DN; no control characters",
     .doc = "Where accounts are searched (subtree): the domain's naming context, "
            "\"DC=corp,DC=example,DC=com\".",
     .apply = [](cursor& c) {
       if (c.string().empty() && directory_mode(c)) c.error("must not be empty");
       c.snap().directory.base_dn = c.string();
     }},
    {.key = "directory.bind", .kind = value_kind::string, .default_text = "\"sasl_gssapi\"",
     .doc = "\"sasl_gssapi\": Kerberos with the proxy's keytab (directory.keytab, no kinit); "
            "\"simple\": bind_dn with the password in password_file.",
     .choices = directory_binds,
     .apply = [](cursor& c) {
       c.snap().directory.bind = pick(c, {directory_bind::sasl_gssapi, directory_bind::simple});
     }},
    {.key = "directory.bind_dn", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "required with bind = \"simple\"",
     .doc = "The read-only service account of a simple bind.",
     .apply = [](cursor& c) { c.snap().directory.bind_dn = c.string(); }},
    {.key = "directory.password_file", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "required with bind = \"simple\"; a readable file, no access for group or others",
     .doc = "File holding bind_dn's password (one line; a trailing newline is ignored). Refused "
            "when group or others may access it (chmod 600).",
     .apply = apply_password_file},
    {.key = "directory.keytab", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file",
     .doc = "Keytab of a SASL GSSAPI bind (its first principal binds); \"\" = kerberos.keytab.",
     .apply = [](cursor& c) { c.snap().directory.keytab = c.secret_file(directory_mode(c)); }},
    {.key = "directory.tls", .kind = value_kind::string, .default_text = "\"starttls\"",
     .constraint = "\"none\" only for loopback IP literals; \"ldaps\" with ldaps:// URIs",
     .doc = "\"starttls\" (ldap:// then StartTLS), \"ldaps\" (TLS from the start), \"none\" "
            "(tests on loopback only). The DC's certificate is verified against directory.ca "
            "and its host name.",
     .choices = directory_tls_modes,
     .apply = apply_directory_tls},
    {.key = "directory.ca", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file",
     .doc = "CA bundle (PEM) that verifies the DCs' certificates; \"\" = the system store.",
     .apply = [](cursor& c) { c.snap().directory.ca = c.input_file(directory_mode(c)); }},
    {.key = "directory.timeout", .kind = value_kind::duration, .default_text = "\"5s\"",
     .doc = "Deadline of one lookup (connect, bind, search) per DC; a request waits at most this "
            "long for a verdict, then gets 503 with Retry-After.",
     .max = 300,
     .apply = [](cursor& c) { c.snap().directory.timeout = c.seconds(); }},
    {.key = "directory.cache_ttl", .kind = value_kind::duration, .default_text = "\"5m\"",
     .doc = "How long an allowed mapping is remembered per certificate (SHA-256): a disabled or "
            "re-mapped account is cut off within this time, kept-alive connections included.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().directory.cache_ttl = c.seconds(); }},
    {.key = "directory.negative_ttl", .kind = value_kind::duration_or_zero,
     .default_text = "\"1m\"",
     .doc = "How long a refusal (403.12) is remembered per certificate; 0 = not remembered.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().directory.negative_ttl = c.seconds(); }},
    {.key = "directory.cache_max", .kind = value_kind::integer, .default_text = "100000",
     .doc = "Verdicts kept in memory (the oldest are dropped first).",
     .min = 1, .max = 100'000'000,
     .apply = [](cursor& c) { c.snap().directory.cache_max = c.integer<std::size_t>(); }},
    {.key = "directory.ntauth", .kind = value_kind::boolean, .default_text = "false",
     .doc = "Also require the client certificate's issuing CA to be in the forest's NTAuth "
            "store (cACertificate of CN=NTAuthCertificates,CN=Public Key Services,CN=Services,"
            "<configurationNamingContext>), read at startup and every ntauth_refresh; else "
            "403.12 (issuer_not_in_ntauth).",
     .apply = [](cursor& c) { c.snap().directory.ntauth = c.boolean(); }},
    {.key = "directory.ntauth_refresh", .kind = value_kind::duration, .default_text = "\"1h\"",
     .doc = "How often the NTAuth store is read again.",
     .max = 7 * one_day,
     .apply = [](cursor& c) { c.snap().directory.ntauth_refresh = c.seconds(); }},
    {.key = "directory.connections", .kind = value_kind::integer, .default_text = "2",
     .doc = "Bound LDAP connections (one worker thread each); lookups beyond wait in a queue.",
     .min = 1, .max = 64,
     .apply = [](cursor& c) { c.snap().directory.connections = c.integer<std::size_t>(); }},
    {.key = "directory.lockout_duration", .kind = value_kind::duration, .default_text = "\"30m\"",
     .doc = "The domain's lockout duration, for DCs that do not return "
            "msDS-User-Account-Control-Computed: an account whose lockoutTime is younger is "
            "locked out.",
     .max = 365 * one_day,
     .apply = [](cursor& c) { c.snap().directory.lockout_duration = c.seconds(); }},

    // ---------------------------------------------------------------- [upstream]
    {.key = "upstream", .kind = value_kind::table,
     .doc = "The Exchange servers that requests are forwarded to."},
    {.key = "upstream.servers", .kind = value_kind::string_array, .need = presence::required,
     .constraint = "each \"http://host[:port]\" or \"https://host[:port]\"; no path, query or "
                   "user@",
     .doc = "Backend servers (or one internal load balancer).",
     .min = 1,
     .apply = [](cursor& c) { c.snap().upstream.servers = c.upstream_servers(); }},
    {.key = "upstream.ca", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a readable file",
     .doc = "CA bundle (PEM) that verifies https:// upstreams; \"\" = the system trust store.",
     .apply = [](cursor& c) { c.snap().upstream.ca = c.input_file(); }},
    {.key = "upstream.server_name", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\", a DNS name or an IP address",
     .doc = "Name sent as SNI and verified in the upstream certificate; \"\" = each URL's host.",
     .apply = [](cursor& c) { c.snap().upstream.server_name = c.host_name_or_empty(); }},
    {.key = "upstream.max_idle_per_server", .kind = value_kind::integer, .default_text = "64",
     .doc = "Idle keep-alive connections kept per server; 0 = no reuse.",
     .min = 0, .max = 65536,
     .apply = [](cursor& c) {
       c.snap().upstream.max_idle_per_server = c.integer<std::size_t>();
     }},
    {.key = "upstream.idle_timeout", .kind = value_kind::seconds, .default_text = "60",
     .doc = "An idle pooled upstream connection is closed after this long, in seconds.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().upstream.idle_timeout = c.seconds(); }},
    // Backend health (issue 13, upstream/health.hpp).
    {.key = "upstream.health_check", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or a path starting with \"/\" (no space or control character)",
     .doc = "Active health check: every health_interval a GET of this path on each server "
            "(e.g. \"/owa/healthcheck.htm\"); 2xx/3xx passes. Exchange answers 503 there in "
            "maintenance (ServerWideOffline). \"\" = no active checks.",
     .apply = [](cursor& c) {
       const std::string& p = c.string();
       bool ok = p.empty() || (p.front() == '/' && !p.starts_with("//"));
       for (const char ch : p) ok = ok && static_cast<unsigned char>(ch) > 0x20 && ch != 0x7f;
       if (!ok) c.error("must be \"\" or a path starting with \"/\" without spaces");
       c.snap().upstream.health_check = p;
     }},
    {.key = "upstream.health_interval", .kind = value_kind::duration, .default_text = "\"10s\"",
     .doc = "Time between two active checks of a server.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().upstream.health_interval = c.seconds(); }},
    {.key = "upstream.health_timeout", .kind = value_kind::duration, .default_text = "\"5s\"",
     .doc = "Deadline of one active check (connect, TLS, request, response header).",
     .max = 600,
     .apply = [](cursor& c) { c.snap().upstream.health_timeout = c.seconds(); }},
    {.key = "upstream.healthy_threshold", .kind = value_kind::integer, .default_text = "2",
     .doc = "Active checks passed in a row that bring an ejected server back.",
     .min = 1, .max = 100,
     .apply = [](cursor& c) { c.snap().upstream.healthy_threshold = c.integer<unsigned>(); }},
    {.key = "upstream.unhealthy_threshold", .kind = value_kind::integer, .default_text = "2",
     .doc = "Active checks failed in a row that take a server out of the rotation.",
     .min = 1, .max = 100,
     .apply = [](cursor& c) { c.snap().upstream.unhealthy_threshold = c.integer<unsigned>(); }},
    {.key = "upstream.max_failures", .kind = value_kind::integer, .default_text = "5",
     .doc = "Passive ejection: this many 5xx responses or connect failures in a row take a "
            "server out of the rotation (back when the active checks pass, or after "
            "ejection_time without them); 0 = off.",
     .min = 0, .max = 10000,
     .apply = [](cursor& c) { c.snap().upstream.max_failures = c.integer<unsigned>(); }},
    {.key = "upstream.ejection_time", .kind = value_kind::duration, .default_text = "\"30s\"",
     .doc = "Without active checks, a passively ejected server is tried again after this long.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().upstream.ejection_time = c.seconds(); }},

    // ---------------------------------------------------------------- [access_log]
    {.key = "access_log", .kind = value_kind::table,
     .doc = "One JSON line per request, written when it finishes."},
    {.key = "access_log.path", .kind = value_kind::string, .default_text = "\"-\"",
     .constraint = "\"-\", \"\" or a file in an existing directory",
     .doc = "\"-\" = stdout, \"\" = off, else a file (appended to).",
     .apply = [](cursor& c) { c.snap().access_log.path = c.output_file({"-", ""}); }},
    {.key = "access_log.log_upn", .kind = value_kind::boolean, .default_text = "true",
     .doc = "Whether access-log lines carry the user's UPN.",
     .apply = [](cursor& c) { c.snap().access_log.log_upn = c.boolean(); }},

    // ---------------------------------------------------------------- [log]
    {.key = "log", .kind = value_kind::table, .doc = "The diagnostic log."},
    {.key = "log.level", .kind = value_kind::string, .default_text = "\"info\"",
     .doc = "Least severe level written.",
     .choices = log_levels,
     .apply = [](cursor& c) { c.snap().log.level = c.string(); }},
    {.key = "log.path", .kind = value_kind::string, .default_text = "\"-\"",
     .constraint = "\"-\" or a file in an existing directory",
     .doc = "\"-\" = stderr, else a file (appended to).",
     .apply = [](cursor& c) { c.snap().log.path = c.output_file({"-"}); }},

    // ---------------------------------------------------------------- [[route]]
    {.key = "route", .kind = value_kind::table_array, .need = presence::required,
     .doc = "Routes ([[route]], at least one). A request goes to the route with the longest "
            "prefix matching its normalized path (case-insensitive, whole segments); no match "
            "gets 404.",
     .apply = [](cursor& c) { c.snap().routes.resize(c.count()); }},
    {.key = "route.prefix", .kind = value_kind::string, .need = presence::required,
     .constraint = "starts with \"/\"; no \".\" or \"..\" segment, \"//\", \"%\", \"\\\", \"?\", "
                   "\"#\", space or control character; no trailing \"/\" except \"/\" itself; "
                   "unique (case-insensitive)",
     .doc = "Path prefix, e.g. \"/owa\"; \"/\" matches everything.",
     .apply = apply_route_prefix},
    {.key = "route.client_cert", .kind = value_kind::string, .default_text = "\"require\"",
     .doc = "\"require\": a valid client certificate with one UPN, else 403 with the IIS "
            "substatus; \"optional\": without a certificate the request goes through without an "
            "identity, a presented one must be valid; \"none\": public, no identity is forwarded.",
     .choices = route_policies,
     .apply = [](cursor& c) {
       c.snap().routes[c.index()].client_cert =
           pick(c, {route_cert_policy::require, route_cert_policy::optional,
                    route_cert_policy::none});
     }},
    {.key = "route.max_body_bytes", .kind = value_kind::integer, .default_text = "0",
     .doc = "Largest request body on this route; over it: 413. 0 = limits.max_body_bytes.",
     .min = 0, .max = int64_max,
     .apply = [](cursor& c) {
       c.snap().routes[c.index()].max_body_bytes = c.integer<std::uint64_t>();
     }},
    {.key = "route.response_timeout", .kind = value_kind::seconds_or_zero, .default_text = "0",
     .doc = "Upstream response timeout on this route, in seconds (ActiveSync Ping holds a "
            "request up to 59 minutes); 0 = the virtual directory's default (3600 on /rpc and "
            "/mapi), else timeouts.upstream_response. For the long-lived requests of Outlook "
            "(RPC_IN_DATA, RPC_OUT_DATA, MAPI NotificationWait) it is also the longest pause in "
            "either body, in place of timeouts.body_idle.",
     .max = one_day,
     .apply = [](cursor& c) { c.snap().routes[c.index()].response_timeout = c.seconds(); }},
    {.key = "route.revocation_fail", .kind = value_kind::string,
     .constraint = "absent: revocation.fail",
     .doc = "This route's answer when a certificate's revocation status is unknown: "
            "\"closed\" = 403.13, \"open\" = allowed and logged; absent = revocation.fail.",
     .choices = fail_modes,
     .apply = [](cursor& c) {
       c.snap().routes[c.index()].revocation_fail = pick(c, {fail_mode::closed, fail_mode::open});
     }},
    {.key = "route.methods", .kind = value_kind::string_array,
     .constraint = "each an HTTP method token, case-sensitive, not CONNECT; absent: the virtual "
                   "directory's default",
     .doc = "Methods forwarded on this route; any other gets 405 with an Allow header. Absent: "
            "what Exchange uses on the virtual directory named by the prefix's first segment "
            "(/rpc: GET, HEAD, RPC_IN_DATA, RPC_OUT_DATA; /owa, /ecp, /EWS, /Autodiscover, "
            "/mapi, /PowerShell: GET, HEAD, POST; /OAB: GET, HEAD; "
            "/Microsoft-Server-ActiveSync: GET, HEAD, OPTIONS, POST); other prefixes: no list "
            "(CONNECT and methods cbagate does not know get 501).",
     .min = 1,
     .apply = apply_route_methods},
    {.key = "route.pass_authorization", .kind = value_kind::boolean,
     .constraint = "absent: true on \"none\" and \"optional\" routes, false on \"require\" "
                   "routes; never true on a \"require\" route",
     .doc = "Whether the client's Authorization header (NTLM, Negotiate, Basic) reaches the "
            "backend. It is removed whenever a certificate identity is forwarded. A backend "
            "connection that carried NTLM or Negotiate becomes private to that one client "
            "connection (README: publishing the whole namespace).",
     .apply = apply_pass_authorization},
    {.key = "route.hsts", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\" or \"max-age=SECONDS\" [\"; includeSubDomains\"] [\"; preload\"]",
     .doc = "Strict-Transport-Security header added to every response of this route "
            "(replacing the backend's), e.g. \"max-age=31536000\"; \"\" = none added, "
            "the backend's passes. Off by default: once a browser has seen it, the host is "
            "HTTPS-only for max-age seconds.",
     .apply = [](cursor& c) {
       std::string why;
       if (!c.string().empty() && !is_valid_hsts(c.string(), why)) c.error(why);
       c.snap().routes[c.index()].hsts = c.string();
     }},
    {.key = "route.redirect", .kind = value_kind::string, .default_text = "\"\"",
     .constraint = "\"\", a path starting with \"/\" (not \"//\") or an https:// URL; no space, "
                   "control character or \"\\\"",
     .doc = "A request for exactly this route's prefix (with or without a trailing \"/\") gets "
            "302 Found to this location, as IIS sends \"/\" to \"/owa\"; other paths under "
            "the prefix get 404. Nothing is forwarded. \"\" = forward as usual.",
     .apply = apply_route_redirect},

    // ---------------------------------------------------------------- [errors]
    {.key = "errors", .kind = value_kind::table,
     .doc = "Custom error pages, by HTTP status, for the answers cbagate gives itself."},
#define CBAGATE_ERROR_PAGE_ROW(S)                                                        \
    {.key = "errors." #S, .kind = value_kind::string, .constraint = error_page_constraint, \
     .doc = error_page_doc, .apply = apply_error_page<S>}
    CBAGATE_ERROR_PAGE_ROW(400), CBAGATE_ERROR_PAGE_ROW(403), CBAGATE_ERROR_PAGE_ROW(404),
    CBAGATE_ERROR_PAGE_ROW(405), CBAGATE_ERROR_PAGE_ROW(408), CBAGATE_ERROR_PAGE_ROW(413),
    CBAGATE_ERROR_PAGE_ROW(414), CBAGATE_ERROR_PAGE_ROW(417), CBAGATE_ERROR_PAGE_ROW(431),
    CBAGATE_ERROR_PAGE_ROW(500), CBAGATE_ERROR_PAGE_ROW(501), CBAGATE_ERROR_PAGE_ROW(502),
    CBAGATE_ERROR_PAGE_ROW(503), CBAGATE_ERROR_PAGE_ROW(504),
#undef CBAGATE_ERROR_PAGE_ROW
};

void write_wrapped(std::ostream& out, std::string_view text, std::string_view indent,
                   std::size_t width) {
  std::size_t col = 0;
  while (!text.empty()) {
    const std::size_t space = text.find(' ');
    const std::string_view word = text.substr(0, space);
    if (col > 0 && col + 1 + word.size() > width) {
      out << '\n';
      col = 0;
    }
    if (col == 0) {
      out << indent << word;
      col = indent.size() + word.size();
    } else {
      out << ' ' << word;
      col += 1 + word.size();
    }
    if (space == std::string_view::npos) break;
    text.remove_prefix(space + 1);
  }
  out << '\n';
}

std::string default_column(const schema_row& row) {
  if (!row.default_text.empty()) return std::string(row.default_text);
  switch (row.need) {
    case presence::required:
      return "required";
    case presence::kerberos:
      return "required in kerberos mode";
    case presence::directory:
      return "required in directory mapping";
    case presence::optional:
      break;
  }
  return row.kind == value_kind::table_array ? "none" : "";
}

std::string markdown_cell(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '|') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

std::span<const schema_row> schema() noexcept { return rows; }

const schema_row* find_row(std::string_view key) noexcept {
  for (const schema_row& r : rows) {
    if (r.key == key) return &r;
  }
  return nullptr;
}

std::string_view type_name(const schema_row& row) noexcept {
  switch (row.kind) {
    case value_kind::boolean:
      return "boolean";
    case value_kind::integer:
      return "integer";
    case value_kind::seconds:
    case value_kind::seconds_or_zero:
      return "seconds";
    case value_kind::duration:
    case value_kind::duration_or_zero:
      return "duration";
    case value_kind::string:
      return "string";
    case value_kind::string_array:
      return "array of strings";
    case value_kind::table:
      return "table";
    case value_kind::table_array:
      return "array of tables";
  }
  return "?";
}

std::string constraint_text(const schema_row& row) {
  std::string out;
  auto add = [&out](std::string_view part) {
    if (part.empty()) return;
    if (!out.empty()) out += "; ";
    out += part;
  };
  switch (row.kind) {
    case value_kind::integer:
      add(std::to_string(row.min) + ".." +
          (row.max == int64_max ? std::string("2^63-1") : std::to_string(row.max)));
      break;
    case value_kind::seconds:
      add("> 0, at most " + std::to_string(row.max));
      break;
    case value_kind::seconds_or_zero:
      add("0.." + std::to_string(row.max));
      break;
    case value_kind::duration:
      add("\"<n>ms\", \"<n>s\", \"<n>m\", \"<n>h\" or seconds; > 0, at most " +
          std::to_string(row.max) + "s");
      break;
    case value_kind::duration_or_zero:
      add("\"<n>ms\", \"<n>s\", \"<n>m\", \"<n>h\" or seconds; 0.." +
          std::to_string(row.max) + "s");
      break;
    case value_kind::string_array:
      if (row.min > 0) add("at least " + std::to_string(row.min) + ", no duplicates");
      else add("no duplicates");
      break;
    default:
      break;
  }
  if (!row.choices.empty()) {
    std::string list = row.kind == value_kind::string_array ? "each one of " : "one of ";
    for (std::size_t i = 0; i < row.choices.size(); ++i) {
      list += (i ? ", \"" : "\"") + std::string(row.choices[i]) + "\"";
    }
    add(list);
  }
  add(row.constraint);
  return out;
}

void print_schema(std::ostream& out, schema_format format) {
  if (format == schema_format::markdown) {
    for (const schema_row& row : rows) {
      if (row.kind == value_kind::table || row.kind == value_kind::table_array) {
        const bool array = row.kind == value_kind::table_array;
        out << "\n### " << (array ? "[[" : "[") << row.key << (array ? "]]" : "]") << "\n\n"
            << markdown_cell(row.doc) << "\n\n"
            << "| key | type | default | constraint | meaning |\n"
            << "|---|---|---|---|---|\n";
        continue;
      }
      const std::string_view leaf = row.key.substr(row.key.rfind('.') + 1);
      out << "| `" << leaf << "` | " << type_name(row) << " | "
          << markdown_cell(default_column(row)) << " | " << markdown_cell(constraint_text(row))
          << " | " << markdown_cell(row.doc) << " |\n";
    }
    return;
  }
  out << "cbagate configuration keys (TOML). Relative file paths are resolved against the\n"
         "configuration file's directory; unknown keys are errors.\n";
  for (const schema_row& row : rows) {
    if (row.kind == value_kind::table || row.kind == value_kind::table_array) {
      const bool array = row.kind == value_kind::table_array;
      out << '\n' << (array ? "[[" : "[") << row.key << (array ? "]]" : "]");
      if (row.need == presence::required) out << "  (required)";
      out << '\n';
      write_wrapped(out, row.doc, "    ", 92);
      continue;
    }
    out << "  " << row.key << "  (" << type_name(row);
    const std::string def = default_column(row);
    if (!def.empty()) {
      out << (row.default_text.empty() ? ", " : ", default ") << def;
    }
    out << ")\n";
    const std::string constraint = constraint_text(row);
    if (!constraint.empty()) write_wrapped(out, "allowed: " + constraint, "      ", 92);
    write_wrapped(out, row.doc, "      ", 92);
  }
}

}  // namespace cbagate::config
