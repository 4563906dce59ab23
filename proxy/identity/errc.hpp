#pragma once
// Errors of the identity module (category "proxy.identity"): loading the client trust material
// at startup or reload. Per-handshake outcomes are not errors but `identity::rejection` values.
#include <boost/system/error_code.hpp>

#include <type_traits>

namespace cbagate::identity {

/** Why a verifier could not be built. Values are stable. */
enum class errc {
  ca_load_failed = 1,         ///< client_ca: unreadable, unparsable or holds no certificate
  intermediates_load_failed,  ///< client_intermediates: unreadable, unparsable or empty
  crl_load_failed,            ///< a CRL file: unreadable, neither PEM nor DER CRLs
  store_setup_failed,         ///< OpenSSL refused to build the X509_STORE (out of memory, ...)
  issuing_cas_load_failed,    ///< auth.issuing_cas: unreadable, unparsable, empty or not a CA
};

/** The "proxy.identity" category. Thread-safe, a function-local static. */
const boost::system::error_category& identity_category() noexcept;

/** Makes `errc` usable as a boost::system::error_code. */
boost::system::error_code make_error_code(errc e) noexcept;

}  // namespace cbagate::identity

template <>
struct boost::system::is_error_code_enum<cbagate::identity::errc> : std::true_type {};
