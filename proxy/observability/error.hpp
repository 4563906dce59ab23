#pragma once
// Error codes of the observability module (category "proxy.observability").
#include <boost/system/error_code.hpp>

#include <type_traits>

namespace cbagate::observability {

/** Failures reported by init_logging(), set_level() and access_log::open(). */
enum class errc {
  /** The level string is none of trace, debug, info, warn, warning, error, critical, off. */
  bad_level = 1,
  /** The log file could not be opened (the message of the system error is logged by the caller). */
  open_failed,
};

/** The "proxy.observability" category. Thread-safe. */
const boost::system::error_category& observability_category() noexcept;

/** Makes an error_code of the "proxy.observability" category. */
boost::system::error_code make_error_code(errc e) noexcept;

}  // namespace cbagate::observability

template <>
struct boost::system::is_error_code_enum<cbagate::observability::errc> : std::true_type {};
