#include "upstream/health.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <openssl/x509v3.h>

#include "observability/log.hpp"
#include "upstream/pool.hpp"

namespace cbagate::upstream {
namespace {

namespace bhttp = boost::beast::http;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock::now().time_since_epoch()).count();
}

template <class Stream>
net::awaitable<std::string> exchange(Stream& stream, beast::tcp_stream& tcp, const std::string& host,
                                     const std::string& path, std::chrono::milliseconds timeout) {
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, path, 11};
  req.set(bhttp::field::host, host);
  req.set(bhttp::field::user_agent, "cbagate-health-check");
  req.set(bhttp::field::connection, "close");
  tcp.expires_after(timeout);
  auto [wec, wn] = co_await bhttp::async_write(stream, req, use_tuple);
  (void)wn;
  if (wec) co_return "write: " + wec.message();
  beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024);
  tcp.expires_after(timeout);
  auto [rec, rn] = co_await bhttp::async_read(stream, buf, parser, use_tuple);
  (void)rn;
  if (rec && rec != bhttp::error::body_limit) co_return "read: " + rec.message();
  const unsigned status = parser.get().result_int();
  if (status >= 200 && status < 400) co_return std::string();
  co_return "HTTP " + std::to_string(status);
}

}  // namespace

health::health(const config::upstream_section& cfg, observability::registry& metrics) : cfg_(cfg) {
  reasons_.resize(cfg.servers.size());
  for (const auto& s : cfg.servers) {
    auto e = std::make_unique<server>();
    e->url = s.url;
    const observability::label_set labels{{"server", s.url}};
    e->healthy_gauge = &metrics.add_gauge("cbagate_upstream_healthy",
                                          "1 when the upstream server takes new requests, 0 while ejected",
                                          labels);
    e->healthy_gauge->set(1);
    e->ejections = &metrics.add_counter("cbagate_upstream_ejections_total",
                                        "Times an upstream server was taken out of the rotation", labels);
    auto with = [&](const char* result) {
      auto l = labels;
      l.emplace_back("result", result);
      return l;
    };
    e->checks_ok = &metrics.add_counter("cbagate_upstream_health_checks_total",
                                        "Active health checks of upstream servers, by result", with("ok"));
    e->checks_failed = &metrics.add_counter("cbagate_upstream_health_checks_total",
                                            "Active health checks of upstream servers, by result",
                                            with("failed"));
    servers_.push_back(std::move(e));
  }
}

bool health::usable(std::size_t i) const noexcept {
  if (i >= servers_.size()) return true;
  const server& s = *servers_[i];
  if (!s.ejected.load(std::memory_order_relaxed)) return true;
  // Passive ejection without active checks ends by time: then one request tries it again.
  const std::int64_t until = s.ejected_until.load(std::memory_order_relaxed);
  return until != 0 && steady_ms() >= until;
}

bool health::any_usable() const noexcept {
  for (std::size_t i = 0; i < servers_.size(); ++i)
    if (usable(i)) return true;
  return servers_.empty();
}

void health::eject(server& s, const std::string& why, bool passive) {
  const bool active = !cfg_.health_check.empty();
  s.ejected_until.store(passive && !active
                            ? steady_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(
                                                cfg_.ejection_time)
                                                .count()
                            : 0,
                        std::memory_order_relaxed);
  s.check_passes.store(0, std::memory_order_relaxed);
  if (s.ejected.exchange(true)) return;
  {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < servers_.size(); ++i)
      if (servers_[i].get() == &s) reasons_[i] = why;
  }
  // The log line comes before the gauge: whoever sees the metric change finds its reason logged.
  observability::logger("upstream")
      ->warn("health: {} taken out of the rotation: {}{}", s.url, why,
             passive && !active ? " (tried again in " +
                                      std::to_string(static_cast<long long>(cfg_.ejection_time.count())) + " s)"
                                : "");
  s.healthy_gauge->set(0);
  s.ejections->inc();
}

void health::restore(server& s, const std::string& why) {
  s.failures.store(0, std::memory_order_relaxed);
  s.ejected_until.store(0, std::memory_order_relaxed);
  if (!s.ejected.exchange(false)) return;
  observability::logger("upstream")->info("health: {} back in the rotation: {}", s.url, why);
  s.healthy_gauge->set(1);
}

void health::report(std::size_t i, bool failure) noexcept {
  if (i >= servers_.size() || cfg_.max_failures == 0) return;
  server& s = *servers_[i];
  if (!failure) {
    s.failures.store(0, std::memory_order_relaxed);
    // A request that succeeded on a server ejected by time (no active checks): it is back.
    if (s.ejected.load(std::memory_order_relaxed) && cfg_.health_check.empty()) {
      try {
        restore(s, "a request succeeded");
      } catch (...) {
      }
    }
    return;
  }
  const unsigned n = s.failures.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n >= cfg_.max_failures) {
    try {
      eject(s, std::to_string(n) + " failed requests in a row (connect failures or 5xx)", true);
    } catch (...) {
    }
  }
}

void health::report_check(std::size_t i, bool passed, const std::string& why) {
  if (i >= servers_.size()) return;
  server& s = *servers_[i];
  if (passed) {
    s.checks_ok->inc();
    s.check_fails.store(0, std::memory_order_relaxed);
    const unsigned n = s.check_passes.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n >= cfg_.healthy_threshold && s.ejected.load(std::memory_order_relaxed))
      restore(s, std::to_string(n) + " health checks passed");
    return;
  }
  s.checks_failed->inc();
  s.check_passes.store(0, std::memory_order_relaxed);
  const unsigned n = s.check_fails.fetch_add(1, std::memory_order_relaxed) + 1;
  if (n >= cfg_.unhealthy_threshold)
    eject(s, "health check " + cfg_.health_check + " failed " + std::to_string(n) + " times: " + why,
          false);
}

std::string health::problem() const {
  if (any_usable()) return {};
  std::lock_guard lock(mutex_);
  std::string out = "no upstream server is healthy";
  for (std::size_t i = 0; i < servers_.size(); ++i)
    out += (i == 0 ? ": " : "; ") + servers_[i]->url + " (" + reasons_[i] + ")";
  return out;
}

net::awaitable<void> health::run_checks(std::shared_ptr<health> self, std::shared_ptr<client_tls> tls,
                                        std::shared_ptr<std::atomic<bool>> stop) {
  const config::upstream_section& cfg = self->cfg_;
  if (cfg.health_check.empty()) co_return;
  auto ex = co_await net::this_coro::executor;
  net::steady_timer timer(ex);
  const auto interval = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.health_interval);
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(cfg.health_timeout);
  while (!stop->load()) {
    const auto next = clock::now() + interval;
    for (std::size_t i = 0; i < cfg.servers.size() && !stop->load(); ++i) {
      std::string why = co_await check_once(ex, cfg.servers[i], cfg.health_check, tls.get(), timeout);
      if (stop->load()) co_return;
      self->report_check(i, why.empty(), why);
    }
    while (!stop->load() && clock::now() < next) {
      timer.expires_after(std::min<clock::duration>(std::chrono::milliseconds(100), next - clock::now()));
      auto [ec] = co_await timer.async_wait(use_tuple);
      if (ec) co_return;
    }
  }
}

net::awaitable<std::string> check_once(net::any_io_executor ex, const config::upstream_server& srv,
                                       const std::string& path, client_tls* tls,
                                       std::chrono::milliseconds timeout) {
  net::ip::tcp::resolver resolver(ex);
  auto [rec, results] = co_await resolver.async_resolve(srv.host, std::to_string(srv.port), use_tuple);
  if (rec) co_return "resolve: " + rec.message();
  beast::tcp_stream tcp(ex);
  tcp.expires_after(timeout);
  auto [cec, ep] = co_await tcp.async_connect(results, use_tuple);
  (void)ep;
  if (cec) co_return "connect: " + (cec == beast::error::timeout ? std::string("timed out") : cec.message());
  if (!srv.tls) co_return co_await exchange(tcp, tcp, srv.host, path, timeout);
  if (tls == nullptr) co_return "no upstream TLS context";
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), tls->context());
  tls->expect_peer(stream.native_handle(), srv.host);
  beast::get_lowest_layer(stream).expires_after(timeout);
  auto [hec] = co_await stream.async_handshake(net::ssl::stream_base::client, use_tuple);
  if (hec) co_return "TLS handshake: " + hec.message();
  co_return co_await exchange(stream, beast::get_lowest_layer(stream), srv.host, path, timeout);
}

}  // namespace cbagate::upstream
