#include "revocation/checker.hpp"

#include "common/error.hpp"

#include <string>

namespace cbagate::revocation {
namespace {

std::string describe(errc e) {
  switch (e) {
    case errc::crl_load_failed: return "cannot load a CRL file";
  }
  return "unknown revocation error";
}

}  // namespace

const boost::system::error_category& revocation_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.revocation");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), revocation_category()};
}

std::string_view to_string(status s) noexcept {
  switch (s) {
    case status::good: return "good";
    case status::revoked: return "revoked";
    case status::unknown: return "unknown";
  }
  return "unknown";
}

std::string_view to_string(source s) noexcept {
  switch (s) {
    case source::none: return "none";
    case source::crl_file: return "crl_file";
    case source::cdp: return "cdp";
    case source::ocsp: return "ocsp";
  }
  return "none";
}

}  // namespace cbagate::revocation
