#include "observability/error.hpp"

#include "common/error.hpp"

#include <string>

namespace cbagate::observability {

namespace {

std::string describe(errc e) {
  switch (e) {
    case errc::bad_level:
      return "bad log level (expected trace, debug, info, warn, error, critical or off)";
    case errc::open_failed:
      return "log file cannot be opened";
  }
  return "unknown observability error";
}

}  // namespace

const boost::system::error_category& observability_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.observability");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), observability_category()};
}

}  // namespace cbagate::observability
