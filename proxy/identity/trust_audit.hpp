#pragma once
// What `cbagate --check-config` says about the client trust material beyond "the files load"
// (issue 12): a tls.client_ca entry that is not self-signed can never be an anchor (chains must
// end at a self-signed root), so an administrator who followed "the issuing CA in the NTAuth
// store" gets 403.16 for everyone. The findings name the list each certificate belongs in.
#include <string>
#include <vector>

namespace cbagate::identity {

struct trust_finding {
  bool fatal = false;   ///< the configuration cannot accept any client certificate
  std::string message;  ///< "tls.client_ca: certificate 2 [CN=...] is not self-signed: ..."
};

/**
 * Reads the PEM/DER files (unreadable ones are left to verifier::make, which reports them) and
 * reports: each tls.client_ca certificate that is not self-signed (fatal when none is); each
 * auth.issuing_cas certificate that is self-signed (a root that issues logon certificates
 * directly is allowed, but is usually the wrong certificate) or that no client_ca root can
 * anchor. Never throws.
 */
std::vector<trust_finding> audit_trust(const std::string& client_ca_file,
                                       const std::string& intermediates_file,
                                       const std::string& issuing_cas_file);

}  // namespace cbagate::identity
