#pragma once
// `cbagate --explain-certificate CERT [--config FILE]` (issue 12): what cbagate and Active
// Directory make of one client certificate, for administrators. Part of the composition root.
#include <iosfwd>
#include <string>

namespace cbagate {

/**
 * Prints, for the first certificate of `cert_path` (PEM; the rest of the file, if any, is taken
 * as the chain the client would send): subject, issuer, serial, SHA-256, the UPN, the AD
 * template, the SID extension, every strong altSecurityIdentities string (ready to paste into
 * AD) and the weak ones; with `config_path`, the chain verdict under that configuration's
 * trust material and [auth] limits, and with auth.mapping = "directory" the directory's
 * verdict (a live LDAP lookup, no cache).
 * @return 0 when the certificate would be accepted (and mapped), 1 when it would be refused or
 *         the directory did not answer, 2 for unusable input (file, configuration).
 */
int explain_certificate(const std::string& cert_path, const std::string& config_path,
                        std::ostream& out, std::ostream& err);

}  // namespace cbagate
