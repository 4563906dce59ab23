#pragma once
// IIS-like connection-bound authentication for the mock's Outlook virtual directories
// (/Autodiscover, /EWS, /mapi, /rpc, /OAB, /PowerShell), with test tokens (issue 10).
//
// IIS binds NTLM (and Negotiate with authPersistNonNTLM) to the TCP connection: once a
// connection has completed the handshake, every later request on it runs as that user with no
// Authorization header. This is that behaviour, with the cryptography replaced by test tokens
// that keep the wire shapes (base64 NTLMSSP messages with their type numbers, a challenge
// bound to the connection, two legs):
//   NTLM type 1  "NTLMSSP\0" 01 00 00 00 [anything]
//   NTLM type 2  "NTLMSSP\0" 02 00 00 00 <8-byte challenge>            (from the mock)
//   NTLM type 3  "NTLMSSP\0" 03 00 00 00 <the 8-byte challenge> user ":" password
//   Negotiate    raw NTLMSSP messages as above (the NTLM fallback, two legs), or the one-leg
//                test token "MOCK-KRB5:" user ":" password (answered with "MOCK-KRB5-OK"
//                and Persistent-Auth: true), or a real Kerberos token when the mock has a
//                keytab (decided by the caller)
//   Basic        user ":" password, per request (not bound to the connection)
// A password is valid when it is "pw-" followed by the user name.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::mock {

/** What a TCP connection has established so far. */
struct conn_auth_state {
  std::string user;               ///< authenticated on this connection ("" = none)
  std::string scheme;             ///< "NTLM" or "Negotiate" (how `user` was established)
  std::string challenge;          ///< NTLM type 2 sent, type 3 awaited ("" = none)
  std::string challenge_scheme;   ///< the scheme the NTLM exchange runs under
  std::uint64_t handshakes = 0;   ///< completed handshakes on this connection
};

/** The outcome for one request. */
struct auth_result {
  bool ok = false;                ///< serve the request as `user`
  std::string user;               ///< the effective user ("" when !ok)
  std::string via;                ///< "NTLM", "Negotiate", "Basic", "header", "connection"
  std::vector<std::string> www_authenticate;  ///< WWW-Authenticate values to send
  bool persistent_auth = false;   ///< send Persistent-Auth: true
  std::string error;              ///< why refused or what failed ("" = nothing)
};

/** A real Kerberos acceptor's verdict on a Negotiate token (when the mock has a keytab). */
struct kerberos_verdict {
  bool authenticated = false;
  std::string principal;
  std::string reply_token;        ///< base64, for the mutual-authentication answer
};

/**
 * Authenticates one request as IIS would on a connection-bound virtual directory.
 * @param conn           the connection's state, updated (a handshake binds it, a new
 *                       Authorization with NTLM or Negotiate first unbinds it)
 * @param authorization  the first Authorization value ("" = none)
 * @param identity       the identity header value from a trusted proxy ("" = none); it wins
 *                       over everything and does not touch the connection's state
 * @param kerberos       the real acceptor's verdict for a Negotiate token that is not a test
 *                       token (nullopt = no keytab)
 * @param challenge      the 8 bytes a new NTLM type 2 carries (the caller's randomness)
 * A refusal comes with the challenges of a fresh 401 (Negotiate, NTLM, Basic) or, between the
 * NTLM legs, the type 2 message.
 */
[[nodiscard]] auth_result authenticate(conn_auth_state& conn, std::string_view authorization,
                                       std::string_view identity,
                                       const std::optional<kerberos_verdict>& kerberos,
                                       std::string_view challenge);

/** Test-token helpers (also used by the unit tests): the base64 of each message
 *  (base64_encode is negotiate.hpp's). */
[[nodiscard]] std::string ntlm_type1();
[[nodiscard]] std::string ntlm_type3(std::string_view challenge, std::string_view user,
                                     std::string_view password);

/** The 8-byte challenge of a base64 type 2 message, or nullopt. */
[[nodiscard]] std::optional<std::string> ntlm_challenge_of(std::string_view type2_base64);

}  // namespace cbagate::mock
