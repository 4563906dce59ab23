#include "observability/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace cbagate::observability {

namespace {

constexpr std::string_view other_value = "other";

bool is_name_start(char c, bool colon_ok) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon_ok && c == ':');
}

bool is_name_char(char c, bool colon_ok) noexcept {
  return is_name_start(c, colon_ok) || (c >= '0' && c <= '9');
}

// https://prometheus.io/docs/concepts/data_model/#metric-names-and-labels
bool valid_name(std::string_view n, bool colon_ok) noexcept {
  if (n.empty() || !is_name_start(n.front(), colon_ok)) {
    return false;
  }
  return std::all_of(n.begin() + 1, n.end(), [&](char c) { return is_name_char(c, colon_ok); });
}

void check_metric_name(std::string_view name) {
  if (!valid_name(name, true)) {
    throw std::invalid_argument(fmt::format("metrics: bad metric name '{}'", name));
  }
}

void check_label_name(std::string_view metric, std::string_view label, bool histogram) {
  if (!valid_name(label, false) || label.starts_with("__") || (histogram && label == "le")) {
    throw std::invalid_argument(fmt::format("metrics: {}: bad label name '{}'", metric, label));
  }
}

// Text format 0.0.4: label values escape backslash, double quote and line feed.
void append_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out.push_back(c);
    }
  }
}

// Text format 0.0.4: HELP escapes backslash and line feed only.
void append_help(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out.push_back(c);
    }
  }
}

std::string render_labels(std::string_view metric, const label_set& labels, bool histogram) {
  std::string out;
  for (const auto& [name, value] : labels) {
    check_label_name(metric, name, histogram);
    if (!out.empty()) {
      out.push_back(',');
    }
    out += name;
    out += "=\"";
    append_label_value(out, value);
    out.push_back('"');
  }
  return out;
}

// Go's ParseFloat reads what fmt's shortest round-trip form writes, except the special values.
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    fmt::format_to(std::back_inserter(out), "{}", v);
  }
}

void append_series_name(std::string& out, std::string_view name, std::string_view suffix,
                        std::string_view labels, std::string_view extra_label = {}) {
  out += name;
  out += suffix;
  if (labels.empty() && extra_label.empty()) {
    return;
  }
  out.push_back('{');
  out += labels;
  if (!labels.empty() && !extra_label.empty()) {
    out.push_back(',');
  }
  out += extra_label;
  out.push_back('}');
}

void check_bounds(const std::vector<double>& bounds) {
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i]) || (i > 0 && !(bounds[i - 1] < bounds[i]))) {
      throw std::invalid_argument("metrics: histogram bounds must be finite and strictly increasing");
    }
  }
}

}  // namespace

histogram::histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  check_bounds(bounds_);
  counts_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
}

void histogram::observe(double v) noexcept {
  if (std::isnan(v)) {
    return;
  }
  // Buckets are inclusive upper bounds: the first bound >= v.
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  const auto i = static_cast<std::size_t>(it - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

std::uint64_t histogram::count() const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += bucket_count(i);
  }
  return total;
}

labeled_counter::labeled_counter(std::vector<std::string> values, std::vector<counter*> series,
                                 std::size_t other)
    : values_(std::move(values)), series_(std::move(series)), other_(other) {}

void labeled_counter::inc(std::string_view value, std::uint64_t n) noexcept {
  for (std::size_t i = 0; i < values_.size(); ++i) {
    if (values_[i] == value) {
      series_[i]->inc(n);
      return;
    }
  }
  series_[other_]->inc(n);
}

const counter& labeled_counter::get(std::string_view value) const noexcept {
  for (std::size_t i = 0; i < values_.size(); ++i) {
    if (values_[i] == value) {
      return *series_[i];
    }
  }
  return *series_[other_];
}

const registry::series* registry::find_or_add_family(std::string_view name, std::string_view help,
                                                     kind type, const std::string& labels,
                                                     family*& fam) {
  check_metric_name(name);
  const std::string key(name);
  if (auto it = by_name_.find(key); it != by_name_.end()) {
    fam = &families_[it->second];
    if (fam->type != type) {
      throw std::invalid_argument(
          fmt::format("metrics: '{}' is already registered with another type", name));
    }
    for (const auto& s : fam->members) {
      if (s.labels == labels) {
        return &s;
      }
    }
    return nullptr;
  }
  by_name_.emplace(key, families_.size());
  families_.push_back(family{key, std::string(help), type, {}, {}});
  fam = &families_.back();
  return nullptr;
}

counter& registry::add_counter(std::string_view name, std::string_view help, label_set labels) {
  const std::string rendered = render_labels(name, labels, false);
  const std::lock_guard lock(mutex_);
  family* fam = nullptr;
  if (const series* s = find_or_add_family(name, help, kind::counter, rendered, fam)) {
    return *std::get<counter*>(s->metric);
  }
  counter& c = counters_.emplace_back();
  fam->members.push_back(series{rendered, &c});
  return c;
}

gauge& registry::add_gauge(std::string_view name, std::string_view help, label_set labels) {
  const std::string rendered = render_labels(name, labels, false);
  const std::lock_guard lock(mutex_);
  family* fam = nullptr;
  if (const series* s = find_or_add_family(name, help, kind::gauge, rendered, fam)) {
    return *std::get<gauge*>(s->metric);
  }
  gauge& g = gauges_.emplace_back();
  fam->members.push_back(series{rendered, &g});
  return g;
}

histogram& registry::add_histogram(std::string_view name, std::string_view help,
                                   std::vector<double> bounds, label_set labels) {
  const std::string rendered = render_labels(name, labels, true);
  check_bounds(bounds);
  const std::lock_guard lock(mutex_);
  family* fam = nullptr;
  if (const series* s = find_or_add_family(name, help, kind::histogram, rendered, fam)) {
    return *std::get<histogram*>(s->metric);
  }
  histogram& h = histograms_.emplace_back(std::move(bounds));
  fam->members.push_back(series{rendered, &h});
  return h;
}

labeled_counter& registry::add_labeled_counter(std::string_view name, std::string_view help,
                                               std::string_view label,
                                               std::vector<std::string> values, label_set labels) {
  check_label_name(name, label, false);
  if (std::find(values.begin(), values.end(), other_value) == values.end()) {
    values.emplace_back(other_value);
  }
  std::vector<counter*> members;
  members.reserve(values.size());
  std::size_t other = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    label_set with_value = labels;
    with_value.emplace_back(std::string(label), values[i]);
    members.push_back(&add_counter(name, help, std::move(with_value)));
    if (values[i] == other_value) {
      other = i;
    }
  }
  const std::lock_guard lock(mutex_);
  return labeled_.emplace_back(labeled_counter(std::move(values), std::move(members), other));
}

void registry::add_sampled_gauge(std::string_view name, std::string_view help,
                                 std::function<std::vector<sample>()> collect) {
  const std::lock_guard lock(mutex_);
  family* fam = nullptr;
  find_or_add_family(name, help, kind::sampled, {}, fam);
  fam->collect = std::move(collect);
}

std::string registry::render() const {
  std::string out;
  const std::lock_guard lock(mutex_);
  for (const auto& fam : families_) {
    if (!fam.help.empty()) {
      out += "# HELP ";
      out += fam.name;
      out.push_back(' ');
      append_help(out, fam.help);
      out.push_back('\n');
    }
    out += "# TYPE ";
    out += fam.name;
    switch (fam.type) {
      case kind::counter: out += " counter\n"; break;
      case kind::gauge: out += " gauge\n"; break;
      case kind::histogram: out += " histogram\n"; break;
      case kind::sampled: out += " gauge\n"; break;
    }
    if (fam.type == kind::sampled && fam.collect) {
      for (const sample& smp : fam.collect()) {
        std::string rendered;
        try {
          rendered = render_labels(fam.name, smp.labels, false);
        } catch (const std::invalid_argument&) {
          continue;  // a bad label name is a programming error; never fail the scrape for it
        }
        append_series_name(out, fam.name, "", rendered);
        out.push_back(' ');
        append_double(out, smp.value);
        out.push_back('\n');
      }
    }
    for (const auto& s : fam.members) {
      if (const auto* c = std::get_if<counter*>(&s.metric)) {
        append_series_name(out, fam.name, "", s.labels);
        fmt::format_to(std::back_inserter(out), " {}\n", (*c)->value());
      } else if (const auto* g = std::get_if<gauge*>(&s.metric)) {
        append_series_name(out, fam.name, "", s.labels);
        fmt::format_to(std::back_inserter(out), " {}\n", (*g)->value());
      } else if (const auto* hp = std::get_if<histogram*>(&s.metric)) {
        const histogram& h = **hp;
        std::uint64_t cumulative = 0;
        const auto bounds = h.bounds();
        for (std::size_t i = 0; i <= bounds.size(); ++i) {
          cumulative += h.bucket_count(i);
          std::string le = "le=\"";
          if (i < bounds.size()) {
            append_double(le, bounds[i]);
          } else {
            le += "+Inf";
          }
          le.push_back('"');
          append_series_name(out, fam.name, "_bucket", s.labels, le);
          fmt::format_to(std::back_inserter(out), " {}\n", cumulative);
        }
        append_series_name(out, fam.name, "_sum", s.labels);
        out.push_back(' ');
        append_double(out, h.sum());
        out.push_back('\n');
        append_series_name(out, fam.name, "_count", s.labels);
        fmt::format_to(std::back_inserter(out), " {}\n", cumulative);
      }
    }
  }
  return out;
}

}  // namespace cbagate::observability
