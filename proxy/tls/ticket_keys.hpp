#pragma once
// Session-ticket keys (RFC 5077 / RFC 8446 4.6.1 tickets are encrypted by the server with a key
// only servers know). A ticket here carries the verified client identity (server_context.hpp),
// so whoever holds a key can mint a session as any user: the key file is a secret like the
// server's private key.
//
// Two modes:
// - a key file (tls.ticket_keys) shared by every instance behind one balancer: one key per
//   line, the first encrypts new tickets, every key decrypts (rotation = prepend a key, later
//   drop the last). Written by `cbagate --new-ticket-keys FILE`.
// - without the file, keys of this process only: random, a new one encrypts every
//   tls.ticket_key_rotation, and each older one still decrypts for tls.session_timeout.
//
// Key file format: text; blank lines and lines starting with '#' are ignored; every other line
// is the base64 of 80 bytes: 16 bytes key name (sent in the ticket, selects the key), 32 bytes
// AES-256-CBC key, 32 bytes HMAC-SHA256 key (the layout nginx and HAProxy use for their
// 80-byte keys). At most max_ticket_keys lines.
#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::tls {

struct ticket_key {
  std::array<std::uint8_t, 16> name{};
  std::array<std::uint8_t, 32> aes{};
  std::array<std::uint8_t, 32> hmac{};

  bool operator==(const ticket_key&) const = default;
};

inline constexpr std::size_t ticket_key_bytes = 80;
inline constexpr std::size_t max_ticket_keys = 16;

/** A fresh key from OpenSSL's CSPRNG. False only when the CSPRNG fails. */
bool random_ticket_key(ticket_key& out) noexcept;

/**
 * Parses a key file's text. On error returns false with `error` naming the line and the cause
 * ("line 3: 48 bytes, a key is 80"). Duplicate key names are refused (a name selects one key).
 */
bool parse_ticket_keys(std::string_view text, std::vector<ticket_key>& out, std::string& error);

/** The file text of `keys`: a comment header, then one base64 line per key. */
std::string format_ticket_keys(const std::vector<ticket_key>& keys);

/**
 * Reads and parses the key file at `path`. Refused (false, `error` names the file and the
 * reason): unreadable, not a regular file, accessible by group or others (the secret-file rule
 * of config/secret_file.hpp; the mode is named), no key, a bad line.
 */
bool load_ticket_key_file(const std::string& path, std::vector<ticket_key>& out, std::string& error);

/**
 * `cbagate --new-ticket-keys FILE`: writes a file with a new key first, followed by the keys of
 * an existing FILE (kept so tickets they encrypted still resume; beyond max_ticket_keys the
 * oldest are dropped). Written to a temporary file with mode 0600 and renamed over FILE, so
 * readers see the old file or the new one, never a partial one. `message` says what was done
 * or why not.
 */
bool write_new_ticket_key_file(const std::string& path, std::string& message);

/**
 * The keys in use, process-wide (owned by the server, outlives every configuration: a reload
 * must not invalidate the tickets devices hold). Thread-safe: the OpenSSL callbacks of every
 * I/O thread read it; a reload replaces it.
 */
class ticket_key_store {
 public:
  using clock = std::chrono::steady_clock;

  /** Key file mode: `keys` (non-empty) replace whatever was used; keys[0] encrypts. */
  void use_file_keys(std::vector<ticket_key> keys);

  /**
   * Process-local mode: random keys, a new one every `rotation`, older ones decrypting for
   * `lifetime` after they stopped encrypting. Keys already local are kept (a reload that keeps
   * the mode keeps the tickets); keys from a file are dropped.
   */
  void use_local_keys(std::chrono::seconds rotation, std::chrono::seconds lifetime, clock::time_point now);

  /** The key that encrypts a new ticket now (rotating first when it is due). False when the
   *  store has no key (never configured) or the CSPRNG failed. */
  bool encryption_key(ticket_key& out, clock::time_point now);

  enum class lookup : std::uint8_t { unknown, current, older };
  /** The key named `name`: `current` (the one that encrypts), `older` (decrypts; the ticket
   *  should be renewed), or `unknown` (expired, rotated out, another cluster's: full handshake). */
  lookup decryption_key(const std::array<std::uint8_t, 16>& name, ticket_key& out, clock::time_point now);

  /** Keys that decrypt now (metrics, tests). */
  std::size_t size(clock::time_point now);
  /** True in key file mode. */
  bool from_file() const;

 private:
  struct entry {
    ticket_key key;
    clock::time_point retire_at = clock::time_point::max();  // stops decrypting (local mode)
  };
  void rotate_if_due(clock::time_point now);  // with mu_ held

  mutable std::mutex mu_;
  std::vector<entry> keys_;  // keys_[0] encrypts
  bool file_ = false;
  std::chrono::seconds rotation_{3600};
  std::chrono::seconds lifetime_{7200};
  clock::time_point rotate_at_ = clock::time_point::max();
};

}  // namespace cbagate::tls
