#pragma once
// A small HDR-like latency histogram: exact below 128, then 64 log-linear sub-buckets per power
// of two (relative error under 1.6 %). Fixed size, no allocation after construction, mergeable.
#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace cbagate::eas_load {

class histogram {
public:
  static constexpr unsigned sub_bits = 6;                     // 64 sub-buckets per octave
  static constexpr std::uint64_t linear = 2u << sub_bits;     // values below are exact (128)
  static constexpr std::size_t bucket_count = linear + (64 - sub_bits - 1) * (1u << sub_bits);

  /** Records one value (any unit; the tool uses microseconds). */
  void record(std::uint64_t v) noexcept {
    ++counts_[index_of(v)];
    ++total_;
    max_ = std::max(max_, v);
    min_ = std::min(min_, v);
    sum_ += v;
  }

  /** Adds every value of `other`. */
  void merge(const histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    max_ = std::max(max_, other.max_);
    min_ = std::min(min_, other.min_);
    sum_ += other.sum_;
  }

  /** The value at quantile q (0..1): the upper edge of the bucket holding it, never above max. */
  [[nodiscard]] std::uint64_t quantile(double q) const noexcept {
    if (total_ == 0) return 0;
    const double want_d = q * static_cast<double>(total_);
    auto want = static_cast<std::uint64_t>(want_d);
    if (static_cast<double>(want) < want_d) ++want;
    want = std::clamp<std::uint64_t>(want, 1, total_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
        seen += counts_[i];
        if (seen >= want) return std::min(upper_of(i), max_);
    }
    return max_;
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return total_; }
  [[nodiscard]] std::uint64_t max() const noexcept { return total_ ? max_ : 0; }
  [[nodiscard]] std::uint64_t min() const noexcept { return total_ ? min_ : 0; }
  [[nodiscard]] double mean() const noexcept {
    return total_ ? static_cast<double>(sum_) / static_cast<double>(total_) : 0.0;
  }

  static constexpr std::size_t index_of(std::uint64_t v) noexcept {
    if (v < linear) return static_cast<std::size_t>(v);
    const unsigned shift = static_cast<unsigned>(std::bit_width(v)) - (sub_bits + 1);
    const std::uint64_t sub = (v >> shift) - (1u << sub_bits);      // 0..63
    return static_cast<std::size_t>(linear + (shift - 1) * (1u << sub_bits) + sub);
  }

  static constexpr std::uint64_t upper_of(std::size_t i) noexcept {
    if (i < linear) return i;
    const std::size_t k = i - linear;
    const unsigned shift = static_cast<unsigned>(k >> sub_bits) + 1;
    const std::uint64_t sub = (k & ((1u << sub_bits) - 1)) + (1u << sub_bits);
    return ((sub + 1) << shift) - 1;
  }

private:
  std::array<std::uint64_t, bucket_count> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
  std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
  std::uint64_t sum_ = 0;
};

}  // namespace cbagate::eas_load
