#include "request_log.hpp"

#include <boost/json/serialize.hpp>

namespace cbagate::mock {

request_log::~request_log() {
  if (owned_ && file_ != nullptr) std::fclose(file_);
}

bool request_log::open(const std::string& path) {
  if (path == "-") {
    file_ = stdout;
    owned_ = false;
    return true;
  }
  file_ = std::fopen(path.c_str(), "ae");
  owned_ = file_ != nullptr;
  return file_ != nullptr;
}

void request_log::write(const boost::json::object& record) {
  if (file_ == nullptr) return;
  std::string line = boost::json::serialize(record);
  line += '\n';
  std::lock_guard lock(mu_);
  std::fwrite(line.data(), 1, line.size(), file_);
  std::fflush(file_);
}

}  // namespace cbagate::mock
