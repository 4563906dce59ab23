#pragma once
// What a refused certificate is called where a person reads it: the 403 page, the access log's
// `error`, the process log (issue 13). One precise code per cause, so the helpdesk can tell "your
// certificate has no UPN" from "your CA is not trusted" from "the CRL is out of date".
#include <string_view>

#include "identity/client_identity.hpp"

namespace cbagate::identity {

/** A refusal as shown: every string_view points at static storage. */
struct refusal {
  std::string_view code;  ///< stable snake_case: access log `error`, page "(cbagate: <code>)"
  std::string_view text;  ///< one line for the page
  int substatus = 16;     ///< IIS 403 substatus
};

/**
 * The refusal for a rejected identity:
 *   no_certificate (403.7), untrusted_issuer or self_signed (a leaf whose issuer is itself;
 *   403.16), invalid_certificate, wrong_eku, no_upn, multiple_upn, bad_upn (403.16),
 *   expired, not_yet_valid (403.17), revoked (403.13); any other reason: its to_string() name
 *   and iis_substatus(). Precondition: !id.ok() (an accepted identity gives "forbidden").
 */
refusal refusal_for(const client_identity& id) noexcept;

/** A revocation status that could not be established (stale CRL, no CRL, OCSP unreachable)
 *  under fail-closed: 403.13 "revocation_unknown", never "revoked". */
refusal revocation_unknown_refusal() noexcept;

}  // namespace cbagate::identity
