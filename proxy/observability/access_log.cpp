#include "observability/access_log.hpp"

#include "observability/detail/file.hpp"
#include "observability/detail/json.hpp"

#include <fmt/format.h>
#include <spdlog/async_logger.h>
#include <spdlog/details/thread_pool.h>
#include <spdlog/sinks/base_sink.h>

#include <cstdio>
#include <mutex>

namespace cbagate::observability {

namespace detail {

// Writes each message payload as one line to a FILE*, flushing after each line. Its own sink
// rather than spdlog's basic_file_sink because rotation needs "reopen by name, append, and keep
// the old file on failure", which spdlog 1.10 does not offer (its truncate() truncates).
class line_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  line_sink(std::FILE* f, std::string path, bool owned) : file_(f), path_(std::move(path)), owned_(owned) {}

  line_sink(const line_sink&) = delete;
  line_sink& operator=(const line_sink&) = delete;

  ~line_sink() override {
    if (owned_ && file_ != nullptr) {
      std::fclose(file_);
    }
  }

  expected<void> reopen() {
    if (!owned_) {
      return {};
    }
    auto f = open_append(path_);
    if (!f) {
      return f.error();
    }
    const std::lock_guard lock(mutex_);
    std::fclose(file_);
    file_ = *f;
    return {};
  }

 protected:
  // spdlog::sinks::base_sink
  void sink_it_(const spdlog::details::log_msg& msg) override {
    // Write errors (disk full) cannot be reported anywhere better than the dropped line itself.
    std::fwrite(msg.payload.data(), 1, msg.payload.size(), file_);
    std::fputc('\n', file_);
    std::fflush(file_);
  }
  void flush_() override { std::fflush(file_); }

 private:
  std::FILE* file_;
  std::string path_;
  bool owned_;
};

}  // namespace detail

namespace {

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

// The query with the user taken out, for log_upn = false. ActiveSync sends either plain pairs
// (Cmd=Sync&User=alice&DeviceId=..&DeviceType=..) or one base64 blob that embeds the user
// ([MS-ASHTTP] 2.2.1.1.1.1); the blob has no '=' pairs we could keep, so it goes as a whole.
std::string redact_query(std::string_view q) {
  if (q.empty()) {
    return {};
  }
  std::string out;
  out.reserve(q.size());
  std::size_t start = 0;
  while (start <= q.size()) {
    const std::size_t amp = q.find('&', start);
    const std::string_view part = q.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    const std::size_t eq = part.find('=');
    if (start > 0) {
      out.push_back('&');
    }
    if (eq == std::string_view::npos) {
      if (!part.empty()) {
        out += "redacted";
      }
    } else if (iequals(part.substr(0, eq), "user")) {
      out.append(part.substr(0, eq + 1));
      out += "redacted";
    } else {
      out.append(part);
    }
    if (amp == std::string_view::npos) {
      break;
    }
    start = amp + 1;
  }
  return out;
}

}  // namespace

std::string access_log::render_json(const access_record& r, bool log_upn) {
  std::string out;
  out.reserve(768);
  bool first = true;
  const auto k = [&](std::string_view name) {
    out.push_back(first ? '{' : ',');
    first = false;
    out.push_back('"');
    out.append(name);
    out += "\":";
  };
  const auto str = [&](std::string_view name, std::string_view v, std::size_t max = max_field_bytes) {
    k(name);
    detail::append_json_string(out, v, max);
  };
  const auto num = [&](std::string_view name, auto v) {
    k(name);
    fmt::format_to(std::back_inserter(out), "{}", v);
  };
  const auto boolean = [&](std::string_view name, bool v) {
    k(name);
    out += v ? "true" : "false";
  };

  k("time");
  out.push_back('"');
  detail::append_rfc3339_ms(out, r.time);
  out.push_back('"');
  num("conn_id", r.conn_id);
  num("req_id", r.req_id);
  str("client", r.client);
  str("sni", r.sni);
  str("tls_version", r.tls_version);
  boolean("tls_resumed", r.tls_resumed);
  str("method", r.method);
  str("path", r.path, max_path_bytes);
  if (log_upn) {
    str("query", r.query);
  } else {
    str("query", redact_query(r.query));
  }
  str("route", r.route);
  if (log_upn) {
    k("upn");
    if (r.upn) {
      detail::append_json_string(out, *r.upn, max_field_bytes);
    } else {
      out += "null";
    }
  }
  str("cert_serial", r.cert_serial);
  str("cert_issuer", r.cert_issuer, max_issuer_bytes);
  str("cert_sha256", r.cert_sha256);
  num("status", r.status);
  num("substatus", r.substatus);
  str("error", r.error);
  num("bytes_in", r.bytes_in);
  num("bytes_out", r.bytes_out);
  str("upstream", r.upstream);
  num("upstream_status", r.upstream_status);
  num("total_us", r.total_us);
  num("upstream_connect_us", r.upstream_connect_us);
  num("upstream_first_byte_us", r.upstream_first_byte_us);
  num("delegation_us", r.delegation_us);
  str("user_agent", r.user_agent);
  k("extra");
  out.push_back('{');
  bool first_extra = true;
  for (const auto& [name, value] : r.extra) {
    if (!first_extra) {
      out.push_back(',');
    }
    first_extra = false;
    detail::append_json_string(out, name, max_field_bytes);
    out.push_back(':');
    detail::append_json_string(out, value, max_field_bytes);
  }
  out += "}}";
  return out;
}

expected<std::unique_ptr<access_log>> access_log::open(std::string_view path, bool log_upn,
                                                       std::size_t queue_lines) {
  if (path.empty()) {
    return std::unique_ptr<access_log>(new access_log(log_upn, nullptr, nullptr, nullptr));
  }
  std::shared_ptr<detail::line_sink> sink;
  if (path == "-") {
    sink = std::make_shared<detail::line_sink>(stdout, "-", false);
  } else {
    std::string file(path);
    auto f = detail::open_append(file);
    if (!f) {
      return f.error();
    }
    sink = std::make_shared<detail::line_sink>(*f, std::move(file), true);
  }
  // Our own pool with one writer thread, not spdlog's global one: each access_log owns its queue
  // and its destructor drains it. The logger is not registered in spdlog's registry.
  auto pool = std::make_shared<spdlog::details::thread_pool>(queue_lines == 0 ? 1 : queue_lines, 1);
  auto logger = std::make_shared<spdlog::async_logger>("access", sink, pool,
                                                       spdlog::async_overflow_policy::overrun_oldest);
  logger->set_level(spdlog::level::info);
  return std::unique_ptr<access_log>(
      new access_log(log_upn, std::move(pool), std::move(sink), std::move(logger)));
}

access_log::access_log(bool log_upn, std::shared_ptr<spdlog::details::thread_pool> pool,
                       std::shared_ptr<detail::line_sink> sink, std::shared_ptr<spdlog::logger> logger)
    : log_upn_(log_upn), pool_(std::move(pool)), sink_(std::move(sink)), logger_(std::move(logger)) {}

access_log::~access_log() = default;

void access_log::write(const access_record& r) {
  if (!logger_) {
    return;
  }
  const std::string line = render_json(r, log_upn_);
  // The string_view overload: the line is not a format string (it is full of braces).
  logger_->log(spdlog::level::info, spdlog::string_view_t(line.data(), line.size()));
}

expected<void> access_log::reopen() {
  if (!sink_) {
    return {};
  }
  return sink_->reopen();
}

std::uint64_t access_log::dropped() const noexcept {
  return pool_ ? static_cast<std::uint64_t>(pool_->overrun_counter()) : 0;
}

}  // namespace cbagate::observability
