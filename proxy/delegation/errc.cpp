#include "delegation/errc.hpp"

#include "common/error.hpp"

#include <string>

namespace cbagate::delegation {
namespace {

std::string describe(errc e) {
  switch (e) {
    case errc::kdc_unreachable: return "KDC unreachable";
    case errc::unknown_user: return "user unknown to the KDC";
    case errc::user_disabled: return "user disabled or expired";
    case errc::delegation_refused: return "delegation refused by the KDC";
    case errc::keytab: return "proxy credential (keytab) unusable";
    case errc::internal: return "Kerberos internal error";
  }
  return "unknown delegation error";
}

}  // namespace

const boost::system::error_category& delegation_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.delegation");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), delegation_category()};
}

}  // namespace cbagate::delegation
