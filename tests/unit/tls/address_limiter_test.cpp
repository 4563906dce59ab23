#include "tls/address_limiter.hpp"

#include <doctest/doctest.h>

#include <vector>

using cbagate::tls::address_limiter;
using cbagate::tls::net_address;
using cbagate::tls::parse_ip;
using namespace std::chrono_literals;
using verdict = address_limiter::verdict;

namespace {
net_address ip(const char* s) {
  net_address a;
  REQUIRE(parse_ip(s, a));
  return a;
}
}  // namespace

TEST_CASE("address_limiter: open connections per address, given back when closed") {
  address_limiter lim;
  const auto now = address_limiter::clock::now();
  const address_limiter::limits l{.max_connections = 2, .handshakes_per_second = 0};
  auto a1 = lim.admit(ip("192.0.2.1"), l, now);
  auto a2 = lim.admit(ip("::ffff:192.0.2.1"), l, now);  // the same address, v4-mapped
  CHECK(a1.result == verdict::admitted);
  CHECK(a2.result == verdict::admitted);
  auto a3 = lim.admit(ip("192.0.2.1"), l, now);
  CHECK(a3.result == verdict::too_many_connections);
  CHECK(a3.log);
  CHECK(lim.admit(ip("192.0.2.2"), l, now).result == verdict::admitted);  // another address
  a1.held.release();
  CHECK(lim.admit(ip("192.0.2.1"), l, now).result == verdict::admitted);
}

TEST_CASE("address_limiter: new connections per second with a burst, refilled over time") {
  address_limiter lim;
  const auto t = address_limiter::clock::now();
  const address_limiter::limits l{.max_connections = 0, .handshakes_per_second = 5};
  std::vector<address_limiter::admission> held;
  for (int i = 0; i < 5; ++i) {
    held.push_back(lim.admit(ip("2001:db8::1"), l, t));
    CHECK(held.back().result == verdict::admitted);
  }
  auto refused = lim.admit(ip("2001:db8::1"), l, t);
  CHECK(refused.result == verdict::too_many_handshakes);
  CHECK(refused.log);
  CHECK(lim.admit(ip("2001:db8::2"), l, t).result == verdict::admitted);
  CHECK(lim.admit(ip("2001:db8::1"), l, t + 100ms).result == verdict::too_many_handshakes);
  CHECK(lim.admit(ip("2001:db8::1"), l, t + 300ms).result == verdict::admitted);  // 1.5 tokens
}

TEST_CASE("address_limiter: one log line per address per interval") {
  address_limiter lim(60s);
  const auto t = address_limiter::clock::now();
  const address_limiter::limits l{.max_connections = 1, .handshakes_per_second = 0};
  auto held = lim.admit(ip("10.0.0.1"), l, t);
  REQUIRE(held.result == verdict::admitted);
  int logs = 0;
  for (int i = 0; i < 1000; ++i) logs += lim.admit(ip("10.0.0.1"), l, t + std::chrono::milliseconds(i)).log;
  CHECK(logs == 1);
  CHECK(lim.admit(ip("10.0.0.1"), l, t + 61s).log);
  CHECK(lim.admit(ip("10.0.0.2"), {.max_connections = 0, .handshakes_per_second = 0}, t).result ==
        verdict::admitted);
}

TEST_CASE("address_limiter: no limits track nothing, idle addresses are forgotten") {
  address_limiter lim(1s);
  const auto t = address_limiter::clock::now();
  CHECK(lim.admit(ip("10.0.0.1"), {}, t).result == verdict::admitted);
  CHECK(lim.tracked() == 0);
  const address_limiter::limits l{.max_connections = 0, .handshakes_per_second = 100};
  for (unsigned i = 0; i < 5000; ++i) {
    net_address a = ip("10.0.0.0");
    a.bytes[2] = static_cast<std::uint8_t>(i >> 8);
    a.bytes[3] = static_cast<std::uint8_t>(i & 0xFF);
    lim.admit(a, l, t + std::chrono::milliseconds(i * 10));  // 50 s of one new address each 10 ms
  }
  CHECK(lim.tracked() < 2000);  // swept as it goes: bounded by the recent addresses
}

TEST_CASE("address_limiter: should_log throttles per address") {
  address_limiter lim(60s);
  const auto t = address_limiter::clock::now();
  CHECK(lim.should_log(ip("10.0.0.9"), t));
  CHECK_FALSE(lim.should_log(ip("10.0.0.9"), t + 59s));
  CHECK(lim.should_log(ip("10.0.0.8"), t + 59s));
  CHECK(lim.should_log(ip("10.0.0.9"), t + 61s));
}
