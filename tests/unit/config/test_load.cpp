#include "config/load.hpp"

#include "config/secret_file.hpp"
#include "config_fixture.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <sstream>

using namespace config_test;
using namespace cbagate::config;
using namespace std::chrono_literals;

namespace {

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

}  // namespace

TEST_CASE("config: a minimal file loads with the documented defaults") {
  temp_dir dir;
  write_server_files(dir);
  const auto r = load(minimal, dir);
  REQUIRE(r.ok());
  const snapshot& s = *r.value;
  CHECK(s.source == "test.toml");
  REQUIRE(s.server.listen.size() == 1);
  CHECK(s.server.listen[0].host == "127.0.0.1");
  CHECK(s.server.listen[0].port == 0);
  CHECK(s.server.threads == 0);
  CHECK(s.server.admin_listen.empty());
  CHECK_FALSE(s.server.proxy_protocol);
  CHECK(s.server.max_connections == 0);
  CHECK(s.tls.client_intermediates.empty());
  CHECK(s.tls.crl.empty());
  CHECK(s.tls.client_cert == client_cert_mode::request);
  CHECK(s.tls.min_version == "1.2");
  CHECK(s.tls.session_tickets);
  CHECK(s.tls.session_timeout == 7200s);
  CHECK(s.tls.verify_depth == 5);
  CHECK(s.tls.sni.empty());
  CHECK(s.auth.upn_from_san);
  CHECK_FALSE(s.auth.upn_from_subject);
  CHECK(s.auth.max_upn_length == 256);
  CHECK(s.limits.max_request_header_bytes == 49152);
  CHECK(s.limits.read_ahead_bytes == 49152);
  CHECK(s.limits.max_body_bytes == 0);
  CHECK(s.timeouts.handshake == 10s);
  CHECK(s.timeouts.upstream_response == 120s);
  CHECK(s.identity.mode == identity_mode::header);
  CHECK(s.identity.header == "X-Client-UPN");
  CHECK(s.kerberos.keytab.empty());
  REQUIRE(s.upstream.servers.size() == 1);
  CHECK(s.upstream.servers[0].host == "127.0.0.1");
  CHECK(s.upstream.servers[0].port == 8080);
  CHECK_FALSE(s.upstream.servers[0].tls);
  CHECK(s.upstream.max_idle_per_server == 64);
  CHECK(s.access_log.path == "-");
  CHECK(s.log.level == "info");
  REQUIRE(s.routes.size() == 1);
  CHECK(s.routes[0].prefix == "/owa");
  CHECK(s.routes[0].client_cert == route_cert_policy::require);
  CHECK(s.routes[0].max_body_bytes == 0);
  CHECK(s.routes[0].response_timeout == 0s);
}

TEST_CASE("config: every key set explicitly gives the typed values") {
  temp_dir dir;
  write_server_files(dir);
  dir.write("inter.pem");
  dir.write("crl/a.crl.pem");
  dir.write("crl/b.crl.der");
  dir.write("upstream-ca.pem");
  dir.write("sni/auto.pem");
  dir.write("sni/auto.key");
  dir.write("cbagate.keytab");
  dir.write("krb5.conf");
  fs::create_directories(dir.path() / "logs");
  const std::string text = R"(
[server]
listen = ["0.0.0.0:443", "[::1]:8443", "mail.lab.test:9443"]
threads = 4
admin_listen = "127.0.0.1:9100"
proxy_protocol_from = ["10.0.0.0/24", "2001:db8::7"]
proxy_protocol = true
max_connections = 20000
max_connections_per_address = 50
max_handshakes_per_address = 20

[tls]
certificate = "server-chain.pem"
private_key = "server.key"
client_ca = "client-roots.pem"
client_intermediates = "inter.pem"
crl = ["crl/a.crl.pem", "crl/b.crl.der"]
client_cert = "require"
min_version = "1.3"
ciphers = "ECDHE+AESGCM"
ciphersuites = "TLS_AES_256_GCM_SHA384"
session_tickets = false
session_timeout = 300.5
verify_depth = 3

[[tls.sni]]
server_names = ["autodiscover.lab.test", "*.legacy.lab.test"]
certificate = "sni/auto.pem"
private_key = "sni/auto.key"

[auth]
upn_sources = ["subject", "san"]
max_upn_length = 128

[limits]
max_request_header_bytes = 65536
read_ahead_bytes = 0
max_header_fields = 50
max_target_bytes = 8192
max_body_bytes = 104857600
max_response_header_bytes = 32768

[timeouts]
handshake = 2.5
request_header = 15
idle = 60
upstream_connect = 1
upstream_response = 90
body_idle = 30
drain = 5

[identity]
mode = "kerberos"
header = "X-Remote-User"

[kerberos]
keytab = "cbagate.keytab"
principal = "HTTP/cbagate.lab.test@LAB.TEST"
target_spn = "HTTP/exchange.lab.test"
upn_to_principal = "enterprise"
krb5_config = "krb5.conf"

[upstream]
servers = ["https://exchange.lab.test", "https://[::1]:4443/"]
ca = "upstream-ca.pem"
server_name = "exchange.lab.test"
max_idle_per_server = 8
idle_timeout = 30

[access_log]
path = "logs/access.json"
log_upn = false

[log]
level = "debug"
path = "logs/cbagate.log"

[[route]]
prefix = "/"
client_cert = "none"

[[route]]
prefix = "/Microsoft-Server-ActiveSync"
client_cert = "optional"
max_body_bytes = 52428800
response_timeout = 3660
)";
  const auto r = load(text, dir);
  for (const auto& d : r.errors) INFO(d.to_string());
  REQUIRE(r.ok());
  const snapshot& s = *r.value;
  const std::string base = dir.str() + "/";

  REQUIRE(s.server.listen.size() == 3);
  CHECK(s.server.listen[0] == endpoint{"0.0.0.0", 443});
  CHECK(s.server.listen[1] == endpoint{"::1", 8443});
  CHECK(s.server.listen[2] == endpoint{"mail.lab.test", 9443});
  CHECK(s.server.threads == 4);
  CHECK(s.server.admin_listen == "127.0.0.1:9100");
  CHECK(s.server.proxy_protocol);
  REQUIRE(s.server.proxy_protocol_from.size() == 2);
  CHECK(s.server.proxy_protocol_from[0].prefix == 24);
  CHECK_FALSE(s.server.proxy_protocol_from[0].v6);
  CHECK(s.server.proxy_protocol_from[1].prefix == 128);
  CHECK(s.server.proxy_protocol_from[1].text == "2001:db8::7");
  CHECK(s.server.max_connections == 20000);
  CHECK(s.server.max_connections_per_address == 50);
  CHECK(s.server.max_handshakes_per_address == 20);

  CHECK(s.tls.certificate == base + "server-chain.pem");
  CHECK(s.tls.private_key == base + "server.key");
  CHECK(s.tls.client_ca == base + "client-roots.pem");
  CHECK(s.tls.client_intermediates == base + "inter.pem");
  CHECK(s.tls.crl == std::vector<std::string>{base + "crl/a.crl.pem", base + "crl/b.crl.der"});
  CHECK(s.tls.client_cert == client_cert_mode::require);
  CHECK(s.tls.min_version == "1.3");
  CHECK(s.tls.ciphers == "ECDHE+AESGCM");
  CHECK(s.tls.ciphersuites == "TLS_AES_256_GCM_SHA384");
  CHECK_FALSE(s.tls.session_tickets);
  CHECK(s.tls.session_timeout == seconds_f{300.5});
  CHECK(s.tls.verify_depth == 3);
  REQUIRE(s.tls.sni.size() == 1);
  CHECK(s.tls.sni[0].server_names ==
        std::vector<std::string>{"autodiscover.lab.test", "*.legacy.lab.test"});
  CHECK(s.tls.sni[0].certificate == base + "sni/auto.pem");
  CHECK(s.tls.sni[0].private_key == base + "sni/auto.key");

  CHECK(s.auth.upn_from_san);
  CHECK(s.auth.upn_from_subject);
  CHECK(s.auth.max_upn_length == 128);

  CHECK(s.limits.max_request_header_bytes == 65536);
  CHECK(s.limits.read_ahead_bytes == 0);
  CHECK(s.limits.max_header_fields == 50);
  CHECK(s.limits.max_target_bytes == 8192);
  CHECK(s.limits.max_body_bytes == 104857600);
  CHECK(s.limits.max_response_header_bytes == 32768);

  CHECK(s.timeouts.handshake == seconds_f{2.5});
  CHECK(s.timeouts.request_header == 15s);
  CHECK(s.timeouts.idle == 60s);
  CHECK(s.timeouts.upstream_connect == 1s);
  CHECK(s.timeouts.upstream_response == 90s);
  CHECK(s.timeouts.body_idle == 30s);
  CHECK(s.timeouts.drain == 5s);

  CHECK(s.identity.mode == identity_mode::kerberos);
  CHECK(s.identity.header == "X-Remote-User");
  CHECK(s.kerberos.keytab == base + "cbagate.keytab");
  CHECK(s.kerberos.principal == "HTTP/cbagate.lab.test@LAB.TEST");
  CHECK(s.kerberos.target_spn == "HTTP/exchange.lab.test");
  CHECK(s.kerberos.upn_to_principal == upn_mapping::enterprise);
  CHECK(s.kerberos.krb5_config == base + "krb5.conf");

  REQUIRE(s.upstream.servers.size() == 2);
  CHECK(s.upstream.servers[0].url == "https://exchange.lab.test");
  CHECK(s.upstream.servers[0].tls);
  CHECK(s.upstream.servers[0].host == "exchange.lab.test");
  CHECK(s.upstream.servers[0].port == 443);
  CHECK(s.upstream.servers[1].host == "::1");
  CHECK(s.upstream.servers[1].port == 4443);
  CHECK(s.upstream.ca == base + "upstream-ca.pem");
  CHECK(s.upstream.server_name == "exchange.lab.test");
  CHECK(s.upstream.max_idle_per_server == 8);
  CHECK(s.upstream.idle_timeout == 30s);

  CHECK(s.access_log.path == base + "logs/access.json");
  CHECK_FALSE(s.access_log.log_upn);
  CHECK(s.log.level == "debug");
  CHECK(s.log.path == base + "logs/cbagate.log");

  REQUIRE(s.routes.size() == 2);
  CHECK(s.routes[0].prefix == "/");
  CHECK(s.routes[0].client_cert == route_cert_policy::none);
  CHECK(s.routes[1].prefix == "/Microsoft-Server-ActiveSync");
  CHECK(s.routes[1].client_cert == route_cert_policy::optional);
  CHECK(s.routes[1].max_body_bytes == 52428800);
  CHECK(s.routes[1].response_timeout == 3660s);
}

TEST_CASE("config: relative paths resolve against the file's directory, absolute ones stay") {
  temp_dir dir;
  dir.write("etc/cbagate/cbagate.toml", "");
  dir.write("etc/cbagate/pki/server-chain.pem");
  dir.write("etc/shared/roots.pem");
  const std::string abs_key = dir.write("keys/server.key");
  const std::string text = replace_line(
      replace_line(replace_line(minimal, "certificate =", "certificate = \"pki/server-chain.pem\""),
                   "private_key =", "private_key = \"" + abs_key + "\""),
      "client_ca =", "client_ca = \"./../shared/roots.pem\"");
  const std::string file = dir.write("etc/cbagate/cbagate.toml", text);

  SUBCASE("load_file: against the directory of the file") {
    const auto r = load_file(file);
    for (const auto& d : r.errors) INFO(d.to_string());
    REQUIRE(r.ok());
    CHECK(r.value->source == file);
    CHECK(r.value->tls.certificate == dir.str() + "/etc/cbagate/pki/server-chain.pem");
    CHECK(r.value->tls.private_key == abs_key);
    CHECK(r.value->tls.client_ca == dir.str() + "/etc/shared/roots.pem");
    CHECK(fs::path(r.value->tls.certificate).is_absolute());
  }
  SUBCASE("load_file with a relative path: still absolute results") {
    const fs::path old = fs::current_path();
    fs::current_path(dir.path() / "etc");
    const auto r = load_file("cbagate/cbagate.toml");
    fs::current_path(old);
    REQUIRE(r.ok());
    CHECK(r.value->source == file);
    CHECK(r.value->tls.certificate == dir.str() + "/etc/cbagate/pki/server-chain.pem");
  }
  SUBCASE("load_string: against base_dir") {
    const auto r = load_string(text, "mem", (dir.path() / "etc/cbagate").string());
    REQUIRE(r.ok());
    CHECK(r.value->source == "mem");
    CHECK(r.value->tls.client_ca == dir.str() + "/etc/shared/roots.pem");
  }
}

TEST_CASE("config: an unknown key in a table is an error with a suggestion") {
  temp_dir dir;
  write_server_files(dir);
  const std::string text = replace_line(minimal, "listen =", "listen = [\"127.0.0.1:0\"]\nthread = 4");
  const auto r = load(text, dir);
  const std::string message = only_error(r, "server.thread", find_in(text, "thread = 4"));
  CHECK(contains(message, "unknown key"));
  CHECK(contains(message, "did you mean \"threads\""));
}

TEST_CASE("config: an unknown key at top level is an error") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("a key that belongs in a table") {
    const std::string text = "threads = 4\n" + minimal;
    const std::string message = only_error(load(text, dir), "threads", where{1, 1});
    CHECK(contains(message, "unknown key"));
    CHECK(contains(message, "belongs in [server]"));
  }
  SUBCASE("a misspelt key of a table, at top level") {
    const std::string text = "thread = 4\n" + minimal;
    const std::string message = only_error(load(text, dir), "thread", where{1, 1});
    CHECK(contains(message, "did you mean server.threads?"));
  }
  SUBCASE("a misspelt table") {
    const std::string text = minimal + "[acess_log]\npath = \"-\"\n";
    const std::string message =
        only_error(load(text, dir), "acess_log", find_in(text, "acess_log"));
    CHECK(contains(message, "unknown table"));
    CHECK(contains(message, "did you mean \"access_log\""));
  }
  SUBCASE("a key inside [[route]] names the element") {
    const std::string text = minimal + "[[route]]\nprefix = \"/ecp\"\nclient_certs = \"none\"\n";
    const std::string message =
        only_error(load(text, dir), "route[1].client_certs", find_in(text, "client_certs"));
    CHECK(contains(message, "did you mean \"client_cert\""));
  }
}

TEST_CASE("config: a value of the wrong type is an error at the value") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("string for an integer") {
    const std::string text = minimal + "[limits]\nread_ahead_bytes = \"48k\"\n";
    const std::string m =
        only_error(load(text, dir), "limits.read_ahead_bytes", find_in(text, "\"48k\""));
    CHECK(m == "expected an integer, got a string");
  }
  SUBCASE("float for an integer") {
    const std::string text = minimal + "[limits]\nmax_header_fields = 10.5\n";
    only_error(load(text, dir), "limits.max_header_fields", find_in(text, "10.5"));
  }
  SUBCASE("string for a boolean") {
    const std::string text = minimal + "[access_log]\nlog_upn = \"yes\"\n";
    const std::string m = only_error(load(text, dir), "access_log.log_upn", find_in(text, "\"yes\""));
    CHECK(contains(m, "expected a boolean"));
  }
  SUBCASE("a single string for an array, with a hint") {
    const std::string text = replace_line(minimal, "listen =", "listen = \"127.0.0.1:0\"");
    const std::string m = only_error(load(text, dir), "server.listen", find_in(text, "\"127"));
    CHECK(contains(m, "expected an array of strings, got a string"));
    CHECK(contains(m, "[\"...\"]"));
  }
  SUBCASE("an array element of the wrong type") {
    const std::string text = replace_line(minimal, "servers =", "servers = [\"http://a:1\", 8080]");
    only_error(load(text, dir), "upstream.servers[1]", find_in(text, "8080]"));
  }
  SUBCASE("a table instead of an array of tables") {
    const std::string text = replace_line(minimal, "[[route]]", "[route]");
    const std::string m = only_error(load(text, dir), "route", find_in(text, "[route]"));
    CHECK(contains(m, "[[route]]"));
  }
  SUBCASE("a value instead of a table") {
    const std::string text = "log = \"debug\"\n" + minimal;
    const std::string m = only_error(load(text, dir), "log", find_in(text, "\"debug\""));
    CHECK(m == "expected a table ([log]), got a string");
  }
  SUBCASE("a date for seconds") {
    const std::string text = minimal + "[timeouts]\nidle = 2024-01-01\n";
    const std::string m = only_error(load(text, dir), "timeouts.idle", find_in(text, "2024"));
    CHECK(contains(m, "got a date"));
  }
}

TEST_CASE("config: a value outside its choices is an error") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("identity.mode") {
    const std::string text = minimal + "[identity]\nmode = \"ntlm\"\n";
    const std::string m = only_error(load(text, dir), "identity.mode", find_in(text, "\"ntlm\""));
    CHECK(m == "must be one of \"header\", \"kerberos\", got \"ntlm\"");
  }
  SUBCASE("route.client_cert is case-sensitive") {
    const std::string text = minimal + "client_cert = \"Require\"\n";
    only_error(load(text, dir), "route[0].client_cert", find_in(text, "\"Require\""));
  }
  SUBCASE("an element of auth.upn_sources") {
    const std::string text = minimal + "[auth]\nupn_sources = [\"san\", \"email\"]\n";
    only_error(load(text, dir), "auth.upn_sources[1]", find_in(text, "\"email\""));
  }
  SUBCASE("tls.min_version") {
    const std::string text = replace_line(minimal, "client_ca =",
                                          "client_ca = \"client-roots.pem\"\nmin_version = \"1.1\"");
    only_error(load(text, dir), "tls.min_version", find_in(text, "\"1.1\""));
  }
}

TEST_CASE("config: a number out of range is an error") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("above the maximum") {
    const std::string text = replace_line(minimal, "listen =", "listen = [\"127.0.0.1:0\"]\nthreads = 2000");
    const std::string m = only_error(load(text, dir), "server.threads", find_in(text, "2000"));
    CHECK(m == "must be in 0..1024, got 2000");
  }
  SUBCASE("negative") {
    const std::string text = minimal + "[limits]\nmax_body_bytes = -1\n";
    only_error(load(text, dir), "limits.max_body_bytes", find_in(text, "-1"));
  }
  SUBCASE("below the minimum") {
    const std::string text = minimal + "[limits]\nmax_request_header_bytes = 100\n";
    only_error(load(text, dir), "limits.max_request_header_bytes", find_in(text, "100"));
  }
  SUBCASE("a zero timeout") {
    const std::string text = minimal + "[timeouts]\nhandshake = 0\n";
    where at = find_in(text, "handshake = 0");
    at.column += 12;
    const std::string m = only_error(load(text, dir), "timeouts.handshake", at);
    CHECK(m == "must be > 0, at most 86400 (seconds), got 0");
  }
  SUBCASE("a negative float timeout") {
    const std::string text = minimal + "[timeouts]\nidle = -0.5\n";
    only_error(load(text, dir), "timeouts.idle", find_in(text, "-0.5"));
  }
  SUBCASE("an infinite timeout") {
    const std::string text = minimal + "[timeouts]\ndrain = inf\n";
    only_error(load(text, dir), "timeouts.drain", find_in(text, "inf"));
  }
  SUBCASE("a timeout over a day") {
    const std::string text = minimal + "[timeouts]\nidle = 86401\n";
    only_error(load(text, dir), "timeouts.idle", find_in(text, "86401"));
  }
  SUBCASE("a route timeout may be 0 but not negative") {
    CHECK(load(minimal + "response_timeout = 0\n", dir).ok());
    const std::string text = minimal + "response_timeout = -1\n";
    only_error(load(text, dir), "route[0].response_timeout", find_in(text, "-1"));
  }
}

TEST_CASE("config: a missing required key points at its table, or at line 1") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("a key of a table that is there") {
    const std::string text = replace_line(minimal, "private_key =", "");
    const std::string m = only_error(load(text, dir), "tls.private_key", find_in(text, "[tls]"));
    CHECK(m == "missing required key");
  }
  SUBCASE("a whole table is missing") {
    const std::string text = replace_line(replace_line(minimal, "[upstream]", ""), "servers =", "");
    only_error(load(text, dir), "upstream.servers", where{1, 1});
  }
  SUBCASE("no route") {
    const std::string text = replace_line(replace_line(minimal, "[[route]]", ""), "prefix =", "");
    const std::string m = only_error(load(text, dir), "route", where{1, 1});
    CHECK(m == "at least one [[route]] is required");
  }
  SUBCASE("a route without prefix") {
    const std::string text = minimal + "\n[[route]]\nclient_cert = \"none\"\n";
    // The element's [[route]] header is the line above its only key.
    const std::size_t line = find_in(text, "client_cert").line - 1;
    only_error(load(text, dir), "route[1].prefix", where{line, 1});
  }
  SUBCASE("an empty listen list") {
    const std::string text = replace_line(minimal, "listen =", "listen = []");
    const std::string m = only_error(load(text, dir), "server.listen", find_in(text, "[]"));
    CHECK(m == "must not be empty");
  }
  SUBCASE("an empty upstream list") {
    const std::string text = replace_line(minimal, "servers =", "servers = []");
    only_error(load(text, dir), "upstream.servers", find_in(text, "[]"));
  }
}

TEST_CASE("config: a missing or unreadable file is an error at its key") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("a required file") {
    const std::string text = replace_line(minimal, "client_ca =", "client_ca = \"nope/roots.pem\"");
    const std::string m = only_error(load(text, dir), "tls.client_ca", find_in(text, "\"nope"));
    CHECK(contains(m, "file not found: " + dir.str() + "/nope/roots.pem"));
    CHECK(contains(m, "relative to " + dir.str()));
  }
  SUBCASE("an element of tls.crl") {
    dir.write("crl/a.pem");
    const std::string text = replace_line(minimal, "client_ca =",
                                          "client_ca = \"client-roots.pem\"\n"
                                          "crl = [\"crl/a.pem\", \"crl/b.pem\"]");
    only_error(load(text, dir), "tls.crl[1]", find_in(text, "\"crl/b.pem\""));
  }
  SUBCASE("a directory") {
    fs::create_directories(dir.path() / "pki");
    const std::string text = replace_line(minimal, "certificate =", "certificate = \"pki\"");
    const std::string m = only_error(load(text, dir), "tls.certificate", find_in(text, "\"pki\""));
    CHECK(contains(m, "is a directory"));
  }
  SUBCASE("an empty required path") {
    const std::string text = replace_line(minimal, "private_key =", "private_key = \"\"");
    only_error(load(text, dir), "tls.private_key", find_in(text, "\"\""));
  }
  SUBCASE("an unreadable file") {
    if (::geteuid() == 0) {
      MESSAGE("running as root: every file is readable, nothing to test");
      return;
    }
    const std::string key = dir.write("locked.key");
    ::chmod(key.c_str(), 0);
    const std::string text = replace_line(minimal, "private_key =", "private_key = \"locked.key\"");
    const std::string m = only_error(load(text, dir), "tls.private_key", find_in(text, "\"locked"));
    CHECK(contains(m, "cannot read"));
  }
  SUBCASE("upstream.ca and an [[tls.sni]] key") {
    dir.write("a.pem");
    const std::string text = minimal + "[[tls.sni]]\nserver_names = [\"a.lab.test\"]\n"
                                       "certificate = \"a.pem\"\nprivate_key = \"a.key\"\n";
    only_error(load(text, dir), "tls.sni[0].private_key", find_in(text, "\"a.key\""));
  }
}

TEST_CASE("config: a bad upstream URL is an error at the element") {
  temp_dir dir;
  write_server_files(dir);
  const char* bad[] = {"ftp://exchange:21",          "exchange.lab.test:443",
                       "http://exchange/owa",        "http://exchange:80/?x=1",
                       "https://user@exchange",      "http://:8080",
                       "http://exchange:0",          "http://exchange:65536",
                       "http://exchange:80#frag",    "http://exch_ange:80",
                       "http://300.1.1.1:80",        "http://exchange:8080 "};
  SUBCASE("bad URLs") {
    for (const char* url : bad) {
      CAPTURE(url);
      const std::string text = replace_line(
          minimal, "servers =", "servers = [\"http://ok:1\", \"" + std::string(url) + "\"]");
      const std::string m = only_error(load(text, dir), "upstream.servers[1]",
                                       find_in(text, "\"" + std::string(url)));
      CHECK(contains(m, "bad upstream URL"));
    }
  }
  SUBCASE("the same server twice") {
    const std::string text = replace_line(minimal, "servers =",
                                          "servers = [\"http://a:80\", \"http://A\"]");
    only_error(load(text, dir), "upstream.servers[1]", find_in(text, "\"http://A\""));
  }
}

TEST_CASE("config: a bad listen address is an error at the element") {
  temp_dir dir;
  write_server_files(dir);
  const char* bad[] = {"0.0.0.0",       "0.0.0.0:",         "0.0.0.0:65536", "::1:443",
                       "[::1]443",      "[::g]:443",        ":443",          "300.0.0.1:443",
                       "0.0.0.0:-1",    "bad_host:443",     "[::1:443",      "host:44a"};
  SUBCASE("bad addresses") {
    for (const char* addr : bad) {
      CAPTURE(addr);
      const std::string text = replace_line(
          minimal, "listen =", "listen = [\"127.0.0.1:1\", \"" + std::string(addr) + "\"]");
      const std::string m = only_error(load(text, dir), "server.listen[1]",
                                       find_in(text, "\"" + std::string(addr)));
      CHECK(contains(m, "bad listen address"));
    }
  }
  SUBCASE("the same address twice") {
    const std::string text = replace_line(minimal, "listen =",
                                          "listen = [\"127.0.0.1:1\", \"127.0.0.1:1\"]");
    only_error(load(text, dir), "server.listen[1]", find_in(text, "\"127.0.0.1:1\"]"));
  }
  SUBCASE("admin_listen") {
    const std::string text = replace_line(minimal, "listen =",
                                          "listen = [\"127.0.0.1:0\"]\nadmin_listen = \"9100\"");
    only_error(load(text, dir), "server.admin_listen", find_in(text, "\"9100\""));
  }
}

TEST_CASE("config: a duplicate route prefix is an error, case-insensitively") {
  temp_dir dir;
  write_server_files(dir);
  const std::string text = minimal + "[[route]]\nprefix = \"/ecp\"\n[[route]]\nprefix = \"/OWA\"\n";
  const std::string m = only_error(load(text, dir), "route[2].prefix", find_in(text, "\"/OWA\""));
  CHECK(contains(m, "duplicate route prefix \"/OWA\""));
  CHECK(contains(m, "route[0].prefix at line 13"));
}

TEST_CASE("config: a bad route prefix is an error") {
  temp_dir dir;
  write_server_files(dir);
  const char* bad[] = {"owa",       "/owa/",     "/owa//x",  "/owa/../ecp", "/owa/./x", "/..",
                       "/owa%2f",   "/owa\\\\x", "/o wa",    "/owa?x",      "/owa#x",   "",
                       "/\\u00e9"};
  SUBCASE("bad prefixes") {
    for (const char* prefix : bad) {
      CAPTURE(prefix);
      const std::string line = "prefix = \"" + std::string(prefix) + "\"";
      const std::string text = replace_line(minimal, "prefix =", line);
      where at = find_in(text, line);
      at.column += 9;
      const std::string m = only_error(load(text, dir), "route[0].prefix", at);
      CHECK(contains(m, "bad route prefix"));
    }
  }
  SUBCASE("a control character") {
    const std::string text = replace_line(minimal, "prefix =", "prefix = \"/owa\\u0000\"");
    only_error(load(text, dir), "route[0].prefix", find_in(text, "\"/owa\\u"));
  }
  SUBCASE("good prefixes") {
    for (const char* good : {"/", "/owa", "/a.b/c-d_e~f", "/v1.2/x..y"}) {
      CAPTURE(good);
      CHECK(load(replace_line(minimal, "prefix =", "prefix = \"" + std::string(good) + "\""), dir)
                .ok());
    }
  }
}

TEST_CASE("config: a bad identity header name is an error") {
  temp_dir dir;
  write_server_files(dir);
  for (const char* name : {"Host", "content-length", "Transfer-Encoding", "Connection",
                           "Authorization", "X-Forwarded-For", "X Client UPN", "X-UPN:", ""}) {
    CAPTURE(name);
    const std::string line = "header = \"" + std::string(name) + "\"";
    const std::string text = minimal + "[identity]\n" + line + "\n";
    where at = find_in(text, line);
    at.column += 9;
    const std::string m = only_error(load(text, dir), "identity.header", at);
    CHECK(contains(m, "bad header name"));
  }
  CHECK(load(minimal + "[identity]\nheader = \"X-MS-Client-UPN\"\n", dir).ok());
}

TEST_CASE("config: kerberos mode requires its keys and files") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("without [kerberos]: each required key, at identity.mode") {
    const std::string text = minimal + "[identity]\nmode = \"kerberos\"\n";
    const auto r = load(text, dir);
    REQUIRE(r.errors.size() == 3);
    const where at = find_in(text, "\"kerberos\"");
    CHECK(r.errors[0].key == "kerberos.keytab");
    CHECK(r.errors[1].key == "kerberos.principal");
    CHECK(r.errors[2].key == "kerberos.target_spn");
    for (const auto& d : r.errors) {
      CHECK(d.line == at.line);
      CHECK(d.column == at.column);
      CHECK(d.message == "missing; required when identity.mode = \"kerberos\"");
    }
  }
  SUBCASE("without keytab: at [kerberos]") {
    const std::string text = minimal + "[identity]\nmode = \"kerberos\"\n[kerberos]\n"
                                       "principal = \"HTTP/p@R\"\ntarget_spn = \"HTTP/t\"\n";
    only_error(load(text, dir), "kerberos.keytab", find_in(text, "[kerberos]"));
  }
  SUBCASE("a keytab that does not exist") {
    const std::string text = minimal + "[identity]\nmode = \"kerberos\"\n[kerberos]\n"
                                       "keytab = \"cbagate.keytab\"\nprincipal = \"HTTP/p@R\"\n"
                                       "target_spn = \"HTTP/t\"\n";
    const std::string m =
        only_error(load(text, dir), "kerberos.keytab", find_in(text, "\"cbagate.keytab\""));
    CHECK(contains(m, "file not found"));
  }
  SUBCASE("header mode ignores an unfinished [kerberos] table") {
    const std::string text = minimal + "[kerberos]\nkeytab = \"later.keytab\"\n";
    const auto r = load(text, dir);
    REQUIRE(r.ok());
    CHECK(r.value->kerberos.keytab == dir.str() + "/later.keytab");
  }
  SUBCASE("header mode still rejects unknown kerberos keys") {
    const std::string text = minimal + "[kerberos]\nkeytabs = \"x\"\n";
    only_error(load(text, dir), "kerberos.keytabs", find_in(text, "keytabs"));
  }
}

TEST_CASE("config: a TOML syntax error reports its line and column") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("a broken value") {
    const std::string text = replace_line(minimal, "listen =", "listen = [\"127.0.0.1:0\"\nthreads = 4");
    const auto r = load(text, dir);
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].key.empty());
    CHECK(r.errors[0].line == 3);
    CHECK(r.errors[0].column > 0);
    CHECK(r.errors[0].to_string().rfind("test.toml:3:", 0) == 0);
  }
  SUBCASE("a key defined twice") {
    const std::string text = minimal + "prefix = \"/ecp\"\n";
    const auto r = load(text, dir);
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0].line == find_in(text, "prefix = \"/ecp\"").line);
  }
}

TEST_CASE("config: every error of a file is reported at once, in file order") {
  temp_dir dir;
  write_server_files(dir);
  const std::string text = R"([server]
listen = ["127.0.0.1:99999"]
thread = 2

[tls]
certificate = "missing.pem"
private_key = "server.key"
client_ca = "client-roots.pem"
client_cert = "maybe"

[identity]
header = "Host"

[upstream]
servers = ["gopher://x"]

[[route]]
prefix = "owa"

[[route]]
prefix = "/ecp"
client_cert = "none"
max_body_bytes = -5
)";
  const auto r = load(text, dir);
  std::ostringstream all;
  for (const auto& d : r.errors) all << d.to_string() << '\n';
  INFO(all.str());
  REQUIRE(r.errors.size() == 8);
  const char* keys[] = {"server.listen[0]", "server.thread",   "tls.certificate",
                        "tls.client_cert",  "identity.header", "upstream.servers[0]",
                        "route[0].prefix",  "route[1].max_body_bytes"};
  const std::size_t lines[] = {2, 3, 6, 9, 12, 15, 18, 23};
  for (std::size_t i = 0; i < 8; ++i) {
    CHECK(r.errors[i].key == keys[i]);
    CHECK(r.errors[i].line == lines[i]);
  }
}

TEST_CASE("config: auth.upn_sources must be a non-empty list without repeats") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("empty") {
    const std::string text = minimal + "[auth]\nupn_sources = []\n";
    only_error(load(text, dir), "auth.upn_sources", find_in(text, "[]"));
  }
  SUBCASE("repeated") {
    const std::string text = minimal + "[auth]\nupn_sources = [\"san\", \"san\"]\n";
    const std::string m =
        only_error(load(text, dir), "auth.upn_sources[1]", find_in(text, "\"san\"]"));
    CHECK(contains(m, "listed twice"));
  }
  SUBCASE("subject only") {
    const auto r = load(minimal + "[auth]\nupn_sources = [\"subject\"]\n", dir);
    REQUIRE(r.ok());
    CHECK_FALSE(r.value->auth.upn_from_san);
    CHECK(r.value->auth.upn_from_subject);
  }
}

TEST_CASE("config: [[tls.sni]] names are checked and unique across entries") {
  temp_dir dir;
  write_server_files(dir);
  dir.write("a.pem");
  dir.write("a.key");
  const std::string entry = "[[tls.sni]]\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"\n";
  SUBCASE("a name in two entries") {
    const std::string text = minimal + entry + "server_names = [\"a.lab.test\"]\n" + entry +
                             "server_names = [\"b.lab.test\", \"A.lab.test\"]\n";
    const std::string m = only_error(load(text, dir), "tls.sni[1].server_names",
                                     find_in(text, "[\"b.lab.test\""));
    CHECK(contains(m, "already served by tls.sni[0]"));
  }
  SUBCASE("bad names") {
    for (const char* bad : {"*", "*.com", "a.*.lab.test", "foo*.lab.test", "-a.lab.test", "a..b"}) {
      CAPTURE(bad);
      const std::string text = minimal + entry + "server_names = [\"" + std::string(bad) + "\"]\n";
      where at = find_in(text, "server_names = [\"" + std::string(bad));
      at.column += 16;  // the element's opening quote
      only_error(load(text, dir), "tls.sni[0].server_names[0]", at);
    }
  }
  SUBCASE("no names") {
    const std::string text = minimal + entry + "server_names = []\n";
    only_error(load(text, dir), "tls.sni[0].server_names", find_in(text, "[]"));
  }
}

TEST_CASE("config: output paths are checked, \"-\" and \"\" are special") {
  temp_dir dir;
  write_server_files(dir);
  CHECK(load(minimal + "[access_log]\npath = \"\"\n", dir).value->access_log.path.empty());
  CHECK(load(minimal + "[access_log]\npath = \"-\"\n", dir).value->access_log.path == "-");
  const std::string text = minimal + "[log]\npath = \"no/such/dir/cbagate.log\"\n";
  const std::string m = only_error(load(text, dir), "log.path", find_in(text, "\"no/"));
  CHECK(contains(m, "directory does not exist"));
  const std::string empty = minimal + "[log]\npath = \"\"\n";
  only_error(load(empty, dir), "log.path", find_in(empty, "\"\""));
}

TEST_CASE("config: strings with control characters are rejected") {
  temp_dir dir;
  write_server_files(dir);
  const std::string good = replace_line(minimal, "client_ca =",
                                        "client_ca = \"client-roots.pem\"\nciphers = \"A\\nB\"");
  only_error(load(good, dir), "tls.ciphers", find_in(good, "\"A\\n"));
}

TEST_CASE("config: diagnostic::to_string is file:line:col: key: message") {
  CHECK(diagnostic{"a.toml", 3, 7, "server.threads", "bad"}.to_string() ==
        "a.toml:3:7: server.threads: bad");
  CHECK(diagnostic{"a.toml", 3, 7, "", "syntax"}.to_string() == "a.toml:3:7: syntax");
  CHECK(diagnostic{"a.toml", 0, 0, "", "cannot open"}.to_string() == "a.toml: cannot open");
}

TEST_CASE("config: load_file of a missing file reports the path, without throwing") {
  temp_dir dir;
  const std::string path = dir.str() + "/absent.toml";
  const auto r = load_file(path);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.value == nullptr);
  CHECK(r.errors[0].file == path);
  CHECK(r.errors[0].line == 0);
  CHECK(contains(r.errors[0].to_string(), "No such file or directory"));
  const auto d = load_file(dir.str());
  REQUIRE(d.errors.size() == 1);
  CHECK(contains(d.errors[0].message, "Is a directory"));
}

TEST_CASE("config: check_config answers like nginx -t") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("a good file") {
    const std::string path = dir.write("good.toml", minimal);
    std::ostringstream out, err;
    CHECK(check_config(path, out, err) == 0);
    CHECK(out.str() == "cbagate: configuration file " + path + " test is successful\n");
    CHECK(err.str().empty());
  }
  SUBCASE("a bad file: every diagnostic, then the verdict") {
    const std::string path =
        dir.write("bad.toml", replace_line(minimal, "listen =", "listen = [\"x\"]\nthread = 1"));
    std::ostringstream out, err;
    CHECK(check_config(path, out, err) == 2);
    CHECK(out.str().empty());
    CHECK(err.str() == path + ":2:11: server.listen[0]: bad listen address \"x\": expected "
                              "\"host:port\" or \"[v6]:port\"\n" +
                           path + ":3:1: server.thread: unknown key; did you mean \"threads\"?\n"
                           "cbagate: configuration file " + path + " test failed\n");
  }
}

TEST_CASE("config: a secret file open to group or others stops the load, naming file and mode") {
  temp_dir dir;
  write_server_files(dir);
  const std::string key = dir.str() + "/server.key";
  SUBCASE("tls.private_key 0644") {
    REQUIRE(::chmod(key.c_str(), 0644) == 0);
    const std::string m = only_error(load(minimal, dir), "tls.private_key",
                                     find_in(minimal, "\"server.key\""));
    CHECK(m == key + " is accessible by group or others (mode 0644); a secret must be readable "
                     "by its owner only: chmod 600 " + key);
  }
  SUBCASE("group read only (0640) and other write only (0602) are refused too") {
    for (const ::mode_t mode : {0640, 0602, 0660, 0604}) {
      REQUIRE(::chmod(key.c_str(), mode) == 0);
      const auto r = load(minimal, dir);
      REQUIRE(r.errors.size() == 1);
      CHECK(r.errors[0].key == "tls.private_key");
    }
  }
  SUBCASE("owner-only modes load") {
    for (const ::mode_t mode : {0600, 0400}) {
      REQUIRE(::chmod(key.c_str(), mode) == 0);
      CHECK(load(minimal, dir).ok());
    }
  }
  SUBCASE("a symbolic link is judged by the file it points to") {
    const std::string target = dir.write("real.key");
    REQUIRE(::chmod(target.c_str(), 0644) == 0);
    std::filesystem::remove(key);
    std::filesystem::create_symlink(target, key);
    const std::string m = only_error(load(minimal, dir), "tls.private_key",
                                     find_in(minimal, "\"server.key\""));
    CHECK(contains(m, "(mode 0644)"));
  }
  SUBCASE("an [[tls.sni]] key") {
    const std::string a = dir.write("a.key");
    dir.write("a.pem");
    REQUIRE(::chmod(a.c_str(), 0604) == 0);
    const std::string text = minimal + "[[tls.sni]]\nserver_names = [\"a.lab.test\"]\n"
                                       "certificate = \"a.pem\"\nprivate_key = \"a.key\"\n";
    const std::string m = only_error(load(text, dir), "tls.sni[0].private_key",
                                     find_in(text, "\"a.key\""));
    CHECK(contains(m, a + " is accessible by group or others (mode 0604)"));
  }
  SUBCASE("the keytab in kerberos mode") {
    const std::string kt = dir.write("cbagate.keytab");
    REQUIRE(::chmod(kt.c_str(), 0640) == 0);
    const std::string text = minimal + "[identity]\nmode = \"kerberos\"\n[kerberos]\n"
                                       "keytab = \"cbagate.keytab\"\nprincipal = \"HTTP/p@R\"\n"
                                       "target_spn = \"HTTP/t\"\n";
    const std::string m = only_error(load(text, dir), "kerberos.keytab",
                                     find_in(text, "\"cbagate.keytab\""));
    CHECK(contains(m, kt + " is accessible by group or others (mode 0640)"));
  }
  SUBCASE("a public file (the certificate) may be 0644") {
    const std::string cert = dir.str() + "/server-chain.pem";
    REQUIRE(::chmod(cert.c_str(), 0644) == 0);
    CHECK(load(minimal, dir).ok());
  }
}

TEST_CASE("config: secret_file_problem names a file it cannot stat") {
  const auto m = secret_file_problem("/nonexistent-cbagate/x.key");
  REQUIRE(m.has_value());
  CHECK(contains(*m, "cannot stat /nonexistent-cbagate/x.key"));
}

TEST_CASE("config: server.proxy_protocol needs proxy_protocol_from, bad ranges are errors") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("true without balancers") {
    const std::string text = replace_line(minimal, "listen =",
                                          "listen = [\"127.0.0.1:0\"]\nproxy_protocol = true");
    const std::string m = only_error(load(text, dir), "server.proxy_protocol",
                                     find_in(text, "true"));
    CHECK(contains(m, "proxy_protocol_from"));
  }
  SUBCASE("a bad range, at its element") {
    const std::string text = replace_line(
        minimal, "listen =",
        "listen = [\"127.0.0.1:0\"]\nproxy_protocol_from = [\"10.0.0.0/8\", \"10.1.2.3/8\"]\n"
        "proxy_protocol = true");
    const std::string m = only_error(load(text, dir), "server.proxy_protocol_from[1]",
                                     find_in(text, "\"10.1.2.3/8\""));
    CHECK(contains(m, "not an address range"));
  }
  SUBCASE("balancers and a short header deadline") {
    const std::string text = replace_line(
        minimal, "listen =",
        "listen = [\"127.0.0.1:0\"]\nproxy_protocol_from = [\"127.0.0.1\"]\nproxy_protocol = true\n"
        "[timeouts]\nproxy_header = 3");
    const auto r = load(text, dir);
    REQUIRE(r.ok());
    CHECK(r.value->server.proxy_protocol);
    CHECK(r.value->timeouts.proxy_header.count() == 3);
  }
}

TEST_CASE("config: tls.ticket_keys is a file, ticket_key_rotation a duration") {
  temp_dir dir;
  write_server_files(dir);
  dir.write("tickets.keys");
  std::string t = replace_line(minimal, "client_ca =",
                               "client_ca = \"client-roots.pem\"\nticket_keys = \"tickets.keys\"\n"
                               "ticket_key_rotation = \"10m\"");
  auto r = load(t, dir);
  REQUIRE(r.ok());
  CHECK(r.value->tls.ticket_keys == dir.str() + "/tickets.keys");
  CHECK(r.value->tls.ticket_key_rotation.count() == 600);
  t = replace_line(minimal, "client_ca =",
                   "client_ca = \"client-roots.pem\"\nticket_keys = \"missing.keys\"");
  r = load(t, dir);
  CHECK_FALSE(r.ok());
  r = load(minimal, dir);
  REQUIRE(r.ok());
  CHECK(r.value->tls.ticket_keys.empty());
  CHECK(r.value->tls.ticket_key_rotation.count() == 3600);
}

TEST_CASE("config: route.methods and route.pass_authorization (issue 10)") {
  temp_dir dir;
  write_server_files(dir);
  SUBCASE("absent: empty list, derived pass_authorization") {
    auto r = load(minimal, dir);
    REQUIRE(r.ok());
    CHECK(r.value->routes[0].methods.empty());
    CHECK_FALSE(r.value->routes[0].pass_authorization.has_value());
  }
  SUBCASE("given") {
    auto r = load(minimal + "client_cert = \"none\"\nmethods = [\"RPC_IN_DATA\", \"GET\"]\n"
                            "pass_authorization = false\n", dir);
    REQUIRE(r.ok());
    CHECK(r.value->routes[0].methods == std::vector<std::string>{"RPC_IN_DATA", "GET"});
    CHECK(r.value->routes[0].pass_authorization == false);
  }
  SUBCASE("a bad method is an error at the element") {
    for (const char* m : {"CONNECT", "connect", "GE T", "", "G\\u00e9T"}) {
      CAPTURE(m);
      const std::string line = "methods = [\"GET\", \"" + std::string(m) + "\"]";
      const std::string text = minimal + line + "\n";
      where at = find_in(text, line);
      at.column += 18;
      const std::string msg = only_error(load(text, dir), "route[0].methods[1]", at);
      CHECK(contains(msg, "bad method"));
    }
  }
  SUBCASE("pass_authorization = true on a require route is refused") {
    const std::string text = minimal + "client_cert = \"require\"\npass_authorization = true\n";
    where at = find_in(text, "true");
    const std::string msg = only_error(load(text, dir), "route[0].pass_authorization", at);
    CHECK(contains(msg, "require"));
  }
}
