#include "routing/error.hpp"

#include "common/error.hpp"

#include <string>

namespace cbagate::routing {
namespace {

std::string describe(errc e) {
  switch (e) {
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

}  // namespace

const boost::system::error_category& routing_category() noexcept {
  static const enum_category<errc, describe> instance("proxy.routing");
  return instance;
}

boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), routing_category()};
}

}  // namespace cbagate::routing
