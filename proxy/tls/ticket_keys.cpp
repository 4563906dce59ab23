#include "tls/ticket_keys.hpp"

#include "config/secret_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <system_error>

#include <openssl/crypto.h>
#include <openssl/rand.h>

namespace cbagate::tls {
namespace {

constexpr std::string_view alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64(const std::uint8_t* data, std::size_t n) {
  std::string out;
  out.reserve((n + 2) / 3 * 4);
  for (std::size_t i = 0; i < n; i += 3) {
    const std::uint32_t b0 = data[i];
    const std::uint32_t b1 = i + 1 < n ? data[i + 1] : 0;
    const std::uint32_t b2 = i + 2 < n ? data[i + 2] : 0;
    const std::uint32_t v = (b0 << 16) | (b1 << 8) | b2;
    out.push_back(alphabet[(v >> 18) & 63]);
    out.push_back(alphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < n ? alphabet[(v >> 6) & 63] : '=');
    out.push_back(i + 2 < n ? alphabet[v & 63] : '=');
  }
  return out;
}

// Strict base64 (padding required, no whitespace inside); false on anything else.
bool unbase64(std::string_view in, std::vector<std::uint8_t>& out) {
  out.clear();
  if (in.size() % 4 != 0) return false;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::uint32_t v = 0;
    int pad = 0;
    for (std::size_t j = 0; j < 4; ++j) {
      const char c = in[i + j];
      if (c == '=') {
        if (i + 4 != in.size() || j < 2) return false;
        ++pad;
        v <<= 6;
        continue;
      }
      if (pad) return false;
      const std::size_t at = alphabet.find(c);
      if (at == std::string_view::npos) return false;
      v = (v << 6) | static_cast<std::uint32_t>(at);
    }
    out.push_back(static_cast<std::uint8_t>(v >> 16));
    if (pad < 2) out.push_back(static_cast<std::uint8_t>((v >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<std::uint8_t>(v & 0xFF));
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string octal_mode(mode_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

}  // namespace

bool random_ticket_key(ticket_key& out) noexcept {
  ticket_key k;
  if (RAND_bytes(k.name.data(), static_cast<int>(k.name.size())) != 1 ||
      RAND_bytes(k.aes.data(), static_cast<int>(k.aes.size())) != 1 ||
      RAND_bytes(k.hmac.data(), static_cast<int>(k.hmac.size())) != 1)
    return false;
  out = k;
  return true;
}

bool parse_ticket_keys(std::string_view text, std::vector<ticket_key>& out, std::string& error) {
  std::vector<ticket_key> keys;
  std::size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const std::size_t nl = text.find('\n');
    const std::string_view line = trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::uint8_t> raw;
    if (!unbase64(line, raw)) {
      error = "line " + std::to_string(line_no) + ": not base64";
      return false;
    }
    if (raw.size() != ticket_key_bytes) {
      error = "line " + std::to_string(line_no) + ": " + std::to_string(raw.size()) +
              " bytes, a key is " + std::to_string(ticket_key_bytes) +
              " (write a new file with cbagate --new-ticket-keys)";
      OPENSSL_cleanse(raw.data(), raw.size());
      return false;
    }
    ticket_key k;
    std::memcpy(k.name.data(), raw.data(), 16);
    std::memcpy(k.aes.data(), raw.data() + 16, 32);
    std::memcpy(k.hmac.data(), raw.data() + 48, 32);
    OPENSSL_cleanse(raw.data(), raw.size());
    for (const ticket_key& other : keys) {
      if (other.name == k.name) {
        error = "line " + std::to_string(line_no) + ": the same key name as an earlier line";
        return false;
      }
    }
    if (keys.size() == max_ticket_keys) {
      error = "more than " + std::to_string(max_ticket_keys) + " keys";
      return false;
    }
    keys.push_back(k);
  }
  if (keys.empty()) {
    error = "no key in the file";
    return false;
  }
  out = std::move(keys);
  return true;
}

std::string format_ticket_keys(const std::vector<ticket_key>& keys) {
  std::string out =
      "# cbagate session-ticket keys (tls.ticket_keys): the first line encrypts, every line\n"
      "# decrypts. SECRET: whoever holds these keys can resume a session as any user. Mode 0600.\n"
      "# Rotate with: cbagate --new-ticket-keys THIS-FILE (prepends a key), then SIGHUP.\n";
  for (const ticket_key& k : keys) {
    std::uint8_t raw[ticket_key_bytes];
    std::memcpy(raw, k.name.data(), 16);
    std::memcpy(raw + 16, k.aes.data(), 32);
    std::memcpy(raw + 48, k.hmac.data(), 32);
    out += base64(raw, sizeof raw);
    out += '\n';
    OPENSSL_cleanse(raw, sizeof raw);
  }
  return out;
}

bool load_ticket_key_file(const std::string& path, std::vector<ticket_key>& out, std::string& error) {
  // The one secret-file rule of the configuration (issue 16): no bit for group or others.
  if (auto problem = config::secret_file_problem(path)) {
    error = "tls.ticket_keys: " + *problem;
    return false;
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = "tls.ticket_keys: cannot open " + path + ": " + std::system_category().message(errno);
    return false;
  }
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    error = "tls.ticket_keys: " + path + " is not a regular file";
    return false;
  }
  // Replaced between the check and the open: judge the file actually read, too.
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    error = "tls.ticket_keys: " + path + " is accessible by group or others (mode " +
            octal_mode(st.st_mode) + "); a secret must be readable by its owner only: chmod 600 " + path;
    return false;
  }
  if (st.st_size > 64 * 1024) {
    error = "tls.ticket_keys: " + path + " is larger than 64 KiB: not a key file";
    return false;
  }
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  std::string why;
  const bool ok = parse_ticket_keys(text, out, why);
  OPENSSL_cleanse(text.data(), text.size());
  if (!ok) error = "tls.ticket_keys: " + path + ": " + why;
  return ok;
}

bool write_new_ticket_key_file(const std::string& path, std::string& message) {
  std::vector<ticket_key> keys;
  struct stat st {};
  const bool exists = ::lstat(path.c_str(), &st) == 0;
  if (exists) {
    std::string error;
    if (!load_ticket_key_file(path, keys, error)) {
      message = error + "; nothing written";
      return false;
    }
  }
  ticket_key fresh;
  if (!random_ticket_key(fresh)) {
    message = "the random number generator failed; nothing written";
    return false;
  }
  keys.insert(keys.begin(), fresh);
  std::size_t dropped = 0;
  if (keys.size() > max_ticket_keys) {
    dropped = keys.size() - max_ticket_keys;
    keys.resize(max_ticket_keys);
  }
  std::string text = format_ticket_keys(keys);
  const std::string tmp = path + ".tmp" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    message = "cannot create " + tmp + ": " + std::system_category().message(errno);
    OPENSSL_cleanse(text.data(), text.size());
    return false;
  }
  ::fchmod(fd, 0600);  // whatever the umask
  std::size_t put = 0;
  bool ok = true;
  while (put < text.size()) {
    const ssize_t n = ::write(fd, text.data() + put, text.size() - put);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ok = false;
      break;
    }
    put += static_cast<std::size_t>(n);
  }
  OPENSSL_cleanse(text.data(), text.size());
  ok = ok && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    message = "cannot write " + path + ": " + std::system_category().message(ok ? errno : saved);
    ::unlink(tmp.c_str());
    return false;
  }
  message = "wrote " + path + " (mode 0600): a new key encrypts, " +
            std::to_string(keys.size() - 1) + " earlier key(s) still decrypt" +
            (dropped ? "; the " + std::to_string(dropped) + " oldest dropped" : std::string()) +
            ". Copy it to every instance, then SIGHUP them (or let the file watch see it).";
  return true;
}

// --- ticket_key_store ----------------------------------------------------------------------------

void ticket_key_store::use_file_keys(std::vector<ticket_key> keys) {
  std::lock_guard lock(mu_);
  keys_.clear();
  for (ticket_key& k : keys) keys_.push_back({k, clock::time_point::max()});
  file_ = true;
  rotate_at_ = clock::time_point::max();
}

void ticket_key_store::use_local_keys(std::chrono::seconds rotation, std::chrono::seconds lifetime,
                                      clock::time_point now) {
  std::lock_guard lock(mu_);
  rotation_ = std::max(rotation, std::chrono::seconds(1));
  lifetime_ = lifetime;
  if (file_) keys_.clear();
  file_ = false;
  if (keys_.empty()) {
    rotate_at_ = now;  // the first key is made now
  } else {
    rotate_at_ = std::min(rotate_at_, now + rotation_);
  }
  rotate_if_due(now);
}

void ticket_key_store::rotate_if_due(clock::time_point now) {
  if (file_) return;
  // Older keys retire `lifetime` after they stopped encrypting: the last ticket they sealed is
  // valid that long.
  std::erase_if(keys_, [now](const entry& e) { return e.retire_at <= now; });
  if (now < rotate_at_ && !keys_.empty()) return;
  ticket_key fresh;
  if (!random_ticket_key(fresh)) return;  // keep the current key; try again next time
  if (!keys_.empty()) keys_.front().retire_at = now + lifetime_;
  keys_.insert(keys_.begin(), entry{fresh, clock::time_point::max()});
  // A short rotation with a long lifetime must not grow without bound: the oldest go first.
  constexpr std::size_t max_local = 64;
  if (keys_.size() > max_local) keys_.resize(max_local);
  rotate_at_ = now + rotation_;
}

bool ticket_key_store::encryption_key(ticket_key& out, clock::time_point now) {
  std::lock_guard lock(mu_);
  rotate_if_due(now);
  if (keys_.empty()) return false;
  out = keys_.front().key;
  return true;
}

ticket_key_store::lookup ticket_key_store::decryption_key(const std::array<std::uint8_t, 16>& name,
                                                          ticket_key& out, clock::time_point now) {
  std::lock_guard lock(mu_);
  rotate_if_due(now);
  for (std::size_t i = 0; i < keys_.size(); ++i) {
    if (CRYPTO_memcmp(keys_[i].key.name.data(), name.data(), name.size()) == 0) {
      out = keys_[i].key;
      return i == 0 ? lookup::current : lookup::older;
    }
  }
  return lookup::unknown;
}

std::size_t ticket_key_store::size(clock::time_point now) {
  std::lock_guard lock(mu_);
  rotate_if_due(now);
  return keys_.size();
}

bool ticket_key_store::from_file() const {
  std::lock_guard lock(mu_);
  return file_;
}

}  // namespace cbagate::tls
