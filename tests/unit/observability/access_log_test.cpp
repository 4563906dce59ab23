#include "observability/access_log.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace obs = cbagate::observability;
namespace json = boost::json;

namespace {

obs::access_record sample() {
  using namespace std::chrono;
  obs::access_record r;
  r.time = system_clock::time_point{} + seconds(1714564800) + milliseconds(123);
  r.conn_id = 7;
  r.req_id = 3;
  r.client = "192.0.2.10:50123";
  r.sni = "mail.example.com";
  r.tls_version = "TLSv1.3";
  r.tls_resumed = true;
  r.method = "POST";
  r.path = "/Microsoft-Server-ActiveSync";
  r.query = "Cmd=Ping&User=alice&DeviceId=ABC123&DeviceType=iPhone";
  r.route = "/Microsoft-Server-ActiveSync";
  r.upn = "alice@corp.example";
  r.cert_subject = "CN=Alice,O=Corp";
  r.cert_serial = "1a2b";
  r.cert_issuer = "CN=Corp Issuing CA";
  r.cert_sha256 = std::string(64, 'f');
  r.status = 200;
  r.substatus = 0;
  r.error = "";
  r.bytes_in = 120;
  r.bytes_out = 4096;
  r.upstream = "https://ex1.corp.example:443";
  r.upstream_status = 200;
  r.total_us = 1500;
  r.upstream_connect_us = 300;
  r.upstream_first_byte_us = 900;
  r.delegation_us = -1;
  r.user_agent = "Apple-iPhone13C2/2001.5";
  r.extra = {{"krb_cache", "hit"}};
  return r;
}

json::object parse_line(const std::string& line) {
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  REQUIRE_MESSAGE(!ec, "not JSON: " << line);
  REQUIRE(v.is_object());
  return v.as_object();
}

class temp_dir {
 public:
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cbagate-obs-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::vector<std::string> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(line);
  }
  return lines;
}

}  // namespace

TEST_CASE("access_log: line parses back with every field") {
  const auto o = parse_line(obs::access_log::render_json(sample(), true));
  const std::vector<std::string> keys{
      "time", "conn_id", "req_id", "client", "sni", "tls_version", "tls_resumed", "method",
      "path", "query", "route", "upn", "cert_subject", "cert_serial", "cert_issuer", "cert_sha256", "status",
      "substatus", "error", "bytes_in", "bytes_out", "upstream", "upstream_conn", "upstream_status", "total_us",
      "upstream_connect_us", "upstream_first_byte_us", "delegation_us", "user_agent", "extra"};
  CHECK(o.size() == keys.size());
  for (const auto& k : keys) {
    CHECK_MESSAGE(o.contains(k), "missing " << k);
  }
  CHECK(o.at("time").as_string() == "2024-05-01T12:00:00.123Z");
  CHECK(o.at("conn_id").to_number<std::uint64_t>() == 7);
  CHECK(o.at("req_id").to_number<std::uint64_t>() == 3);
  CHECK(o.at("client").as_string() == "192.0.2.10:50123");
  CHECK(o.at("tls_resumed").as_bool() == true);
  CHECK(o.at("query").as_string() == "Cmd=Ping&User=alice&DeviceId=ABC123&DeviceType=iPhone");
  CHECK(o.at("upn").as_string() == "alice@corp.example");
  CHECK(o.at("cert_sha256").as_string() == std::string(64, 'f'));
  CHECK(o.at("cert_subject").as_string() == "CN=Alice,O=Corp");
  CHECK(o.at("status").to_number<int>() == 200);
  CHECK(o.at("bytes_out").to_number<std::uint64_t>() == 4096);
  CHECK(o.at("upstream_first_byte_us").to_number<std::int64_t>() == 900);
  CHECK(o.at("delegation_us").to_number<std::int64_t>() == -1);
  CHECK(o.at("extra").as_object().at("krb_cache").as_string() == "hit");
}

TEST_CASE("access_log: upn is null when absent and log_upn is on") {
  auto r = sample();
  r.upn.reset();
  CHECK(parse_line(obs::access_log::render_json(r, true)).at("upn").is_null());
}

TEST_CASE("access_log: log_upn false omits the upn and redacts the query user") {
  auto r = sample();
  const auto o = parse_line(obs::access_log::render_json(r, false));
  CHECK_FALSE(o.contains("upn"));
  CHECK(o.at("query").as_string() == "Cmd=Ping&User=redacted&DeviceId=ABC123&DeviceType=iPhone");
  const std::string line = obs::access_log::render_json(r, false);
  CHECK(line.find("alice") == std::string::npos);

  r.query = "jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l";  // base64 ActiveSync query
  CHECK(parse_line(obs::access_log::render_json(r, false)).at("query").as_string() == "redacted");
  r.query = "user=bob&Cmd=Sync";
  CHECK(parse_line(obs::access_log::render_json(r, false)).at("query").as_string() ==
        "user=redacted&Cmd=Sync");
}

TEST_CASE("access_log: hostile user_agent and path stay one parseable line") {
  auto r = sample();
  r.user_agent = std::string("evil\"}\n{\"status\":500\\\r\x01\x1b[31m") + "\xff\xfe" + "\xc3";
  r.path = std::string("/owa/\"quoted\"\n\x7f") + "\xe2\x82";
  r.extra = {{"k\"ey", "v\nal"}};
  const std::string line = obs::access_log::render_json(r, true);
  CHECK(line.find('\n') == std::string::npos);
  CHECK(line.find('\r') == std::string::npos);
  const auto o = parse_line(line);
  CHECK(o.at("user_agent").as_string() ==
        "evil\"}\n{\"status\":500\\\r\x01\x1b[31m\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(o.at("path").as_string() == "/owa/\"quoted\"\n\x7f\xef\xbf\xbd\xef\xbf\xbd");
  CHECK(o.at("status").to_number<int>() == 200);
  CHECK(o.at("extra").as_object().at("k\"ey").as_string() == "v\nal");
}

TEST_CASE("access_log: long fields are truncated") {
  auto r = sample();
  r.user_agent = std::string(1000, 'u');
  r.query = std::string(1000, 'q');
  r.path = "/" + std::string(5000, 'p');
  const auto o = parse_line(obs::access_log::render_json(r, true));
  CHECK(o.at("user_agent").as_string().size() == obs::access_log::max_field_bytes);
  CHECK(o.at("query").as_string().size() == obs::access_log::max_field_bytes);
  CHECK(o.at("path").as_string().size() == obs::access_log::max_path_bytes);
}

TEST_CASE("access_log: file receives one line per write and survives reopen") {
  const temp_dir dir;
  const auto file = dir.path() / "access.log";
  const auto rotated = dir.path() / "access.log.1";
  {
    auto log = obs::access_log::open(file.string(), true);
    REQUIRE(log.has_value());
    CHECK((*log)->enabled());
    auto r = sample();
    for (std::uint64_t i = 1; i <= 3; ++i) {
      r.req_id = i;
      (*log)->write(r);
    }
    std::filesystem::rename(file, rotated);
    REQUIRE((*log)->reopen().has_value());
    r.req_id = 4;
    (*log)->write(r);
    CHECK((*log)->dropped() == 0);
  }  // the destructor drains the queue
  REQUIRE(std::filesystem::exists(file));
  // Logs carry client addresses and UPNs: never world-readable.
  const auto perms = std::filesystem::status(file).permissions();
  CHECK((perms & std::filesystem::perms::others_all) == std::filesystem::perms::none);
  CHECK((perms & std::filesystem::perms::group_write) == std::filesystem::perms::none);
  auto lines = read_lines(rotated);
  const auto after = read_lines(file);
  lines.insert(lines.end(), after.begin(), after.end());
  REQUIRE(lines.size() == 4);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    CHECK(parse_line(lines[i]).at("req_id").to_number<std::uint64_t>() == i + 1);
  }
}

TEST_CASE("access_log: unopenable file is an error and empty path is off") {
  auto bad = obs::access_log::open("/nonexistent-dir-cbagate/access.log", true);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error() == boost::system::errc::no_such_file_or_directory);

  auto off = obs::access_log::open("", true);
  REQUIRE(off.has_value());
  CHECK_FALSE((*off)->enabled());
  (*off)->write(sample());
  CHECK((*off)->reopen().has_value());
}
