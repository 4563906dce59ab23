#pragma once
// Named spdlog loggers, one per module, on one shared sink (STYLE.md 5.8).
#include "common/expected.hpp"

#include <spdlog/logger.h>

#include <memory>
#include <span>
#include <string_view>

namespace cbagate::observability {

/** The module names that get a logger: main, tls, http, upstream, delegation, admin, config,
 *  identity. */
std::span<const std::string_view> logger_names() noexcept;

/**
 * Creates (first call) or re-targets (later calls) the module loggers.
 *
 * All module loggers write through one shared, mutex-guarded sink with the pattern
 * `2024-05-01T12:00:00.123Z [info] [tls] message` (UTC). A later call swaps the shared sink's
 * target and sets the level; logger handles obtained before stay valid, so this is also the
 * reload and log-rotation (SIGHUP: call again with the same path) entry point.
 *
 * @param level trace, debug, info, warn (or warning), error, critical or off.
 * @param path  "-" for stderr (colours only when stderr is a terminal), otherwise a file opened
 *              for appending, created with mode 0640. Missing directories are not created.
 * @return errc::bad_level for an unknown level; the system error (ENOENT, EACCES, ...) when the
 *         file cannot be opened. On error the loggers keep their previous target and level.
 * Thread-safety: safe against concurrent logging and logger(); not to be called concurrently
 * with itself or set_level() (call it from the control thread: startup, reload).
 */
expected<void> init_logging(std::string_view level, std::string_view path);

/**
 * The logger of a module (see logger_names()); an unknown name gives the "main" logger.
 * Before init_logging() the loggers exist already, writing to stderr at level info.
 * Each call takes spdlog's registry lock: fetch the handle once and keep it.
 * Thread-safe. Never returns null.
 */
std::shared_ptr<spdlog::logger> logger(std::string_view module);

/**
 * Sets the level of every module logger (reload).
 * @return errc::bad_level for an unknown level (levels unchanged).
 * Thread-safety: as init_logging().
 */
expected<void> set_level(std::string_view level);

/** Parses a level name (trace, debug, info, warn, warning, error, critical, off); pure. */
expected<spdlog::level::level_enum> parse_level(std::string_view level) noexcept;

}  // namespace cbagate::observability
