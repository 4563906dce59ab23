#include "observability/log.hpp"

#include "observability/detail/file.hpp"
#include "observability/error.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/ansicolor_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <string>
#include <vector>

namespace cbagate::observability {

namespace {

constexpr std::array<std::string_view, 10> module_names{
    "main", "tls", "http", "upstream", "delegation", "admin", "config", "identity",
    "revocation", "directory"};

constexpr std::string_view default_logger = "main";

// ISO 8601 UTC with milliseconds, then level and logger name; %^..%$ is the colour range, which
// the colour sink leaves out when stderr is not a terminal.
constexpr const char* line_pattern = "%Y-%m-%dT%H:%M:%S.%eZ [%^%l%$] [%n] %v";

using shared_sink = spdlog::sinks::dist_sink_mt;

std::shared_ptr<shared_sink> sink_of(const spdlog::logger& l) {
  // Reading the vector is safe: loggers are built with exactly one sink and it never changes;
  // what changes is the dist sink's own target list, under its mutex.
  const auto& sinks = l.sinks();
  if (sinks.empty()) {
    return nullptr;
  }
  return std::dynamic_pointer_cast<shared_sink>(sinks.front());
}

spdlog::sink_ptr make_stderr_sink() {
  auto s = std::make_shared<spdlog::sinks::ansicolor_stderr_sink_mt>(spdlog::color_mode::automatic);
  s->set_formatter(
      std::make_unique<spdlog::pattern_formatter>(line_pattern, spdlog::pattern_time_type::utc));
  return s;
}

// The spdlog registry is the one global we use (STYLE.md 5.3); the loggers are created in it once
// and never dropped, so the handles that modules cache stay valid across reloads.
void ensure_loggers() {
  if (spdlog::get(std::string(default_logger))) {
    return;
  }
  auto sink = std::make_shared<shared_sink>(std::vector<spdlog::sink_ptr>{make_stderr_sink()});
  for (auto name : module_names) {
    auto l = std::make_shared<spdlog::logger>(std::string(name), sink);
    l->set_level(spdlog::level::info);
    l->flush_on(spdlog::level::trace);
    try {
      spdlog::register_logger(l);
    } catch (const spdlog::spdlog_ex&) {
      // Another thread registered it first; theirs is as good, and init_logging() re-targets
      // every distinct shared sink it finds.
    }
  }
  if (auto main = spdlog::get(std::string(default_logger))) {
    spdlog::set_default_logger(main);
  }
}

std::vector<std::shared_ptr<spdlog::logger>> module_loggers() {
  ensure_loggers();
  std::vector<std::shared_ptr<spdlog::logger>> out;
  out.reserve(module_names.size());
  for (auto name : module_names) {
    if (auto l = spdlog::get(std::string(name))) {
      out.push_back(std::move(l));
    }
  }
  return out;
}

}  // namespace

std::span<const std::string_view> logger_names() noexcept { return module_names; }

expected<spdlog::level::level_enum> parse_level(std::string_view level) noexcept {
  using spdlog::level::level_enum;
  struct entry {
    std::string_view name;
    level_enum value;
  };
  static constexpr std::array<entry, 8> table{{{"trace", level_enum::trace},
                                               {"debug", level_enum::debug},
                                               {"info", level_enum::info},
                                               {"warn", level_enum::warn},
                                               {"warning", level_enum::warn},
                                               {"error", level_enum::err},
                                               {"critical", level_enum::critical},
                                               {"off", level_enum::off}}};
  for (const auto& e : table) {
    if (e.name == level) {
      return e.value;
    }
  }
  return make_error_code(errc::bad_level);
}

expected<void> init_logging(std::string_view level, std::string_view path) {
  auto lvl = parse_level(level);
  if (!lvl) {
    return lvl.error();
  }
  spdlog::sink_ptr target;
  if (path == "-") {
    target = make_stderr_sink();
  } else {
    const std::string file(path);
    // Open it ourselves first: this creates the file 0640 (spdlog would use the umask default),
    // reports the errno (ENOENT, EACCES) that spdlog turns into text, and does not create
    // missing directories as spdlog would.
    auto probe = detail::open_append(file);
    if (!probe) {
      return probe.error();
    }
    std::fclose(*probe);
    try {
      target = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file, false);
    } catch (const spdlog::spdlog_ex&) {
      return make_error_code(errc::open_failed);
    }
    target->set_formatter(
        std::make_unique<spdlog::pattern_formatter>(line_pattern, spdlog::pattern_time_type::utc));
  }
  std::vector<shared_sink*> done;
  for (const auto& l : module_loggers()) {
    if (auto s = sink_of(*l); s && std::find(done.begin(), done.end(), s.get()) == done.end()) {
      s->set_sinks({target});
      done.push_back(s.get());
    }
    l->set_level(*lvl);
  }
  return {};
}

std::shared_ptr<spdlog::logger> logger(std::string_view module) {
  if (auto l = spdlog::get(std::string(module))) {
    return l;
  }
  ensure_loggers();
  if (auto l = spdlog::get(std::string(module))) {
    return l;
  }
  if (auto l = spdlog::get(std::string(default_logger))) {
    return l;
  }
  // Unreachable unless someone dropped our loggers from the registry; still never null.
  return std::make_shared<spdlog::logger>(std::string(default_logger), make_stderr_sink());
}

expected<void> set_level(std::string_view level) {
  auto lvl = parse_level(level);
  if (!lvl) {
    return lvl.error();
  }
  for (const auto& l : module_loggers()) {
    l->set_level(*lvl);
  }
  return {};
}

}  // namespace cbagate::observability
