#pragma once
// detail: building an OCSP request for one CertID and reading the response (RFC 6960).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <openssl/x509.h>

#include "revocation/checker.hpp"
#include "revocation/fetch.hpp"

namespace cbagate::revocation::detail {

/** The DER OCSPRequest for (issuer, serial) with a SHA-1 CertID and no nonce (answers are
 *  cached, as a CA's pre-signed responses are). Empty with `err` set on failure. */
std::string make_ocsp_request(X509* issuer, std::string_view serial, std::string& err);

struct ocsp_result {
  fetch_error error = fetch_error::none;   ///< none: `st` is the answer
  std::string message;                     ///< on error
  status st = status::unknown;             ///< good, revoked, or unknown (ocsp_unknown)
  std::string_view reason;                 ///< revoked: "keyCompromise" or "revoked"
  std::int64_t this_update = 0;
  std::optional<std::int64_t> next_update;
};

/**
 * Reads a DER OCSPResponse: responseStatus successful, BasicOCSPResponse signed by `issuer` or
 * by a responder certificate issued by it with the OCSPSigning EKU, a SingleResponse for
 * exactly (issuer, serial), thisUpdate/nextUpdate within `skew_seconds` of now.
 */
ocsp_result read_ocsp_response(std::string_view der, X509* issuer, std::string_view serial,
                               long skew_seconds);

}  // namespace cbagate::revocation::detail
