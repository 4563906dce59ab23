#pragma once
// Shared by the config unit tests: a temp directory with the few files a configuration names
// (any content will do: the loader checks existence and readability, not PEM syntax), and
// helpers to find where in a TOML text an error must point.
#include "config/load.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace config_test {

namespace fs = std::filesystem;

/** A fresh directory under $TMPDIR, removed with everything in it at scope exit. */
class temp_dir {
 public:
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "cbagate-config-XXXXXX").string();
    const char* made = ::mkdtemp(pattern.data());
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  const fs::path& path() const noexcept { return path_; }
  std::string str() const { return path_.string(); }

  /** Writes `content` to `relative` (creating directories) and returns the absolute path.
   *  The file is owner-only (0600), as secrets must be (config::secret_file_problem). */
  std::string write(const std::string& relative, const std::string& content = "dummy\n") const {
    const fs::path p = path_ / relative;
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary);
    out << content;
    REQUIRE(out.good());
    out.close();
    fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write);
    return p.string();
  }

 private:
  fs::path path_;
};

/** The three files every configuration needs, under the names of the dev PKI. */
inline void write_server_files(const temp_dir& dir) {
  dir.write("server-chain.pem");
  dir.write("server.key");
  dir.write("client-roots.pem");
}

/** A complete, valid configuration with only the required keys. */
inline const std::string minimal = R"([server]
listen = ["127.0.0.1:0"]

[tls]
certificate = "server-chain.pem"
private_key = "server.key"
client_ca = "client-roots.pem"

[upstream]
servers = ["http://127.0.0.1:8080"]

[[route]]
prefix = "/owa"
)";

/** `minimal` with the line that starts with `old_line` replaced by `new_line` ("" removes it). */
inline std::string replace_line(std::string text, std::string_view old_line,
                                std::string_view new_line) {
  const std::size_t at = text.find(old_line);
  REQUIRE(at != std::string::npos);
  const std::size_t end = text.find('\n', at);
  text.replace(at, end - at + (new_line.empty() ? 1 : 0), new_line);
  return text;
}

/** 1-based line and column of the first occurrence of `needle` in `text`. */
struct where {
  std::size_t line = 0;
  std::size_t column = 0;
};
inline where find_in(std::string_view text, std::string_view needle) {
  const std::size_t at = text.find(needle);
  REQUIRE_MESSAGE(at != std::string_view::npos, "not in the text: " << needle);
  where w{1, 1};
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++w.line;
      w.column = 1;
    } else {
      ++w.column;
    }
  }
  return w;
}

/** Loads `text` as "test.toml" with `dir` as its directory. */
inline cbagate::config::load_result load(const std::string& text, const temp_dir& dir) {
  return cbagate::config::load_string(text, "test.toml", dir.str());
}

/** The only error of `r`, checked to be at `at` with `key`; returns its message. */
inline std::string only_error(const cbagate::config::load_result& r, std::string_view key,
                              where at) {
  std::ostringstream all;
  for (const auto& d : r.errors) all << d.to_string() << '\n';
  INFO("errors:\n" << all.str());
  REQUIRE_FALSE(r.ok());
  REQUIRE(r.value == nullptr);
  REQUIRE(r.errors.size() == 1);
  const auto& d = r.errors.front();
  CHECK(d.file == "test.toml");
  CHECK(d.key == key);
  CHECK(d.line == at.line);
  CHECK(d.column == at.column);
  return d.message;
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace config_test
