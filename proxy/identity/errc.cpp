#include "identity/errc.hpp"

#include <string>

namespace cbagate::identity {
namespace {

// boost::system::error_category (1.81) has a public non-virtual destructor by design (categories
// are never deleted through a base pointer); -Wnon-virtual-dtor cannot know that.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "proxy.identity"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::ca_load_failed: return "cannot load the client CA file";
      case errc::intermediates_load_failed: return "cannot load the client intermediates file";
      case errc::crl_load_failed: return "cannot load a CRL file";
      case errc::store_setup_failed: return "cannot set up the certificate store";
    }
    return "unknown identity error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& identity_category() noexcept {
  static const category instance;
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), identity_category()};
}

}  // namespace cbagate::identity
