#pragma once
// HTTP Negotiate (RFC 4559) on the mock Exchange's side: a GSSAPI acceptor bound to the backend's
// own keytab, and RFC 5929 tls-server-end-point channel bindings of the mock's TLS certificate.
#include <openssl/x509.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::mock {

/** What one `Authorization: Negotiate` token gave. */
struct negotiate_outcome {
  bool authenticated = false;    ///< context complete (and channel-bound when that is required)
  bool continue_needed = false;  ///< GSS_S_CONTINUE_NEEDED: answer 401 with `output_token`
  std::string principal;         ///< gss_display_name of the initiator (empty on failure)
  std::string error;             ///< major/minor status text, or why the token was refused
  std::string mech;              ///< the token's outer mechanism: "spnego", "krb5" or "unknown"
  std::string inner_mech;        ///< the mech the acceptor reports: "krb5" or the OID text
  std::uint32_t flags = 0;       ///< ret_flags
  bool delegated = false;        ///< GSS_C_DELEG_FLAG with a delegated credential
  bool channel_bound = false;    ///< GSS_C_CHANNEL_BOUND_FLAG: the token's bindings matched ours
  std::string output_token;      ///< base64 reply token (mutual auth), may be empty
};

/** Names of the set ret_flags bits ("mutual", "replay", "sequence", "deleg", ...). */
[[nodiscard]] std::vector<std::string> flag_names(std::uint32_t flags);

/** The base64 token of an `Authorization` value whose scheme is Negotiate, else nullopt. */
[[nodiscard]] std::optional<std::string_view> negotiate_token(std::string_view authorization);

/** Standard base64 with padding. */
[[nodiscard]] std::string base64_encode(std::string_view in);

/** "spnego", "krb5" or "unknown": the mechanism OID of an initial context token (RFC 2743 3.1). */
[[nodiscard]] std::string token_mech(std::string_view token);

/**
 * RFC 5929 section 4.1 certificate hash: the digest of the certificate's signature algorithm,
 * SHA-256 when that is MD5 or SHA-1 or has no single digest (Ed25519, ...). Empty on error.
 */
[[nodiscard]] std::vector<unsigned char> tls_server_end_point(X509* cert);

/** The GSSAPI acceptor; `accept` may be called from several threads at once. */
class negotiate_acceptor {
 public:
  /**
   * Acquires an acceptor credential from `keytab` (gss_acquire_cred_from, cred store "keytab",
   * no KRB5_KTNAME). `principal` empty = any key in the keytab; "service@host" is a host-based
   * name, anything else a Kerberos principal. `rcache` is the cred store "rcache" value
   * ("none:" disables replay detection, "file2:/path" a private cache), empty = the library's.
   * @return nullptr with `error` set when the keytab holds no usable key.
   */
  static std::unique_ptr<negotiate_acceptor> create(const std::string& keytab,
                                                    const std::string& principal,
                                                    const std::string& rcache, std::string& error);
  ~negotiate_acceptor();
  negotiate_acceptor(const negotiate_acceptor&) = delete;
  negotiate_acceptor& operator=(const negotiate_acceptor&) = delete;

  /**
   * One gss_accept_sec_context on a fresh context. `cb_hash` (may be null) is the
   * tls-server-end-point hash passed as input_chan_bindings; with `require_binding` a context
   * that is not channel-bound is refused.
   */
  [[nodiscard]] negotiate_outcome accept(std::string_view base64_token,
                                         const std::vector<unsigned char>* cb_hash,
                                         bool require_binding) const;

 private:
  struct impl;
  explicit negotiate_acceptor(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace cbagate::mock
