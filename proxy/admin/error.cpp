#include "admin/error.hpp"

#include "common/error.hpp"

#include <string>

namespace cbagate::admin {

namespace {

std::string describe(errc e) {
  switch (e) {
    case errc::bad_endpoint:
      return "admin endpoint must be ip:port or [ipv6]:port (an IP literal, no host name)";
  }
  return "unknown admin error";
}

}  // namespace

const boost::system::error_category& admin_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.admin");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), admin_category()};
}

}  // namespace cbagate::admin
