#include "admin/error.hpp"

#include <string>

namespace cbagate::admin {

namespace {

// boost::system::error_category's destructor is protected and non-virtual by design (categories
// are never deleted through a base pointer), which -Wnon-virtual-dtor flags anyway.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "proxy.admin"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::bad_endpoint:
        return "admin endpoint must be ip:port or [ipv6]:port (an IP literal, no host name)";
    }
    return "unknown admin error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& admin_category() noexcept {
  static const category_impl instance;
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), admin_category()};
}

}  // namespace cbagate::admin
