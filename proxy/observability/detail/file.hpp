#pragma once
// Opening log files the same way everywhere: append, close-on-exec, created 0640.
#include "common/expected.hpp"

#include <cstdio>
#include <string>

namespace cbagate::observability::detail {

/**
 * Opens `path` for appending, creating it with mode 0640 (before umask) if it does not exist:
 * logs carry client addresses and possibly UPNs, so they are not world-readable. Close-on-exec.
 * Missing directories are not created.
 * @return the FILE* (the caller owns it: fclose), or the system error of open(2).
 */
expected<std::FILE*> open_append(const std::string& path) noexcept;

}  // namespace cbagate::observability::detail
