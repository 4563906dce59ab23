#pragma once
// Header hygiene between the client and the backend (DESIGN.md step 6, STYLE.md 5.6).
//
// One static table in sanitize.cpp gives each known header name its flags; one pass over the
// fields applies it. The session calls, in this order:
//   sanitize_request(fields, options)      // drop hop-by-hop, spoofed identity, X-Forwarded-*
//   add_forwarding_headers(fields, info)   // our own X-Forwarded-For/-Proto/-Host
//   delegation::apply(...)                 // identity header or Authorization: Negotiate
// so that nothing the client sent (not even a Connection token) can remove or set a header
// that we add afterwards.
#include <cstdint>
#include <string_view>

#include "http/flat_fields.hpp"

namespace cbagate::http {

/** What sanitize_request needs to know about the route and the configuration. */
struct sanitize_options {
  /** The configured identity header (`identity.header`), removed from every request in
      addition to the built-in identity names; empty = only the built-in ones. */
  std::string_view identity_header;
  /** Remove every `Authorization` (certificate routes and Kerberos mode: no Basic/NTLM
      bypass, and the Negotiate header is ours). */
  bool strip_authorization = false;
};

/** What sanitize_* removed, for the access log and metrics (spoof attempts are counted). */
struct sanitize_report {
  std::uint32_t removed = 0;           ///< fields removed in total
  std::uint32_t identity_removed = 0;  ///< of which identity headers (a spoof attempt)
};

/**
 * Cleans a request header before it is forwarded. Removes every copy, in any letter case:
 *  - the hop-by-hop fields: Connection, Keep-Alive, Proxy-Connection, TE, Trailer,
 *    Transfer-Encoding (the relay re-frames the body), Upgrade, Proxy-Authorization,
 *    Proxy-Authenticate;
 *  - every field named by a token of a Connection field (RFC 9110 7.6.1), except Host and
 *    Content-Length, which a Connection token never removes (the request would lose its
 *    authority or its framing);
 *  - the identity headers: `options.identity_header`, X-Client-UPN, X-Forwarded-Client-Cert,
 *    X-Forwarded-User, X-Remote-User;
 *  - the forwarding headers we set ourselves: X-Forwarded-For, X-Forwarded-Proto,
 *    X-Forwarded-Host, X-Forwarded-Port, Forwarded, X-Real-IP; and X-Original-URL,
 *    X-Rewrite-URL (IIS URL Rewrite would route by them, past our route policy);
 *  - Authorization when `options.strip_authorization`.
 * Names are compared case-insensitively, and a spelling with '_' for '-' of any name above or
 * of the configured identity header counts as that name ("X_Client_UPN" is removed too: IIS
 * and CGI map both spellings to the one server variable HTTP_X_CLIENT_UPN). An '_' spelling
 * of a name Beast knows ("Content_Length", "Transfer_Encoding", "Proxy_Authorization") is
 * removed from requests and responses whatever that name's own rule.
 * Expect is left to the session. Read `keep_alive()` before calling: Connection goes.
 *
 * @return the counts of removed fields. Thread-safe for distinct `f`; allocates nothing.
 */
sanitize_report sanitize_request(flat_fields& f, const sanitize_options& options);

/** Where the request came from, as we saw it at the edge. */
struct forwarding_info {
  std::string_view client_address;  ///< the peer address (or the PROXY v2 source), no port
  std::string_view proto = "https";
  std::string_view host;            ///< the request's Host value; empty = no Host (HTTP/1.0)
};

/**
 * Sets X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host, replacing any value (we are the
 * edge: client-supplied values are never trusted or appended to). An empty `host` removes
 * X-Forwarded-Host. Call after sanitize_request, which removes the '_' spellings.
 */
void add_forwarding_headers(flat_fields& f, const forwarding_info& info);

/**
 * Cleans an upstream response header before it is relayed to the client: removes the
 * hop-by-hop fields above, their '_' spellings, and every field named by a Connection token
 * (except Content-Length). Content-Length stays; Transfer-Encoding goes, so the session re-frames
 * (chunked towards the client when the upstream sent no Content-Length).
 */
sanitize_report sanitize_response(flat_fields& f);

/** What a route adds to every response it relays (config::route), after sanitize_response. */
struct response_policy {
  /** route.hsts: when non-empty, Strict-Transport-Security is set to it, replacing every
      copy the backend sent (one header, ours); empty leaves the backend's as they are. */
  std::string_view hsts;
};

/** sanitize_response, then the route's own response headers (`policy`). */
sanitize_report sanitize_response(flat_fields& f, const response_policy& policy);

}  // namespace cbagate::http
