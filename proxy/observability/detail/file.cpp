#include "observability/detail/file.hpp"

#include <cerrno>

#include <fcntl.h>
#include <unistd.h>

namespace cbagate::observability::detail {

expected<std::FILE*> open_append(const std::string& path) noexcept {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    return error_code(errno, boost::system::system_category());
  }
  std::FILE* f = ::fdopen(fd, "a");
  if (f == nullptr) {
    const int err = errno;
    ::close(fd);
    return error_code(err, boost::system::system_category());
  }
  return f;
}

}  // namespace cbagate::observability::detail
