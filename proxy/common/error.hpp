#pragma once
// Category helper for the modules' `enum class errc` (STYLE.md 5.2): each module describes its
// enumerators in one function and gets a boost::system category named "proxy.<module>".
#include <string>

#include <boost/system/error_category.hpp>

namespace cbagate {

// boost::system::error_category's destructor is protected and non-virtual by design (categories
// are never deleted through a base pointer), which -Wnon-virtual-dtor flags anyway.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
/**
 * An error category whose messages come from `Describe`. Use one function-local static per
 * module: `static const enum_category<errc, describe> instance("proxy.routing");`.
 * Thread-safe (immutable).
 */
template <class Enum, std::string (*Describe)(Enum)>
class enum_category final : public boost::system::error_category {
 public:
  explicit enum_category(const char* name) noexcept : name_(name) {}
  const char* name() const noexcept override { return name_; }
  std::string message(int ev) const override { return Describe(static_cast<Enum>(ev)); }

 private:
  const char* name_;
};
#pragma GCC diagnostic pop

}  // namespace cbagate
