#include "routing/error.hpp"

#include <string>

namespace cbagate::routing {
namespace {

// boost::system::error_category (1.81) has a public non-virtual destructor by design (categories
// are never deleted through a base pointer); -Wnon-virtual-dtor cannot know that.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "proxy.routing"; }

  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::bad_target_form: return "request-target is not origin-form or absolute-form";
      case errc::bad_character: return "forbidden character in request-target";
      case errc::bad_escape: return "malformed percent-escape in path";
      case errc::encoded_separator: return "encoded '/', '\\' or NUL in path";
      case errc::double_encoding: return "double percent-encoding in path";
      case errc::bad_utf8: return "percent-decoded path is not valid UTF-8";
      case errc::case_fold_confusable: return "path character case-folds onto ASCII";
      case errc::trailing_dot_or_space: return "path segment ends in a dot or a space";
      case errc::dot_segment_above_root: return "'..' above the root of the path";
      case errc::target_too_long: return "request-target too long";
      case errc::bad_route_prefix: return "route prefix is not a normalized absolute path";
      case errc::duplicate_route_prefix: return "two routes have the same prefix";
    }
    return "unknown routing error";
  }
};
#pragma GCC diagnostic pop

}  // namespace

const boost::system::error_category& routing_category() noexcept {
  static const category instance;
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), routing_category()};
}

}  // namespace cbagate::routing
