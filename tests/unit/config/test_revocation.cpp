// [revocation] and route.revocation_fail (docs/revocation.md): defaults, durations, the
// optional mode, and the validation messages.
#include "config/load.hpp"
#include "config/schema.hpp"
#include "config_fixture.hpp"

#include <doctest/doctest.h>

#include <chrono>

using namespace config_test;
using namespace cbagate::config;
using namespace std::chrono_literals;

TEST_CASE("config: [revocation] absent gives the documented defaults and no explicit mode") {
  temp_dir dir;
  write_server_files(dir);
  const auto r = load(minimal, dir);
  REQUIRE(r.ok());
  const revocation_section& rv = r.value->revocation;
  CHECK_FALSE(rv.mode.has_value());  // derived from tls.crl and the certificates' CDPs
  CHECK(rv.fetch_cdp);
  CHECK(rv.fail == fail_mode::closed);
  CHECK(rv.ocsp_responder.empty());
  CHECK(rv.timeout == 5s);
  CHECK(rv.max_crl_bytes == 33554432u);
  CHECK(rv.max_ocsp_bytes == 65536u);
  CHECK(rv.refresh_ahead == 300s);
  CHECK(rv.retry_after == 30s);
  CHECK(rv.default_lifetime == 3600s);
  CHECK(rv.max_clock_skew == 300s);
  CHECK(rv.cache_max_crls == 64u);
  CHECK(rv.cache_max_ocsp == 100000u);
  CHECK(rv.watch_interval == 2s);
  CHECK_FALSE(r.value->routes.at(0).revocation_fail.has_value());
}

TEST_CASE("config: [revocation] keys are read, durations with their units") {
  temp_dir dir;
  write_server_files(dir);
  const std::string text = replace_line(minimal, "prefix = \"/owa\"",
                                        "prefix = \"/owa\"\nrevocation_fail = \"open\"") +
                           "\n[[route]]\nprefix = \"/ecp\"\nrevocation_fail = \"closed\"\n"
                           "\n[[route]]\nprefix = \"/rpc\"\n"
                           "\n[revocation]\nmode = \"crl+ocsp\"\nfetch_cdp = false\n"
                           "fail = \"open\"\nocsp_responder = \"http://ocsp.lab.test:8080/ocsp\"\n"
                           "timeout = \"1500ms\"\nmax_crl_bytes = 1000\nmax_ocsp_bytes = 2000\n"
                           "refresh_ahead = \"2m\"\nretry_after = 7\ndefault_lifetime = \"2h\"\n"
                           "max_clock_skew = 0.5\ncache_max_crls = 3\ncache_max_ocsp = 4\n"
                           "watch_interval = \"0s\"\n";
  const auto r = load(text, dir);
  for (const auto& d : r.errors) INFO(d.to_string());
  REQUIRE(r.ok());
  const revocation_section& rv = r.value->revocation;
  REQUIRE(rv.mode.has_value());
  CHECK(*rv.mode == revocation_mode::crl_and_ocsp);
  CHECK_FALSE(rv.fetch_cdp);
  CHECK(rv.fail == fail_mode::open);
  CHECK(rv.ocsp_responder == "http://ocsp.lab.test:8080/ocsp");
  CHECK(rv.timeout == 1500ms);
  CHECK(rv.max_crl_bytes == 1000u);
  CHECK(rv.max_ocsp_bytes == 2000u);
  CHECK(rv.refresh_ahead == 120s);
  CHECK(rv.retry_after == 7s);
  CHECK(rv.default_lifetime == 7200s);
  CHECK(rv.max_clock_skew == 500ms);
  CHECK(rv.cache_max_crls == 3u);
  CHECK(rv.cache_max_ocsp == 4u);
  CHECK(rv.watch_interval == 0s);
  REQUIRE(r.value->routes.size() == 3);
  CHECK(r.value->routes[0].revocation_fail == fail_mode::open);
  CHECK(r.value->routes[1].revocation_fail == fail_mode::closed);
  CHECK_FALSE(r.value->routes[2].revocation_fail.has_value());
}

TEST_CASE("config: every revocation.mode value") {
  temp_dir dir;
  write_server_files(dir);
  const std::pair<const char*, revocation_mode> cases[] = {
      {"off", revocation_mode::off},
      {"crl", revocation_mode::crl},
      {"ocsp", revocation_mode::ocsp},
      {"crl+ocsp", revocation_mode::crl_and_ocsp}};
  for (const auto& [text, mode] : cases) {
    CAPTURE(text);
    const auto r = load(minimal + "\n[revocation]\nmode = \"" + text + "\"\n", dir);
    REQUIRE(r.ok());
    CHECK(r.value->revocation.mode == mode);
  }
}

TEST_CASE("config: [revocation] validation messages") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("an unknown mode") {
    const std::string text = minimal + "\n[revocation]\nmode = \"crl+ldap\"\n";
    const std::string m = only_error(load(text, dir), "revocation.mode", find_in(text, "\"crl+ldap\""));
    CHECK(m == "must be one of \"off\", \"crl\", \"ocsp\", \"crl+ocsp\", got \"crl+ldap\"");
  }
  SUBCASE("an unknown fail mode") {
    const std::string text = minimal + "\n[revocation]\nfail = \"ajar\"\n";
    const std::string m = only_error(load(text, dir), "revocation.fail", find_in(text, "\"ajar\""));
    CHECK(m == "must be one of \"closed\", \"open\", got \"ajar\"");
  }
  SUBCASE("an unknown route revocation_fail") {
    const std::string text =
        replace_line(minimal, "prefix = \"/owa\"", "prefix = \"/owa\"\nrevocation_fail = \"shut\"");
    const std::string m =
        only_error(load(text, dir), "route[0].revocation_fail", find_in(text, "\"shut\""));
    CHECK(m == "must be one of \"closed\", \"open\", got \"shut\"");
  }
  SUBCASE("an https responder") {
    const std::string text = minimal + "\n[revocation]\nocsp_responder = \"https://ocsp.lab.test\"\n";
    const std::string m = only_error(load(text, dir), "revocation.ocsp_responder",
                                     find_in(text, "\"https://"));
    CHECK(m.find("http:// URL") != std::string::npos);
  }
  SUBCASE("a responder that is not a URL") {
    const std::string text = minimal + "\n[revocation]\nocsp_responder = \"ocsp.lab.test\"\n";
    only_error(load(text, dir), "revocation.ocsp_responder", find_in(text, "\"ocsp.lab"));
  }
  SUBCASE("a responder with a query") {
    const std::string text = minimal + "\n[revocation]\nocsp_responder = \"http://o.test/?a=1\"\n";
    const std::string m = only_error(load(text, dir), "revocation.ocsp_responder",
                                     find_in(text, "\"http://o.test"));
    CHECK(m == "a query is not allowed");
  }
  SUBCASE("a zero timeout") {
    const std::string text = minimal + "\n[revocation]\ntimeout = \"0s\"\n";
    const std::string m = only_error(load(text, dir), "revocation.timeout", find_in(text, "\"0s\""));
    CHECK(m == "must be > 0, at most 3600 seconds, got 0s");
  }
  SUBCASE("a duration without a unit") {
    const std::string text = minimal + "\n[revocation]\nretry_after = \"30\"\n";
    const std::string m = only_error(load(text, dir), "revocation.retry_after", find_in(text, "\"30\""));
    CHECK(m == "must be a duration such as \"100ms\", \"5s\", \"5m\" or \"1h\", got \"30\"");
  }
  SUBCASE("a duration with an unknown unit") {
    const std::string text = minimal + "\n[revocation]\nrefresh_ahead = \"5d\"\n";
    only_error(load(text, dir), "revocation.refresh_ahead", find_in(text, "\"5d\""));
  }
  SUBCASE("a negative duration") {
    const std::string text = minimal + "\n[revocation]\nmax_clock_skew = \"-5m\"\n";
    only_error(load(text, dir), "revocation.max_clock_skew", find_in(text, "\"-5m\""));
  }
  SUBCASE("a negative watch interval") {
    const std::string text = minimal + "\n[revocation]\nwatch_interval = -1\n";
    const std::string m = only_error(load(text, dir), "revocation.watch_interval", find_in(text, "-1"));
    CHECK(m == "must be 0..86400 seconds, got -1s");
  }
  SUBCASE("a zero size") {
    const std::string text = minimal + "\n[revocation]\nmax_crl_bytes = 0\n";
    const std::string m = only_error(load(text, dir), "revocation.max_crl_bytes", find_in(text, "0\n"));
    CHECK(m == "must be in 1..4294967296, got 0");
  }
  SUBCASE("a zero cache bound") {
    const std::string text = minimal + "\n[revocation]\ncache_max_ocsp = 0\n";
    only_error(load(text, dir), "revocation.cache_max_ocsp", find_in(text, "0\n"));
  }
  SUBCASE("a duration of the wrong type") {
    const std::string text = minimal + "\n[revocation]\ntimeout = true\n";
    const std::string m = only_error(load(text, dir), "revocation.timeout", find_in(text, "true"));
    CHECK(m.find("expected a duration") == 0);
  }
  SUBCASE("a typo in a key") {
    const std::string text = minimal + "\n[revocation]\nfetch_cpd = true\n";
    const std::string m = only_error(load(text, dir), "revocation.fetch_cpd", find_in(text, "fetch_cpd"));
    CHECK(m == "unknown key; did you mean \"fetch_cdp\"?");
  }
}

TEST_CASE("config: duration rows print their units in the schema") {
  CHECK(type_name(*find_row("revocation.timeout")) == "duration");
  CHECK(constraint_text(*find_row("revocation.watch_interval")).find("0..86400s") !=
        std::string::npos);
  CHECK(find_row("revocation.mode")->default_text.empty());  // absent = derived
  CHECK(find_row("route.revocation_fail")->default_text.empty());  // absent = revocation.fail
}
