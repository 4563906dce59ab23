#include "identity/client_identity.hpp"

namespace cbagate::identity {

std::string_view to_string(rejection r) noexcept {
  switch (r) {
    case rejection::none: return "none";
    case rejection::no_certificate: return "no_certificate";
    case rejection::untrusted: return "untrusted";
    case rejection::invalid: return "invalid";
    case rejection::wrong_eku: return "wrong_eku";
    case rejection::expired: return "expired";
    case rejection::not_yet_valid: return "not_yet_valid";
    case rejection::revoked: return "revoked";
    case rejection::no_upn: return "no_upn";
    case rejection::multi_upn: return "multi_upn";
    case rejection::bad_upn_encoding: return "bad_upn_encoding";
    case rejection::issuer_not_allowed: return "issuer_not_allowed";
    case rejection::upn_suffix_not_allowed: return "upn_suffix_not_allowed";
    case rejection::template_not_allowed: return "template_not_allowed";
  }
  return "unknown";
}

// The substatus codes of IIS 403 for client certificates (HTTP.SYS / IIS "403.x" table):
// 7 = client certificate required, 13 = client certificate revoked, 16 = client certificate
// untrusted or invalid, 17 = client certificate expired or not yet valid, 12 = "mapper denied
// access" (the certificate is fine but may not log on: issuer, UPN suffix, template; issue 12).
int iis_substatus(rejection r) noexcept {
  switch (r) {
    case rejection::none: return 0;
    case rejection::no_certificate: return 7;
    case rejection::revoked: return 13;
    case rejection::expired:
    case rejection::not_yet_valid: return 17;
    case rejection::untrusted:
    case rejection::invalid:
    case rejection::wrong_eku:
    case rejection::no_upn:
    case rejection::multi_upn:
    case rejection::bad_upn_encoding: return 16;
    case rejection::issuer_not_allowed:
    case rejection::upn_suffix_not_allowed:
    case rejection::template_not_allowed: return 12;
  }
  return 16;  // an out-of-range value is treated as "invalid", never as accepted
}

}  // namespace cbagate::identity
