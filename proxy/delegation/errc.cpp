#include "delegation/errc.hpp"

#include <string>

namespace cbagate::delegation {
namespace {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "proxy.delegation"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::kdc_unreachable: return "KDC unreachable";
      case errc::unknown_user: return "user unknown to the KDC";
      case errc::user_disabled: return "user disabled or expired";
      case errc::delegation_refused: return "delegation refused by the KDC";
      case errc::keytab: return "proxy credential (keytab) unusable";
      case errc::internal: return "Kerberos internal error";
    }
    return "unknown delegation error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& delegation_category() noexcept {
  static const category instance;
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), delegation_category()};
}

}  // namespace cbagate::delegation
