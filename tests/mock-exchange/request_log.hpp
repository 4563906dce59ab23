#pragma once
// The mock's request log: one JSON object per line, flushed per line, so tests can assert on
// what reached the backend (headers exactly as received, body size and hash, ...).
#include <boost/json/object.hpp>

#include <cstdio>
#include <mutex>
#include <string>

namespace cbagate::mock {

/** A JSON-lines sink; thread-safe. A default-constructed log discards everything. */
class request_log {
 public:
  request_log() = default;
  request_log(const request_log&) = delete;
  request_log& operator=(const request_log&) = delete;
  ~request_log();

  /**
   * Opens `path` for appending ("-" is stdout).
   * @return false (with errno set) when the file cannot be opened.
   */
  bool open(const std::string& path);

  /** True when lines are written somewhere. */
  [[nodiscard]] bool enabled() const noexcept { return file_ != nullptr; }

  /** Serializes `record` as one line and flushes it. */
  void write(const boost::json::object& record);

 private:
  std::mutex mu_;
  std::FILE* file_ = nullptr;
  bool owned_ = false;
};

}  // namespace cbagate::mock
