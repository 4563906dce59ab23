#pragma once
// The process_* metrics of the Prometheus client libraries (RSS, virtual memory, open and
// maximum descriptors, start time) and cbagate_build_info{version}, read from /proc at scrape
// time (issue 13).
#include <string_view>

#include "observability/metrics.hpp"

namespace cbagate::observability {

/**
 * Registers process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 * process_max_fds (the soft RLIMIT_NOFILE), process_start_time_seconds (unix seconds) and
 * cbagate_build_info{version} = 1. Linux only (/proc/self); a value that cannot be read is left
 * out of the scrape rather than shown as 0.
 */
void register_process_metrics(registry& r, std::string_view version);

}  // namespace cbagate::observability
