#pragma once
// A small Prometheus registry: counters, gauges, histograms and fixed-label counters, rendered
// in the text exposition format 0.0.4. No globals: the server owns one registry and passes it to
// the modules, which declare their metrics once as a struct of references (STYLE.md 5.8).
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace cbagate::observability {

/** Constant labels of one series, in the order they are rendered: {{"status", "200"}}. */
using label_set = std::vector<std::pair<std::string, std::string>>;

/** A monotonically increasing count. Updates are lock-free (relaxed atomics). */
class counter {
 public:
  counter() = default;
  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;

  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

/** A value that goes up and down (open connections). Updates are lock-free. */
class gauge {
 public:
  gauge() = default;
  gauge(const gauge&) = delete;
  gauge& operator=(const gauge&) = delete;

  void inc(std::int64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  void dec(std::int64_t n = 1) noexcept { value_.fetch_sub(n, std::memory_order_relaxed); }
  void set(std::int64_t v) noexcept { value_.store(v, std::memory_order_relaxed); }
  std::int64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> value_{0};
};

/**
 * Observations counted in fixed buckets (upper bounds, inclusive: v <= le), plus their sum and
 * count. Updates are lock-free; a scrape racing with observe() may see the sum one observation
 * ahead of or behind the buckets, never torn values. NaN observations are ignored.
 */
class histogram {
 public:
  /** @param bounds strictly increasing, finite upper bounds; +Inf is implicit. */
  explicit histogram(std::vector<double> bounds);
  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;

  void observe(double v) noexcept;

  std::span<const double> bounds() const noexcept { return bounds_; }
  /** Non-cumulative count of bucket i; i == bounds().size() is the +Inf bucket. */
  std::uint64_t bucket_count(std::size_t i) const noexcept {
    return counts_[i].load(std::memory_order_relaxed);
  }
  /** Sum of the bucket counts. */
  std::uint64_t count() const noexcept;
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

/**
 * A counter family with one label whose values are declared up front (rejection reasons,
 * status classes). The cardinality is fixed at registration: never use it for UPNs, client IPs
 * or anything a client chooses. Values not declared are counted under "other", which is always
 * a series of the family.
 */
class labeled_counter {
 public:
  /** The series of the i-th declared value (declaration order). Precondition: i < size(). */
  counter& at(std::size_t i) noexcept { return *series_[i]; }
  const counter& at(std::size_t i) const noexcept { return *series_[i]; }
  /** Adds n to the series of `value`, or to "other" when `value` was not declared. */
  void inc(std::string_view value, std::uint64_t n = 1) noexcept;
  /** The series of `value`, or of "other". */
  const counter& get(std::string_view value) const noexcept;
  /** Declared values plus "other" when it was not declared. */
  std::span<const std::string> values() const noexcept { return values_; }
  std::size_t size() const noexcept { return values_.size(); }

 private:
  friend class registry;
  labeled_counter(std::vector<std::string> values, std::vector<counter*> series, std::size_t other);

  std::vector<std::string> values_;
  std::vector<counter*> series_;
  std::size_t other_;
};

/**
 * The set of metrics one server exports.
 *
 * Each add_* registers one series (name + constant labels) under a family (name). Series of
 * one family must share its type; the exposition prints # HELP and # TYPE once per family (help
 * of the first registration), families and series in registration order. Registering the same
 * name and labels again returns the existing series.
 *
 * Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* without a
 * leading "__" (and not "le" on histograms). These are programming errors: add_* throws
 * std::invalid_argument for a bad name, a type clash, or bad histogram bounds (registration
 * happens at startup, never on the data plane).
 *
 * Thread-safety: registration and render() are mutex-guarded; updates through the returned
 * references are lock-free. References stay valid for the registry's lifetime.
 */
class registry {
 public:
  registry() = default;
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  counter& add_counter(std::string_view name, std::string_view help, label_set labels = {});
  gauge& add_gauge(std::string_view name, std::string_view help, label_set labels = {});
  /** @param bounds strictly increasing finite upper bounds (+Inf is added). */
  histogram& add_histogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                           label_set labels = {});
  /**
   * Registers one counter series per value of `label`, plus "other" (see labeled_counter).
   * @param labels constant labels rendered before `label`.
   */
  labeled_counter& add_labeled_counter(std::string_view name, std::string_view help,
                                       std::string_view label, std::vector<std::string> values,
                                       label_set labels = {});

  /** One series of a sampled family: its labels and its value at scrape time. */
  struct sample {
    label_set labels;
    double value = 0;
  };
  /**
   * A gauge family whose series are computed at each scrape by `collect` (certificate lifetimes
   * by subject, process RSS): for values that live elsewhere and label sets known only at run
   * time, bounded by the configuration (never by what clients send). `collect` runs under the
   * registry's lock on the scraping thread: it must be cheap, thread-safe and must not call the
   * registry. A family with no sample renders its HELP and TYPE only. Registering the same name
   * again replaces the callback (a reload).
   */
  void add_sampled_gauge(std::string_view name, std::string_view help,
                         std::function<std::vector<sample>()> collect);

  /** The Prometheus text exposition (format 0.0.4) of every series. */
  std::string render() const;

 private:
  enum class kind { counter, gauge, histogram, sampled };
  using metric_ptr = std::variant<counter*, gauge*, histogram*>;
  struct series {
    std::string labels;  // rendered, without braces: a="1",b="2"
    metric_ptr metric;
  };
  struct family {
    std::string name;
    std::string help;
    kind type;
    std::vector<series> members;
    std::function<std::vector<sample>()> collect;  // kind::sampled only
  };

  // Finds or creates the family; returns the existing series of these labels, or null.
  // Precondition: mutex_ held.
  const series* find_or_add_family(std::string_view name, std::string_view help, kind type,
                                   const std::string& labels, family*& fam);

  mutable std::mutex mutex_;
  std::vector<family> families_;
  std::unordered_map<std::string, std::size_t> by_name_;
  std::deque<counter> counters_;
  std::deque<gauge> gauges_;
  std::deque<histogram> histograms_;
  std::deque<labeled_counter> labeled_;
};

}  // namespace cbagate::observability
