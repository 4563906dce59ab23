#include "config/secret_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <system_error>

namespace cbagate::config {

std::optional<std::string> secret_file_problem(const std::string& path) {
  struct ::stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    return "cannot stat " + path + ": " + std::generic_category().message(err);
  }
  const unsigned mode = static_cast<unsigned>(st.st_mode) & 07777U;
  // Like ssh: any bit for group or others, read or write (a writable key is a replaceable key).
  if ((mode & 077U) == 0) return std::nullopt;
  char octal[8];
  std::snprintf(octal, sizeof octal, "%04o", mode);
  return path + " is accessible by group or others (mode " + octal +
         "); a secret must be readable by its owner only: chmod 600 " + path;
}

}  // namespace cbagate::config
