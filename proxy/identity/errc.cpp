#include "identity/errc.hpp"

#include "common/error.hpp"

#include <string>

namespace cbagate::identity {
namespace {

std::string describe(errc e) {
  switch (e) {
    case errc::ca_load_failed: return "cannot load the client CA file";
    case errc::intermediates_load_failed: return "cannot load the client intermediates file";
    case errc::crl_load_failed: return "cannot load a CRL file";
    case errc::store_setup_failed: return "cannot set up the certificate store";
    case errc::issuing_cas_load_failed: return "cannot load the issuing CAs file";
  }
  return "unknown identity error";
}

}  // namespace

const boost::system::error_category& identity_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.identity");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), identity_category()};
}

}  // namespace cbagate::identity
