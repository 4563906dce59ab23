#include "observability/log.hpp"

#include "observability/error.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace obs = cbagate::observability;

namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("log: bad level is rejected and leaves the level unchanged") {
  REQUIRE(obs::init_logging("info", "-").has_value());
  const auto r = obs::init_logging("verbose", "-");
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error() == obs::errc::bad_level);
  CHECK(obs::set_level("loud").error() == obs::errc::bad_level);
  CHECK(obs::logger("tls")->level() == spdlog::level::info);
  CHECK(obs::parse_level("warning").value() == spdlog::level::warn);
  CHECK(obs::parse_level("off").value() == spdlog::level::off);
}

TEST_CASE("log: every module has its own logger and unknown names get main") {
  for (auto name : obs::logger_names()) {
    CHECK(obs::logger(name)->name() == name);
  }
  CHECK(obs::logger("no-such-module")->name() == "main");
  CHECK(obs::logger("http") == obs::logger("http"));
}

TEST_CASE("log: init twice re-targets the same loggers to a file with level and UTC time") {
  std::string tmpl = (std::filesystem::temp_directory_path() / "cbagate-log-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const std::filesystem::path dir(tmpl);
  const auto file = dir / "cbagate.log";

  const auto before = obs::logger("tls");
  REQUIRE(obs::init_logging("debug", file.string()).has_value());
  REQUIRE(obs::init_logging("debug", file.string()).has_value());
  CHECK(obs::logger("tls") == before);  // cached handles stay valid
  before->debug("conn={} handshake done", 42);
  obs::logger("admin")->trace("not shown at debug");
  REQUIRE(obs::set_level("error").has_value());
  before->warn("not shown at error");
  REQUIRE(obs::init_logging("info", "-").has_value());  // closes the file

  const std::string text = read_all(file);
  CHECK(text.find("[debug] [tls] conn=42 handshake done") != std::string::npos);
  CHECK(text.find("not shown") == std::string::npos);
  // 2024-05-01T12:00:00.123Z at the start of the line.
  REQUIRE(text.size() > 24);
  CHECK(text[4] == '-');
  CHECK(text[10] == 'T');
  CHECK(text[19] == '.');
  CHECK(text[23] == 'Z');

  const auto bad = obs::init_logging("info", (dir / "missing" / "x.log").string());
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error() == boost::system::errc::no_such_file_or_directory);
  std::filesystem::remove_all(dir);
}
