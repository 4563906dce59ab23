#include "tls/ticket_keys.hpp"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

using cbagate::tls::format_ticket_keys;
using cbagate::tls::load_ticket_key_file;
using cbagate::tls::parse_ticket_keys;
using cbagate::tls::random_ticket_key;
using cbagate::tls::ticket_key;
using cbagate::tls::ticket_key_store;
using cbagate::tls::write_new_ticket_key_file;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct temp_dir {
  fs::path path;
  temp_dir() {
    std::string pattern = (fs::temp_directory_path() / "cbagate-tk-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

ticket_key key() {
  ticket_key k;
  REQUIRE(random_ticket_key(k));
  return k;
}

}  // namespace

TEST_CASE("ticket_keys: the file text round-trips, comments and blank lines are skipped") {
  const std::vector<ticket_key> keys = {key(), key(), key()};
  std::string text = format_ticket_keys(keys);
  text += "\n# a comment\n\n";
  std::vector<ticket_key> back;
  std::string error;
  REQUIRE(parse_ticket_keys(text, back, error));
  CHECK(back == keys);
}

TEST_CASE("ticket_keys: wrong sizes, bad base64, duplicates and empty files are refused") {
  std::vector<ticket_key> out;
  std::string error;
  const std::string one = format_ticket_keys({key()});
  const std::string line = one.substr(one.rfind('\n', one.size() - 2) + 1);
  CHECK_FALSE(parse_ticket_keys("# nothing\n", out, error));
  CHECK(error == "no key in the file");
  // 48 bytes (nginx's short key) base64-encoded: 64 characters.
  CHECK_FALSE(parse_ticket_keys(std::string(64, 'A') + "\n", out, error));
  CHECK(error.find("line 1: 48 bytes, a key is 80") == 0);
  CHECK_FALSE(parse_ticket_keys("# k\n" + line.substr(0, 20) + "!!!!\n", out, error));
  CHECK(error.find("line 2: not base64") == 0);
  CHECK_FALSE(parse_ticket_keys(line + line, out, error));
  CHECK(error.find("the same key name") != std::string::npos);
}

TEST_CASE("ticket_keys: a file readable by group or others is refused, naming file and mode") {
  temp_dir dir;
  const fs::path file = dir.path / "tickets.keys";
  std::string message;
  REQUIRE(write_new_ticket_key_file(file.string(), message));
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  std::vector<ticket_key> keys;
  std::string error;
  REQUIRE(load_ticket_key_file(file.string(), keys, error));
  CHECK(keys.size() == 1);
  for (const mode_t bad : {0644, 0640, 0604, 0660, 0602}) {
    CAPTURE(bad);
    REQUIRE(::chmod(file.c_str(), bad) == 0);
    CHECK_FALSE(load_ticket_key_file(file.string(), keys, error));
    CHECK(error.find(file.string()) != std::string::npos);
    char mode[32];
    std::snprintf(mode, sizeof mode, "mode %04o", static_cast<unsigned>(bad));
    CHECK(error.find(mode) != std::string::npos);
  }
  REQUIRE(::chmod(file.c_str(), 0400) == 0);
  CHECK(load_ticket_key_file(file.string(), keys, error));
  CHECK_FALSE(load_ticket_key_file((dir.path / "missing").string(), keys, error));
  CHECK(error.find("cannot stat " + (dir.path / "missing").string()) != std::string::npos);
}

TEST_CASE("ticket_keys: --new-ticket-keys prepends a key and keeps the previous ones") {
  temp_dir dir;
  const std::string file = (dir.path / "k").string();
  std::string message;
  REQUIRE(write_new_ticket_key_file(file, message));
  std::vector<ticket_key> first, second;
  std::string error;
  REQUIRE(load_ticket_key_file(file, first, error));
  REQUIRE(write_new_ticket_key_file(file, message));
  CHECK(message.find("1 earlier key(s) still decrypt") != std::string::npos);
  REQUIRE(load_ticket_key_file(file, second, error));
  REQUIRE(second.size() == 2);
  CHECK(second[1] == first[0]);
  CHECK_FALSE(second[0] == first[0]);
  for (int i = 0; i < 20; ++i) REQUIRE(write_new_ticket_key_file(file, message));
  REQUIRE(load_ticket_key_file(file, second, error));
  CHECK(second.size() == cbagate::tls::max_ticket_keys);
  // A file of the wrong mode is not rotated (nor silently fixed).
  REQUIRE(::chmod(file.c_str(), 0644) == 0);
  CHECK_FALSE(write_new_ticket_key_file(file, message));
  CHECK(message.find("mode 0644") != std::string::npos);
  CHECK(slurp(file).find("# cbagate session-ticket keys") == 0);
}

TEST_CASE("ticket_keys: file keys: the first encrypts, all decrypt, unknown names do not") {
  ticket_key_store store;
  const auto now = ticket_key_store::clock::now();
  const ticket_key a = key(), b = key();
  store.use_file_keys({a, b});
  ticket_key got;
  REQUIRE(store.encryption_key(got, now));
  CHECK(got == a);
  CHECK(store.decryption_key(a.name, got, now + 1000h) == ticket_key_store::lookup::current);
  CHECK(store.decryption_key(b.name, got, now) == ticket_key_store::lookup::older);
  CHECK(got == b);
  CHECK(store.decryption_key(key().name, got, now) == ticket_key_store::lookup::unknown);
  // Rotation by the file: b now encrypts, a still decrypts.
  store.use_file_keys({b, a});
  REQUIRE(store.encryption_key(got, now));
  CHECK(got == b);
  CHECK(store.decryption_key(a.name, got, now) == ticket_key_store::lookup::older);
}

TEST_CASE("ticket_keys: local keys rotate, older ones decrypt for the session lifetime") {
  ticket_key_store store;
  auto t = ticket_key_store::clock::time_point{} + 1000h;
  store.use_local_keys(3600s, 7200s, t);
  ticket_key k0, k1, got;
  REQUIRE(store.encryption_key(k0, t));
  REQUIRE(store.encryption_key(got, t + 3599s));
  CHECK(got == k0);
  REQUIRE(store.encryption_key(k1, t + 3600s));  // rotated
  CHECK_FALSE(k1 == k0);
  CHECK(store.decryption_key(k0.name, got, t + 3600s) == ticket_key_store::lookup::older);
  CHECK(store.decryption_key(k0.name, got, t + 3600s + 7199s) == ticket_key_store::lookup::older);
  // k0 stopped encrypting at +3600 s; its last ticket expired 7200 s later. (k1 rotated out of
  // encryption at +7200 s meanwhile and still decrypts.)
  CHECK(store.decryption_key(k0.name, got, t + 3600s + 7200s) == ticket_key_store::lookup::unknown);
  CHECK(store.decryption_key(k1.name, got, t + 3600s + 7200s) == ticket_key_store::lookup::older);
  // A reload that keeps local mode keeps the keys; switching to a file drops them.
  store.use_local_keys(3600s, 7200s, t + 3600s + 7200s);
  CHECK(store.decryption_key(k1.name, got, t + 3600s + 7200s) != ticket_key_store::lookup::unknown);
  store.use_file_keys({key()});
  CHECK(store.decryption_key(k1.name, got, t + 3600s + 7200s) == ticket_key_store::lookup::unknown);
  CHECK(store.from_file());
  store.use_local_keys(60s, 60s, t);
  CHECK_FALSE(store.from_file());
  CHECK(store.size(t) == 1);
}
