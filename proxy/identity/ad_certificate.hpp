#pragma once
// What Active Directory reads of a client certificate (issue 12, docs/directory.md): the
// strings of altSecurityIdentities, the SID security extension, the AD CS template, and the
// issuing-CA / UPN-suffix / template trust limits. Plain strings out; OpenSSL stays here.
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/x509.h>

#include "identity/cert_ref.hpp"
#include "identity/client_identity.hpp"

namespace cbagate::identity {

/**
 * Active Directory's own spelling of a distinguished name, as altSecurityIdentities `<I>` and
 * `<S>` hold it: RDNs in the order they are encoded in the certificate (the reverse of RFC 4514),
 * joined by "," without spaces, multi-valued RDNs joined by "+", Windows keywords (CN O OU C L S
 * STREET DC E T G I SN SERIALNUMBER; other types "OID.n.n.n"), a value containing
 * `, + = " ; < > #`, a line break or a leading/trailing space quoted in double quotes (inner `"`
 * doubled) as CertNameToStr does. Control characters and DEL are written as \XX (such a value
 * never matches, but the string stays log-safe). Example: "DC=test,DC=lab,CN=Lab Issuing CA".
 */
std::string ad_dn(const X509_NAME* name);

/** The AD CS certificate template of a certificate: szOID_CERTIFICATE_TEMPLATE
 *  (1.3.6.1.4.1.311.21.7, v2: an OID) and/or szOID_ENROLL_CERTTYPE_EXTENSION
 *  (1.3.6.1.4.1.311.20.2, v1: a name such as "User"). */
struct template_info {
  std::string oid;   ///< dotted OID of the v2 extension, "" = absent
  std::string name;  ///< UTF-8 name of the v1 extension, "" = absent
  std::string error; ///< non-empty: an extension is present but does not decode, or repeats
};

/** Reads both template extensions of `leaf`. Never throws; leaves the OpenSSL error queue. */
template_info read_template(const X509* leaf);

/**
 * Whether `t` matches one entry of `allowed` (config auth.certificate_templates): an entry that
 * is a dotted OID matches the v2 template OID exactly; any other entry matches the v1 name,
 * ASCII case-insensitively. A template with `error` set never matches.
 */
bool template_allowed(const template_info& t, std::span<const std::string> allowed);

/** Whether the domain of `upn` (after its '@') equals one of `suffixes`, ASCII
 *  case-insensitively (config auth.upn_suffixes; no subdomain matching, as AD's UPN suffix
 *  list). */
bool upn_suffix_allowed(std::string_view upn, std::span<const std::string> suffixes);

/** What the SID security extension (szOID_NTDS_CA_SECURITY_EXT 1.3.6.1.4.1.311.25.2) says. */
struct sid_extension {
  bool present = false;
  std::string sid;    ///< "S-1-5-21-..." as carried (ASCII), when present and well formed
  std::string error;  ///< non-empty when present but malformed (a repeat, bad DER, no SID)
};

/**
 * Reads the SID extension: GeneralNames with exactly one otherName of type-id
 * 1.3.6.1.4.1.311.25.2.1 whose value is an OCTET STRING holding the SID string in ASCII
 * ([MS-WCCE] 2.2.2.7.7.4). The string itself is checked by directory/ (sid syntax).
 */
sid_extension read_sid_extension(const X509* leaf);

/** Upper-case hex of `bytes` ("0A1B"). */
std::string hex_upper(std::span<const unsigned char> bytes);

/**
 * Everything about `leaf` that maps it to a directory account (filled in
 * client_identity::ad on acceptance; carried in session tickets).
 */
ad_facts read_ad_facts(const X509* leaf);

/**
 * The issuer_id (name and key hash) of a DER CA certificate, e.g. a cACertificate value of
 * AD's NTAuth store; nothing when the bytes are not a certificate.
 */
std::optional<issuer_id> issuer_id_of_der(std::span<const unsigned char> der);

/**
 * Whether two CA certificates are the same CA: same subject name and same public key (a
 * renewed CA certificate with the same key counts as the same CA). Used for auth.issuing_cas
 * against the leaf's direct issuer.
 */
bool same_ca(const X509* a, const X509* b);

}  // namespace cbagate::identity
