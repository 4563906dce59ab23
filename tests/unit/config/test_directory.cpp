// [auth] trust limits and [directory] (issue 12, docs/directory.md): defaults, the directory
// keys, the cross-key rules (TLS "none" on loopback only, simple bind needs its DN and a
// private password file, directory mode needs uris and base_dn).
#include "config/load.hpp"
#include "config/validate.hpp"
#include "config_fixture.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>

#include <chrono>

using namespace config_test;
using namespace cbagate::config;
using namespace std::chrono_literals;

namespace {

std::string with_directory(const std::string& directory, const std::string& auth = "") {
  return minimal + "\n[auth]\nmapping = \"directory\"\n" + auth + "\n[directory]\n" + directory;
}

std::string errors_of(const load_result& r) {
  std::string all;
  for (const auto& d : r.errors) all += d.to_string() + "\n";
  return all;
}

}  // namespace

TEST_CASE("config: [auth] limits and mapping default to today's behaviour") {
  temp_dir dir;
  write_server_files(dir);
  const auto r = load(minimal, dir);
  REQUIRE(r.ok());
  CHECK(r.value->auth.issuing_cas.empty());
  CHECK(r.value->auth.upn_suffixes.empty());
  CHECK(r.value->auth.certificate_templates.empty());
  CHECK(r.value->auth.mapping == mapping_mode::upn);
  const directory_section& d = r.value->directory;
  CHECK(d.bind == directory_bind::sasl_gssapi);
  CHECK(d.tls == directory_tls::starttls);
  CHECK(d.timeout == 5s);
  CHECK(d.cache_ttl == 300s);
  CHECK(d.negative_ttl == 60s);
  CHECK(d.cache_max == 100000u);
  CHECK_FALSE(d.ntauth);
}

TEST_CASE("config: [auth] limits are read and checked") {
  temp_dir dir;
  write_server_files(dir);
  dir.write("issuing.pem");
  const auto r = load(minimal + "\n[auth]\nissuing_cas = \"issuing.pem\"\n"
                                "upn_suffixes = [\"Corp.Example.com\", \"lab.test\"]\n"
                                "certificate_templates = [\"1.3.6.1.4.1.311.21.8.1.2\", \"User\"]\n",
                      dir);
  REQUIRE_MESSAGE(r.ok(), errors_of(r));
  CHECK(r.value->auth.issuing_cas == dir.str() + "/issuing.pem");
  CHECK(r.value->auth.upn_suffixes == std::vector<std::string>{"corp.example.com", "lab.test"});
  CHECK(r.value->auth.certificate_templates.size() == 2);

  const std::string bad = minimal + "\n[auth]\nupn_suffixes = [\"@lab.test\"]\n";
  CHECK(only_error(load(bad, dir), "auth.upn_suffixes[0]", find_in(bad, "\"@lab")).find("'@'") !=
        std::string::npos);
  const std::string twice = minimal + "\n[auth]\nupn_suffixes = [\"lab.test\", \"LAB.test\"]\n";
  CHECK(only_error(load(twice, dir), "auth.upn_suffixes[1]", find_in(twice, "\"LAB"))
            .find("twice") != std::string::npos);
  const std::string missing = minimal + "\n[auth]\nissuing_cas = \"nope.pem\"\n";
  CHECK(only_error(load(missing, dir), "auth.issuing_cas", find_in(missing, "\"nope"))
            .find("not found") != std::string::npos);
}

TEST_CASE("config: [directory] in directory mode") {
  temp_dir dir;
  write_server_files(dir);
  const std::string pw = dir.write("ldap.pw", "secret\n");
  ::chmod(pw.c_str(), 0600);

  SUBCASE("a complete simple-bind section") {
    const auto r = load(with_directory("uris = [\"ldap://127.0.0.1:3890\", \"ldap://[::1]:3891\"]\n"
                                       "base_dn = \"DC=lab,DC=test\"\nbind = \"simple\"\n"
                                       "bind_dn = \"CN=svc,DC=lab,DC=test\"\n"
                                       "password_file = \"ldap.pw\"\ntls = \"none\"\n"
                                       "cache_ttl = \"30s\"\nnegative_ttl = 0\nntauth = true\n"),
                        dir);
    REQUIRE_MESSAGE(r.ok(), errors_of(r));
    CHECK(r.value->auth.mapping == mapping_mode::directory);
    CHECK(r.value->directory.uris.size() == 2);
    CHECK(r.value->directory.password_file == pw);
    CHECK(r.value->directory.tls == directory_tls::none);
    CHECK(r.value->directory.cache_ttl == 30s);
    CHECK(r.value->directory.negative_ttl == 0s);
    CHECK(r.value->directory.ntauth);
  }
  SUBCASE("uris and base_dn are required") {
    const auto r = load(minimal + "\n[auth]\nmapping = \"directory\"\n", dir);
    REQUIRE_FALSE(r.ok());
    const std::string all = errors_of(r);
    CHECK(all.find("directory.uris: missing; required when auth.mapping = \"directory\"") !=
          std::string::npos);
    CHECK(all.find("directory.base_dn") != std::string::npos);
  }
  SUBCASE("tls = \"none\" only to loopback IP literals") {
    const auto r = load(with_directory("uris = [\"ldap://dc1.lab.test\"]\nbase_dn = \"DC=lab\"\n"
                                       "tls = \"none\"\nkeytab = \"server.key\"\n"),
                        dir);
    REQUIRE_FALSE(r.ok());
    CHECK(errors_of(r).find("only for loopback") != std::string::npos);
  }
  SUBCASE("ldaps wants ldaps:// URIs and the other way round") {
    auto r = load(with_directory("uris = [\"ldap://dc1.lab.test\"]\nbase_dn = \"DC=lab\"\n"
                                 "tls = \"ldaps\"\nkeytab = \"server.key\"\n"),
                  dir);
    CHECK(errors_of(r).find("needs ldaps:// URIs") != std::string::npos);
    r = load(with_directory("uris = [\"ldaps://dc1.lab.test\"]\nbase_dn = \"DC=lab\"\n"
                            "keytab = \"server.key\"\n"),
             dir);
    CHECK(errors_of(r).find("needs tls = \"ldaps\"") != std::string::npos);
  }
  SUBCASE("a bad URI") {
    const std::string text = with_directory("uris = [\"ldap://dc1/DC=lab?x\"]\nbase_dn = \"DC=lab\"\n"
                                            "keytab = \"server.key\"\n");
    CHECK(only_error(load(text, dir), "directory.uris[0]", find_in(text, "\"ldap://dc1/"))
              .find("base DN") != std::string::npos);
  }
  SUBCASE("simple bind needs bind_dn and password_file") {
    const auto r = load(with_directory("uris = [\"ldap://127.0.0.1\"]\nbase_dn = \"DC=lab\"\n"
                                       "bind = \"simple\"\ntls = \"none\"\n"),
                        dir);
    const std::string all = errors_of(r);
    CHECK(all.find("directory.bind_dn: required with bind = \"simple\"") != std::string::npos);
    CHECK(all.find("directory.password_file: required") != std::string::npos);
  }
  SUBCASE("a password file open to group or others is refused") {
    ::chmod(pw.c_str(), 0640);
    const std::string text = with_directory(
        "uris = [\"ldap://127.0.0.1\"]\nbase_dn = \"DC=lab\"\nbind = \"simple\"\n"
        "bind_dn = \"CN=svc\"\npassword_file = \"ldap.pw\"\ntls = \"none\"\n");
    const std::string m = only_error(load(text, dir), "directory.password_file",
                                     find_in(text, "\"ldap.pw"));
    CHECK(m.find("group or others") != std::string::npos);
    ::chmod(pw.c_str(), 0600);
    CHECK(load(text, dir).ok());
  }
  SUBCASE("sasl_gssapi needs a keytab") {
    const auto r = load(with_directory("uris = [\"ldap://dc1.lab.test\"]\nbase_dn = \"DC=lab\"\n"),
                        dir);
    CHECK(errors_of(r).find("needs a keytab") != std::string::npos);
  }
  SUBCASE("upn_sources \"directory\" needs auth.mapping = \"directory\"") {
    const auto r = load(minimal + "\n[auth]\nupn_sources = [\"san\", \"directory\"]\n", dir);
    CHECK(errors_of(r).find("auth.upn_sources: \"directory\" needs auth.mapping = \"directory\"") !=
          std::string::npos);
    const auto ok = load(with_directory("uris = [\"ldap://dc1.lab.test\"]\nbase_dn = \"DC=lab\"\n"
                                        "keytab = \"server.key\"\n",
                                        "upn_sources = [\"san\", \"directory\"]\n"),
                         dir);
    REQUIRE_MESSAGE(ok.ok(), errors_of(ok));
    CHECK(ok.value->auth.upn_from_san);
    CHECK_FALSE(ok.value->auth.upn_from_subject);
    CHECK(ok.value->auth.upn_from_directory);
  }
  SUBCASE("upn mode ignores an incomplete [directory]") {
    const auto r = load(minimal + "\n[directory]\nbind = \"simple\"\n", dir);
    CHECK_MESSAGE(r.ok(), errors_of(r));
  }
}

TEST_CASE("validate: parse_ldap_uri") {
  std::string why;
  auto u = parse_ldap_uri("ldap://dc1.corp.example.com", why);
  REQUIRE(u);
  CHECK(u->port == 389);
  CHECK_FALSE(u->ldaps);
  CHECK_FALSE(u->loopback);
  u = parse_ldap_uri("ldaps://127.0.0.2:6360/", why);
  REQUIRE(u);
  CHECK(u->ldaps);
  CHECK(u->port == 6360);
  CHECK(u->loopback);
  u = parse_ldap_uri("ldap://[::1]:389", why);
  REQUIRE(u);
  CHECK(u->loopback);
  CHECK(u->host == "::1");
  for (const char* bad : {"http://dc1", "ldap://", "ldap://dc1:0", "ldap://dc1:x", "ldap://::1",
                          "ldap://u@dc1", "ldap://dc1/DC=x", "LDAP://dc1", "ldap://dc1:389:1"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_ldap_uri(bad, why));
  }
}
