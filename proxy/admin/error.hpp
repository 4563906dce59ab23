#pragma once
// Error codes of the admin module (category "proxy.admin").
#include <boost/system/error_code.hpp>

#include <type_traits>

namespace cbagate::admin {

enum class errc {
  /** The endpoint is not "ip:port" / "[ipv6]:port" with an IP literal and a port 0..65535. */
  bad_endpoint = 1,
};

/** The "proxy.admin" category. Thread-safe. */
const boost::system::error_category& admin_category() noexcept;

boost::system::error_code make_error_code(errc e) noexcept;

}  // namespace cbagate::admin

template <>
struct boost::system::is_error_code_enum<cbagate::admin::errc> : std::true_type {};
