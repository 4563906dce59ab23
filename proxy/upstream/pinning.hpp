#pragma once
// Connection-bound authentication (issue 10). IIS binds NTLM, and Negotiate with
// authPersistNonNTLM, to the TCP connection: once a backend connection has completed such a
// handshake, every later request on it runs as that user, with no Authorization header. Such a
// connection must never serve another client. These pure functions tell, from the headers that
// crossed a backend connection, whether it has become private to the one client connection that
// used it; the session keeps a private connection for that client only (connection::pinned) and
// the pool refuses to take one back.
#include <memory>
#include <string_view>

#include <boost/beast/http/field.hpp>

#include "upstream/pool.hpp"

namespace cbagate::http {
class flat_fields;
}  // namespace cbagate::http

namespace cbagate::upstream {

/**
 * True when `value` names NTLM or Negotiate as a whole token, in any letter case and at any
 * position ("NTLM", "negotiate abc==", "Basic realm=\"x\", NTLM"). Token boundaries are the
 * characters that cannot be part of an HTTP token (RFC 9110 5.6.2), so a longer name such as
 * "NTLMv2" or "X-Negotiate" does not count. Deliberately broad: a false positive only costs the
 * reuse of one connection, a false negative hands a user's connection to someone else.
 */
bool names_connection_bound_scheme(std::string_view value) noexcept;

/**
 * True when a request that is sent on a backend connection binds it: any of its Authorization
 * fields carries NTLM or Negotiate credentials. Call it with the request as forwarded (after
 * sanitizing), and only for credentials the client sent: a Negotiate token that cbagate made
 * itself (Kerberos mode) is bound to the user by the pool key instead.
 */
bool request_binds_connection(const http::flat_fields& request) noexcept;

/**
 * True when a response read from a backend connection binds it: any WWW-Authenticate field
 * offers or answers NTLM or Negotiate (a 401 challenge, the second NTLM leg, a mutual
 * authentication token), or a Persistent-Auth field says anything but "false" (IIS sends
 * "Persistent-Auth: true" on a connection it keeps authenticated). Call it with the response
 * header as received, before it is sanitized for the client.
 */
bool response_binds_connection(const http::flat_fields& response) noexcept;

/** What a response's Persistent-Auth fields say (IIS: whether the connection stays
 *  authenticated for later requests). */
enum class persistence { unsaid, persists, ends };

/**
 * Persistent-Auth in `response` (its header as received): `persists` only when every such field
 * says "true" (any letter case, spaces around), `ends` when any says anything else, `unsaid`
 * without one. Deliberately narrow: only an explicit "true" lets a later request go without a
 * token (kerberos.persistent_auth).
 */
persistence persistent_auth(const http::flat_fields& response) noexcept;

/**
 * The backend connection one client connection keeps for itself: at most one, private to it
 * (connection::pinned). Lives with the client connection (in its coroutine frame); destroying
 * it closes the connection, so a private connection never outlives its client. Not
 * thread-safe: used only on the client connection's thread.
 */
class private_slot {
 public:
  /**
   * The private connection for this client's next request, or null: none is held, or the one
   * held was closed by the backend or idle past upstream.idle_timeout (it is closed now; the
   * caller gets a fresh connection and the backend asks for authentication again).
   */
  std::unique_ptr<connection> take(const pool& p);

  /**
   * After an exchange on `conn`: a pinned connection that may carry another request is kept
   * here (replacing, and so closing, any other this client held); a pinned one that may not is
   * closed; an unpinned one goes back to the pool when `reusable`, else is closed.
   */
  void finish(pool& p, std::unique_ptr<connection> conn, bool reusable);

  /** Whether a private connection is held. */
  bool holds() const noexcept { return conn_ != nullptr; }

 private:
  std::unique_ptr<connection> conn_;
};

}  // namespace cbagate::upstream
