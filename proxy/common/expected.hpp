#pragma once
// `expected<T>`: the return type of fallible pure functions (STYLE.md 5.2).
// std::expected is C++23; Boost.System's result<T> is the same idea and ships with Boost 1.81.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace cbagate {

/** A value or a boost::system::error_code. `r.has_value()`, `*r`, `r.error()`. */
template <class T>
using expected = boost::system::result<T, boost::system::error_code>;

using boost::system::error_code;

}  // namespace cbagate
