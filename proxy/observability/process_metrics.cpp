#include "observability/process_metrics.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace cbagate::observability {
namespace {

using samples = std::vector<registry::sample>;

// /proc/self/statm: size resident ... in pages.
bool statm(double& virt, double& rss) {
  std::ifstream in("/proc/self/statm");
  unsigned long long size = 0, resident = 0;
  if (!(in >> size >> resident)) return false;
  const long page = ::sysconf(_SC_PAGESIZE);
  virt = static_cast<double>(size) * static_cast<double>(page);
  rss = static_cast<double>(resident) * static_cast<double>(page);
  return true;
}

double open_fds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  double n = 0;
  while (const dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n - 1;  // the descriptor of the directory listing itself
}

// Field 22 of /proc/self/stat (starttime, clock ticks after boot) + btime of /proc/stat.
double start_time() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return -1;
  const auto close = line.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return -1;
  std::istringstream fields(line.substr(close + 2));
  std::string f;
  unsigned long long ticks = 0;
  for (int i = 3; i <= 22 && fields >> f; ++i)
    if (i == 22) ticks = std::strtoull(f.c_str(), nullptr, 10);
  std::ifstream boot("/proc/stat");
  unsigned long long btime = 0;
  while (std::getline(boot, line))
    if (line.rfind("btime ", 0) == 0) btime = std::strtoull(line.c_str() + 6, nullptr, 10);
  const long hz = ::sysconf(_SC_CLK_TCK);
  if (btime == 0 || hz <= 0) return -1;
  return static_cast<double>(btime) + static_cast<double>(ticks) / static_cast<double>(hz);
}

}  // namespace

void register_process_metrics(registry& r, std::string_view version) {
  r.add_gauge("cbagate_build_info", "The running cbagate's version (value always 1)",
              {{"version", std::string(version)}})
      .set(1);
  r.add_sampled_gauge("process_resident_memory_bytes", "Resident memory size in bytes", [] {
    double virt = 0, rss = 0;
    return statm(virt, rss) ? samples{{{}, rss}} : samples{};
  });
  r.add_sampled_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", [] {
    double virt = 0, rss = 0;
    return statm(virt, rss) ? samples{{{}, virt}} : samples{};
  });
  r.add_sampled_gauge("process_open_fds", "Number of open file descriptors", [] {
    const double n = open_fds();
    return n >= 0 ? samples{{{}, n}} : samples{};
  });
  r.add_sampled_gauge("process_max_fds", "Maximum number of open file descriptors (soft limit)", [] {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return samples{};
    return samples{{{}, static_cast<double>(rl.rlim_cur)}};
  });
  const double started = start_time();
  r.add_sampled_gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds",
                      [started] { return started > 0 ? samples{{{}, started}} : samples{}; });
}

}  // namespace cbagate::observability
