#include "observability/access_log.hpp"

#include "observability/detail/file.hpp"
#include "observability/detail/json.hpp"

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <thread>

#include <unistd.h>

namespace cbagate::observability {

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
  render_into(out, r, log_upn);
  return out;
}

void access_log::render_into(std::string& out, const access_record& r, bool log_upn) {
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
    const fmt::format_int text(v);
    out.append(text.data(), text.size());
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
  str("cert_subject", r.cert_subject, max_issuer_bytes);
  str("cert_serial", r.cert_serial);
  str("cert_issuer", r.cert_issuer, max_issuer_bytes);
  str("cert_sha256", r.cert_sha256);
  num("status", r.status);
  num("substatus", r.substatus);
  str("error", r.error);
  num("bytes_in", r.bytes_in);
  num("bytes_out", r.bytes_out);
  str("upstream", r.upstream);
  str("upstream_conn", r.upstream_conn);
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
}

// --- buffering and the writer thread -----------------------------------------------------------

struct access_log::impl {
  // One buffer per group of I/O threads (by thread id): a thread appends under a lock nobody
  // else takes except the writer, once per flush. A connection stays on its thread, so its
  // lines stay in order.
  static constexpr std::size_t shard_count = 8;
  struct alignas(64) shard {
    std::mutex mu;
    std::string buf;  // whole lines, each ending in '\n'
    std::size_t lines = 0;
  };

  impl(std::FILE* f, std::string p, bool own, bool upn, std::size_t queue_lines)
      : log_upn(upn), max_lines(queue_lines == 0 ? 1 : queue_lines), file(f), path(std::move(p)),
        owned(own) {
    writer = std::thread([this] { run(); });
  }
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  ~impl() {
    {
      const std::lock_guard l(wake_mu);
      stop = true;
    }
    wake_cv.notify_one();
    writer.join();  // writes every buffered line before it returns
    if (owned && file != nullptr) std::fclose(file);
  }

  void append(const access_record& r) {
    shard& sh = shards[std::hash<std::thread::id>{}(std::this_thread::get_id()) % shard_count];
    bool was_empty = false;
    bool crossed = false;
    {
      const std::lock_guard l(sh.mu);
      if (sh.lines >= max_lines) {
        dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      const std::size_t before = sh.buf.size();
      was_empty = before == 0;
      render_into(sh.buf, r, log_upn);
      sh.buf.push_back('\n');
      ++sh.lines;
      crossed = before < flush_bytes && sh.buf.size() >= flush_bytes;
    }
    // The writer is woken only when a buffer stops being empty (it then waits flush_interval
    // to gather more) or passes flush_bytes: not once per line.
    if (was_empty || crossed) {
      {
        const std::lock_guard l(wake_mu);
        pending = true;
        urgent = urgent || crossed;
      }
      wake_cv.notify_one();
    }
  }

  void run() {
    std::unique_lock l(wake_mu);
    for (;;) {
      wake_cv.wait(l, [this] { return stop || pending; });
      if (!stop) wake_cv.wait_for(l, flush_interval, [this] { return stop || urgent; });
      pending = false;
      urgent = false;
      const bool last = stop;
      l.unlock();
      {
        const std::lock_guard f(file_mu);
        write_out();
      }
      if (last) return;
      l.lock();
    }
  }

  // Writes every buffered line to `file`, one write(2) per non-empty buffer. Needs file_mu.
  void write_out() {
    for (shard& sh : shards) {
      {
        const std::lock_guard l(sh.mu);
        if (sh.buf.empty()) continue;
        out.swap(sh.buf);  // the shard gets the spare (with its capacity) back
        sh.lines = 0;
      }
      // Write errors (disk full) cannot be reported anywhere better than the lost lines.
      const int fd = ::fileno(file);
      std::size_t done = 0;
      while (done < out.size()) {
        const ssize_t n = ::write(fd, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      out.clear();
      if (out.capacity() > 16 * flush_bytes) out.shrink_to_fit();  // after a stall
    }
  }

  expected<void> reopen() {
    if (!owned) return {};
    auto f = detail::open_append(path);
    if (!f) return f.error();
    const std::lock_guard l(file_mu);
    write_out();  // what came before the rotation goes to the old file
    std::fclose(file);
    file = *f;
    return {};
  }

  const bool log_upn;
  const std::size_t max_lines;
  std::array<shard, shard_count> shards;
  std::atomic<std::uint64_t> dropped{0};

  std::mutex wake_mu;
  std::condition_variable wake_cv;
  bool pending = false;  // a buffer became non-empty (wake_mu)
  bool urgent = false;   // a buffer passed flush_bytes (wake_mu)
  bool stop = false;     // (wake_mu)

  std::mutex file_mu;  // file and out
  std::FILE* file;
  const std::string path;
  const bool owned;
  std::string out;  // the buffer being written

  std::thread writer;  // last: started once everything above exists
};

expected<std::unique_ptr<access_log>> access_log::open(std::string_view path, bool log_upn,
                                                       std::size_t queue_lines) {
  if (path.empty()) {
    return std::unique_ptr<access_log>(new access_log(nullptr));
  }
  if (path == "-") {
    return std::unique_ptr<access_log>(
        new access_log(std::make_unique<impl>(stdout, "-", false, log_upn, queue_lines)));
  }
  std::string file(path);
  auto f = detail::open_append(file);
  if (!f) {
    return f.error();
  }
  return std::unique_ptr<access_log>(
      new access_log(std::make_unique<impl>(*f, std::move(file), true, log_upn, queue_lines)));
}

access_log::access_log(std::unique_ptr<impl> i) : impl_(std::move(i)) {}

access_log::~access_log() = default;

void access_log::write(const access_record& r) {
  if (impl_) impl_->append(r);
}

expected<void> access_log::reopen() {
  if (!impl_) {
    return {};
  }
  return impl_->reopen();
}

std::uint64_t access_log::dropped() const noexcept {
  return impl_ ? impl_->dropped.load(std::memory_order_relaxed) : 0;
}

}  // namespace cbagate::observability
