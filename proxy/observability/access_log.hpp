#pragma once
// One JSON line per request, written at finish (STYLE.md 5.8, DESIGN.md step 9).
#include "common/expected.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cbagate::observability {

/**
 * What happened to one request. Plain values filled in by the session; the record has no field
 * for Authorization values, tokens, keys or certificates, so they cannot be logged.
 * Strings may hold any bytes: the writer escapes and truncates them (see access_log).
 */
struct access_record {
  std::chrono::system_clock::time_point time{};  ///< start of the request
  std::uint64_t conn_id = 0;
  std::uint64_t req_id = 0;
  std::string client;       ///< "ip:port" of the peer (after PROXY protocol, if any)
  std::string sni;          ///< "" when the client sent none
  std::string tls_version;  ///< "TLSv1.3", "TLSv1.2", or "" before the handshake
  bool tls_resumed = false;
  std::string method;
  std::string path;   ///< the normalized path, without the query
  std::string query;  ///< the raw query without '?', "" when absent
  std::string route;  ///< the matched route prefix, "" when none
  std::optional<std::string> upn;  ///< the mapped UPN; written only when log_upn is on
  std::string cert_subject;  ///< RFC 2253 subject of the presented leaf (accepted or refused)
  std::string cert_serial;  ///< hex, "" without a certificate
  std::string cert_issuer;
  std::string cert_sha256;  ///< full hex SHA-256 of the leaf certificate
  int status = 0;           ///< HTTP status sent to the client
  int substatus = 0;        ///< IIS substatus (403.16 -> 16), 0 = none
  std::string error;        ///< stable error code ("upstream_timeout"), "" = none
  std::uint64_t bytes_in = 0;   ///< request body bytes read from the client
  std::uint64_t bytes_out = 0;  ///< response body bytes sent to the client
  std::string upstream;         ///< backend server URL, "" when not forwarded
  /** The backend connection: "new", "reused" (from the pool), "private" (one that carried
   *  NTLM/Negotiate/Persistent-Auth, private to this client connection: issue 10), "" when
   *  not forwarded. */
  std::string upstream_conn;
  int upstream_status = 0;      ///< 0 = no upstream response
  std::int64_t total_us = 0;
  std::int64_t upstream_connect_us = -1;     ///< -1 = not applicable (pooled, not forwarded)
  std::int64_t upstream_first_byte_us = -1;  ///< -1 = not applicable
  std::int64_t delegation_us = -1;           ///< -1 = not applicable
  std::string user_agent;
  /** Extra fields of later modules ("krb_cache" -> "hit"); stable snake_case unique keys,
   *  written as the object "extra". Never put secrets or unbounded-cardinality data here. */
  std::vector<std::pair<std::string, std::string>> extra;
};

/**
 * The access log: one JSON object per line, fields in the order of access_record:
 *
 *   {"time":"2024-05-01T12:00:00.123Z","conn_id":1,"req_id":3,"client":"192.0.2.1:50000",
 *    "sni":"mail.example.com","tls_version":"TLSv1.3","tls_resumed":false,"method":"POST",
 *    "path":"/Microsoft-Server-ActiveSync","query":"Cmd=Ping&User=redacted&DeviceId=ABC",
 *    "route":"/Microsoft-Server-ActiveSync","upn":"alice@corp.example","cert_subject":"CN=Alice","cert_serial":"01",...,
 *    "status":200,"substatus":0,"error":"","bytes_in":120,"bytes_out":30,
 *    "upstream":"https://ex1:443","upstream_conn":"reused","upstream_status":200,"total_us":1234,
 *    "upstream_connect_us":-1,"upstream_first_byte_us":800,"delegation_us":-1,
 *    "user_agent":"Apple-iPhone/1902.3","extra":{}}
 *
 * Every key is always present except "upn", which is omitted when log_upn is false.
 *
 * Query: logged (ActiveSync admins need Cmd, DeviceId, DeviceType), truncated to 256 bytes.
 * With log_upn false the value of every `User` parameter (case-insensitive) becomes "redacted"
 * and a query that is not name=value pairs (the base64 ActiveSync form, which embeds the user)
 * becomes "redacted" as a whole.
 *
 * Escaping: quotes, backslash, control characters and DEL are escaped and invalid UTF-8 becomes
 * U+FFFD, so a line always parses. Truncation (on a character boundary): path 2048 bytes,
 * cert_subject and cert_issuer 1024, every other string 256.
 *
 * Buffering: write() appends the line to an in-memory buffer (one per group of I/O threads, picked
 * by thread id, so a connection's lines keep their order) and returns; one writer thread writes
 * the buffers to the file with one write(2) each, at the latest flush_interval after a line came
 * or as soon as a buffer passes flush_bytes. I/O threads never wait on the disk (DESIGN.md: "The
 * I/O threads never block") and do not wake the writer per line: a busy proxy writes its log in
 * a few large writes per second. The destructor and reopen() write out every buffered line.
 * When a buffer already holds queue_lines lines (a disk stall), a new line is dropped and
 * counted in dropped(): losing a log line under a disk stall beats stalling every connection.
 */
class access_log {
 public:
  static constexpr std::size_t default_queue_lines = 8192;
  static constexpr std::size_t max_field_bytes = 256;
  static constexpr std::size_t max_path_bytes = 2048;
  static constexpr std::size_t max_issuer_bytes = 1024;
  /** A line waits at most this long in memory before it is written. */
  static constexpr std::chrono::milliseconds flush_interval{100};
  /** A buffer this full is written at once, without waiting for flush_interval. */
  static constexpr std::size_t flush_bytes = 64 * 1024;

  /**
   * Opens the access log.
   * @param path "-" = stdout, "" = off (write() does nothing), otherwise a file opened for
   *             appending, created with mode 0640 (missing directories are not created).
   * @param log_upn whether the "upn" key is written (and the query's User left in clear).
   * @param queue_lines lines one buffer may hold before new ones are dropped (> 0).
   * @return the system error (ENOENT, EACCES, ...) when the file cannot be opened.
   */
  static expected<std::unique_ptr<access_log>> open(std::string_view path, bool log_upn,
                                                    std::size_t queue_lines = default_queue_lines);

  access_log(const access_log&) = delete;
  access_log& operator=(const access_log&) = delete;
  /** Writes every buffered line, then closes the file. */
  ~access_log();

  /** Buffers one line. Thread-safe; never blocks on the disk (see dropped()). */
  void write(const access_record& r);

  /**
   * Reopens the file by name (log rotation: call on SIGHUP after the file was renamed).
   * A no-op for stdout and off. On failure the old file stays in use and the system error is
   * returned. Thread-safe.
   */
  expected<void> reopen();

  /** Lines dropped because their buffer was full, since open(). Thread-safe. */
  std::uint64_t dropped() const noexcept;

  /** False when opened with path "". */
  bool enabled() const noexcept { return impl_ != nullptr; }

  /** The JSON line (without newline) that write() would queue. Pure; for tests and tools. */
  static std::string render_json(const access_record& r, bool log_upn);

 private:
  struct impl;
  explicit access_log(std::unique_ptr<impl> i);

  /** Appends the JSON line (without newline) to `out`. */
  static void render_into(std::string& out, const access_record& r, bool log_upn);

  std::unique_ptr<impl> impl_;  // null when off
};

}  // namespace cbagate::observability
