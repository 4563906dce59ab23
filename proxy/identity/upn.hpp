#pragma once
// UPN extraction from a client certificate (STYLE.md 5.5 "UPN rules").
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include <openssl/x509.h>

#include "identity/client_identity.hpp"

namespace cbagate::identity {

/** Where a UPN may come from (config `auth.upn_sources`). */
struct upn_options {
  bool from_san = true;          ///< SAN otherName 1.3.6.1.4.1.311.20.2.3 (szOID_NT_PRINCIPAL_NAME)
  bool from_subject = false;     ///< the Subject's single CN, when it has the form local@domain
  /** No UPN from the sources above is not a refusal: the directory locates the account by the
   *  certificate's strong strings (auth.upn_sources "directory"; extract_upn ignores it, the
   *  verifier accepts such a chain with an empty UPN and routing asks the directory). */
  bool from_directory = false;
  std::size_t max_length = 256;  ///< in bytes of UTF-8
};

/** The UPN, or why there is none. `detail` is log-safe and never echoes the rejected bytes. */
struct upn_result {
  std::string upn;  ///< byte-for-byte the certificate's value; set only when reason == none
  rejection reason = rejection::no_upn;
  std::string detail;

  bool ok() const noexcept { return reason == rejection::none; }
};

/**
 * The UPN of a leaf certificate.
 *
 * SAN (when `from_san`): every otherName with type-id NID_ms_upn is counted. Two or more ->
 * multi_upn (even when equal). Exactly one -> its value must be a UTF8String and pass
 * `check_upn`, else bad_upn_encoding; an unreadable or duplicated subjectAltName extension ->
 * invalid. A bad SAN UPN never falls back to the subject (fail closed).
 * Subject (when `from_subject` and the SAN gave none): the Subject must hold exactly one CN;
 * a CN without '@' is not a UPN (no_upn); a CN with '@' must be a UTF8String passing `check_upn`
 * (else bad_upn_encoding). Nothing found -> no_upn.
 *
 * The value is never case-folded or otherwise normalized.
 * @param leaf the certificate; not modified. Thread-safe for concurrent calls on the same leaf.
 */
upn_result extract_upn(const X509* leaf, const upn_options& options);

/**
 * Same as `extract_upn` for a DER-encoded certificate (fuzzer and test entry point).
 * DER that does not parse as a certificate -> invalid. Never throws for any input.
 */
upn_result extract_upn_der(std::span<const unsigned char> der, const upn_options& options);

/**
 * Validates UPN bytes: 1..max_length bytes of well-formed UTF-8 (no overlong forms, surrogates
 * or code points above U+10FFFF); no C0 control (NUL, CR, LF, ...), DEL or C1 control; no
 * whitespace (ASCII or Unicode White_Space) and no invisible formatting character (zero-width,
 * bidi embedding/override/isolate, BOM), which could make a log line or an admin's comparison
 * lie; exactly one '@' with a non-empty local part and domain.
 * @return rejection::none, or bad_upn_encoding with a log-safe reason in `detail`.
 */
rejection check_upn(std::string_view upn, std::size_t max_length, std::string& detail);

}  // namespace cbagate::identity
