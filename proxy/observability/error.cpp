#include "observability/error.hpp"

#include <string>

namespace cbagate::observability {

namespace {

// boost::system::error_category's destructor is protected and non-virtual by design (categories
// are never deleted through a base pointer), which -Wnon-virtual-dtor flags anyway.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "proxy.observability"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::bad_level:
        return "bad log level (expected trace, debug, info, warn, error, critical or off)";
      case errc::open_failed:
        return "log file cannot be opened";
    }
    return "unknown observability error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& observability_category() noexcept {
  static const category_impl instance;
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), observability_category()};
}

}  // namespace cbagate::observability
