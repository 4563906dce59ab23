#include "identity/refusal.hpp"

namespace cbagate::identity {

refusal refusal_for(const client_identity& id) noexcept {
  switch (id.reason) {
    case rejection::none: return {"forbidden", "access denied by route policy", 0};
    case rejection::no_certificate: return {"no_certificate", "client certificate required", 7};
    case rejection::untrusted:
      // A leaf that names itself as its issuer was never issued by a CA: tell the user that,
      // not "untrusted CA" (they would ask for the CA to be trusted).
      if (!id.subject.empty() && id.subject == id.issuer)
        return {"self_signed", "client certificate is self-signed, not issued by a CA", 16};
      return {"untrusted_issuer", "client certificate not issued by a trusted CA", 16};
    case rejection::invalid: return {"invalid_certificate", "client certificate invalid", 16};
    case rejection::wrong_eku:
      return {"wrong_eku", "client certificate not made for client authentication (EKU)", 16};
    case rejection::expired: return {"expired", "client certificate expired", 17};
    case rejection::not_yet_valid: return {"not_yet_valid", "client certificate not yet valid", 17};
    case rejection::revoked: return {"revoked", "client certificate revoked", 13};
    case rejection::no_upn:
      return {"no_upn", "client certificate carries no user principal name (UPN)", 16};
    case rejection::multi_upn:
      return {"multiple_upn", "client certificate carries more than one user principal name", 16};
    case rejection::bad_upn_encoding:
      return {"bad_upn", "client certificate user principal name is malformed", 16};
    default: break;
  }
  return {to_string(id.reason), "client certificate not allowed to log on", iis_substatus(id.reason)};
}

refusal revocation_unknown_refusal() noexcept {
  return {"revocation_unknown",
          "revocation status unknown (no current CRL or OCSP answer for the certificate)", 13};
}

}  // namespace cbagate::identity
