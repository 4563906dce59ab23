#pragma once
// The pure parts of KB5014754 strong mapping (docs/directory.md): LDAP filter escaping, the
// altSecurityIdentities forms, the strings computed from a certificate, SIDs. No I/O, no
// OpenSSL; every function is thread-safe.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::directory {

/**
 * RFC 4515 section 3 escaping of an assertion value: `*` `(` `)` `\` NUL and, like OpenLDAP's
 * ldap_bv2escaped_filter_value, every byte below 0x20, DEL and every byte >= 0x80, as `\XX`
 * (upper-case hex). The result contains printable ASCII only, so no value can change the
 * filter's structure ("*)(userPrincipalName=*" matches nothing).
 */
std::string escape_filter_value(std::string_view value);

/** The filter that locates a user by UPN: sAMAccountType 805306368 (SAM_USER_OBJECT, no
 *  computers or trusts) and the escaped UPN. */
std::string upn_filter(std::string_view upn);

/** The filter that locates a user by the strong strings of a certificate (no UPN). */
std::string strong_filter(std::span<const std::string> strong_strings);

/** What a certificate offers to altSecurityIdentities (identity::ad_facts + serial). */
struct certificate_view {
  std::string upn;
  std::string issuer_dn;   ///< AD form ("DC=test,DC=lab,CN=Lab Issuing CA")
  std::string subject_dn;  ///< AD form
  std::string serial;      ///< big-endian upper-case hex, as client_identity::serial
  std::string ski;         ///< upper-case hex, "" = no SubjectKeyIdentifier extension
  std::string sha1;        ///< upper-case hex thumbprint of the whole DER certificate
  std::string sid;         ///< SID string of the SID extension, "" = none
  std::string sid_error;   ///< the SID extension is present but malformed
};

/** The strong altSecurityIdentities values for a certificate, ready to paste into AD:
 *  "X509:<I>issuer<SR>serial-bytes-reversed", "X509:<SKI>ski" (when the extension exists),
 *  "X509:<SHA1-PUKEY>thumbprint". */
std::vector<std::string> strong_strings(const certificate_view& cert);

/** The weak forms (never sufficient; shown by --explain-certificate for comparison). */
std::vector<std::string> weak_strings(const certificate_view& cert);

/** One parsed altSecurityIdentities value (Samba parse_certificate_mapping() rules). */
struct alt_security_identity {
  bool valid = false;    ///< "X509:" prefix, known tags, each at most once
  bool strong = false;   ///< <I>+<SR>, <SKI> or <SHA1-PUKEY> ([MS-PKCA] 3.1.5.2.1.5)
  std::optional<std::string> issuer, subject, serial, ski, sha1, rfc822, sid;
};

/**
 * Parses "X509:<I>...<SR>..." etc. The value must start with "X509:"; characters up to the
 * first '<' are ignored ([MS-PKCA] writes "X509: <RFC822>"); tags are case-sensitive
 * (I, S, SR, SKI, SHA1-PUKEY, RFC822, SID); an unknown or repeated tag makes it invalid.
 */
alt_security_identity parse_alt_security_identity(std::string_view value);

/**
 * Whether every tag of a STRONG mapping matches the certificate: <I> and <S> compared
 * case-insensitively ignoring spaces next to `,` `=` `+`; <SR> as an integer (hex, byte order
 * reversed, leading zero bytes ignored, so a trailing "00" sign byte is tolerated); <SKI> and
 * <SHA1-PUKEY> hex case-insensitively. Weak or invalid values never match.
 */
bool strong_match(const alt_security_identity& m, const certificate_view& cert);

/** Binary SID ([MS-DTYP] 2.4.2.2) from "S-1-5-21-..."; nothing when malformed (strict:
 *  decimal without leading zeros, revision 1, 1..15 sub-authorities, authority < 2^48). */
std::optional<std::vector<std::uint8_t>> parse_sid(std::string_view text);

/** "S-1-5-21-..." of a binary SID; "" when malformed. */
std::string sid_to_string(std::span<const std::uint8_t> sid);

/** Unix seconds -> FILETIME (100 ns since 1601-01-01). */
constexpr std::int64_t filetime_of_unix(std::int64_t unix_seconds) {
  return (unix_seconds + 11644473600LL) * 10000000LL;
}

}  // namespace cbagate::directory
