#include "observability/metrics.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <thread>
#include <vector>

namespace obs = cbagate::observability;

TEST_CASE("metrics: counter and gauge exposition") {
  obs::registry reg;
  auto& c = reg.add_counter("cbagate_connections_total", "Accepted connections.");
  auto& g = reg.add_gauge("cbagate_connections_open", "Open connections.");
  c.inc();
  c.inc(41);
  g.inc(5);
  g.dec(2);
  CHECK(reg.render() ==
        "# HELP cbagate_connections_total Accepted connections.\n"
        "# TYPE cbagate_connections_total counter\n"
        "cbagate_connections_total 42\n"
        "# HELP cbagate_connections_open Open connections.\n"
        "# TYPE cbagate_connections_open gauge\n"
        "cbagate_connections_open 3\n");
  g.set(-1);
  CHECK(g.value() == -1);
}

TEST_CASE("metrics: labeled family prints HELP and TYPE once") {
  obs::registry reg;
  auto& ok = reg.add_counter("cbagate_requests_total", "Requests by status.", {{"status", "200"}});
  auto& denied = reg.add_counter("cbagate_requests_total", "ignored", {{"status", "403"}});
  reg.add_counter("cbagate_other_total", "Other.", {{"a", "x\"y\\z\nw"}, {"b", ""}}).inc(2);
  ok.inc(3);
  denied.inc();
  CHECK(&reg.add_counter("cbagate_requests_total", "", {{"status", "200"}}) == &ok);
  CHECK(reg.render() ==
        "# HELP cbagate_requests_total Requests by status.\n"
        "# TYPE cbagate_requests_total counter\n"
        "cbagate_requests_total{status=\"200\"} 3\n"
        "cbagate_requests_total{status=\"403\"} 1\n"
        "# HELP cbagate_other_total Other.\n"
        "# TYPE cbagate_other_total counter\n"
        "cbagate_other_total{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 2\n");
}

TEST_CASE("metrics: histogram buckets are cumulative with +Inf, sum and count") {
  obs::registry reg;
  auto& h = reg.add_histogram("cbagate_request_seconds", "Request duration.", {0.25, 0.5, 1},
                              {{"route", "/owa"}});
  auto& plain = reg.add_histogram("cbagate_kdc_seconds", "", {0.5});
  h.observe(0.125);
  h.observe(0.25);  // bounds are inclusive
  h.observe(0.375);
  h.observe(4);
  plain.observe(0.5);
  CHECK(reg.render() ==
        "# HELP cbagate_request_seconds Request duration.\n"
        "# TYPE cbagate_request_seconds histogram\n"
        "cbagate_request_seconds_bucket{route=\"/owa\",le=\"0.25\"} 2\n"
        "cbagate_request_seconds_bucket{route=\"/owa\",le=\"0.5\"} 3\n"
        "cbagate_request_seconds_bucket{route=\"/owa\",le=\"1\"} 3\n"
        "cbagate_request_seconds_bucket{route=\"/owa\",le=\"+Inf\"} 4\n"
        "cbagate_request_seconds_sum{route=\"/owa\"} 4.75\n"
        "cbagate_request_seconds_count{route=\"/owa\"} 4\n"
        "# TYPE cbagate_kdc_seconds histogram\n"
        "cbagate_kdc_seconds_bucket{le=\"0.5\"} 1\n"
        "cbagate_kdc_seconds_bucket{le=\"+Inf\"} 1\n"
        "cbagate_kdc_seconds_sum 0.5\n"
        "cbagate_kdc_seconds_count 1\n");
  CHECK(h.count() == 4);
}

TEST_CASE("metrics: labeled_counter has fixed series and counts unknown values as other") {
  obs::registry reg;
  auto& rejected = reg.add_labeled_counter("cbagate_tls_rejections_total", "Rejected certificates.",
                                           "reason", {"no_cert", "verify_failed"});
  REQUIRE(rejected.size() == 3);
  rejected.inc("verify_failed");
  rejected.inc("verify_failed", 2);
  rejected.inc("alice@corp.example");  // never a new series
  rejected.at(0).inc();
  CHECK(rejected.get("verify_failed").value() == 3);
  CHECK(rejected.get("other").value() == 1);
  CHECK(reg.render() ==
        "# HELP cbagate_tls_rejections_total Rejected certificates.\n"
        "# TYPE cbagate_tls_rejections_total counter\n"
        "cbagate_tls_rejections_total{reason=\"no_cert\"} 1\n"
        "cbagate_tls_rejections_total{reason=\"verify_failed\"} 3\n"
        "cbagate_tls_rejections_total{reason=\"other\"} 1\n");
}

TEST_CASE("metrics: concurrent increments from 4 threads sum correctly") {
  obs::registry reg;
  auto& c = reg.add_counter("cbagate_ops_total", "Ops.");
  auto& g = reg.add_gauge("cbagate_level", "Level.");
  auto& h = reg.add_histogram("cbagate_sizes", "Sizes.", {10, 100});
  constexpr int per_thread = 100000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        c.inc();
        g.inc();
        g.dec(2);
        h.observe(t < 2 ? 5.0 : 50.0);
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  CHECK(c.value() == 4U * per_thread);
  CHECK(g.value() == -4 * per_thread);
  CHECK(h.bucket_count(0) == 2U * per_thread);
  CHECK(h.bucket_count(1) == 2U * per_thread);
  CHECK(h.count() == 4U * per_thread);
  CHECK(h.sum() == doctest::Approx(2.0 * per_thread * 55.0));
}

TEST_CASE("metrics: bad names, type clashes and bad bounds are rejected at registration") {
  obs::registry reg;
  CHECK_THROWS_AS(reg.add_counter("9lives", ""), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_counter("has-dash", ""), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_counter("ok_total", "", {{"bad-label", "x"}}), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_counter("ok_total", "", {{"__reserved", "x"}}), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_histogram("h", "", {1}, {{"le", "x"}}), std::invalid_argument);
  CHECK_THROWS_AS(reg.add_histogram("h", "", {1, 1}), std::invalid_argument);
  reg.add_counter("clash", "");
  CHECK_THROWS_AS(reg.add_gauge("clash", ""), std::invalid_argument);
  CHECK(reg.render() == "# TYPE clash counter\nclash 0\n");
}

TEST_CASE("metrics: a sampled gauge family is computed at each scrape, labels escaped") {
  obs::registry reg;
  int calls = 0;
  reg.add_sampled_gauge("cbagate_certificate_expiry_seconds", "Seconds until notAfter", [&] {
    ++calls;
    return std::vector<obs::registry::sample>{
        {{{"kind", "server"}, {"subject", "CN=mail \"x\""}}, 86400.5},
        {{{"kind", "client_ca"}, {"subject", "CN=Root"}}, -3.0},
    };
  });
  const std::string text = reg.render();
  CHECK(calls == 1);
  CHECK(text ==
        "# HELP cbagate_certificate_expiry_seconds Seconds until notAfter\n"
        "# TYPE cbagate_certificate_expiry_seconds gauge\n"
        "cbagate_certificate_expiry_seconds{kind=\"server\",subject=\"CN=mail \\\"x\\\"\"} 86400.5\n"
        "cbagate_certificate_expiry_seconds{kind=\"client_ca\",subject=\"CN=Root\"} -3\n");
  reg.render();
  CHECK(calls == 2);
  // Registering again replaces the callback (a reload); a bad label name drops that series only.
  reg.add_sampled_gauge("cbagate_certificate_expiry_seconds", "ignored", [] {
    return std::vector<obs::registry::sample>{{{{"bad-label", "x"}}, 1}, {{}, 2}};
  });
  CHECK(reg.render() ==
        "# HELP cbagate_certificate_expiry_seconds Seconds until notAfter\n"
        "# TYPE cbagate_certificate_expiry_seconds gauge\n"
        "cbagate_certificate_expiry_seconds 2\n");
  CHECK(calls == 2);
}
