#pragma once
// Errors of the delegation module (category "proxy.delegation"): why no Negotiate token could be
// made for a user. Classified from the krb5 error code behind the GSS minor status, never from
// message text.
#include <boost/system/error_code.hpp>

#include <type_traits>

namespace cbagate::delegation {

/** Why a token could not be made. Values are stable. HTTP mapping in comments. */
enum class errc {
  kdc_unreachable = 1,  ///< no KDC answered, the deadline passed or the pool is full (503)
  unknown_user,         ///< the KDC does not know the user's principal (403)
  user_disabled,        ///< the user's principal is locked out or expired (403)
  delegation_refused,   ///< the KDC refused S4U2Self/S4U2Proxy for this user or target (403)
  keytab,               ///< the proxy's own credential: keytab missing, stale or rejected (503)
  internal,             ///< anything else (bad name, clock skew, GSS failure) (500)
};

/** The "proxy.delegation" category. Thread-safe, a function-local static. */
const boost::system::error_category& delegation_category() noexcept;

/** Makes `errc` usable as a boost::system::error_code. */
boost::system::error_code make_error_code(errc e) noexcept;

}  // namespace cbagate::delegation

template <>
struct boost::system::is_error_code_enum<cbagate::delegation::errc> : std::true_type {};
