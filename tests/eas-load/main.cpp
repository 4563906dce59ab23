// eas-load: N simulated ActiveSync phones, each with its own client certificate and DeviceId,
// against cbagate (or any HTTPS ActiveSync endpoint). See README.md next to this file.
//
// Design for 10,000 devices in one process: one io_context per thread, one coroutine per device
// (plus one for the --mix side traffic), no thread per device. TLS is OpenSSL on the socket's
// file descriptor (SSL_set_fd, non-blocking, readiness through Asio's async_wait) with
// SSL_MODE_RELEASE_BUFFERS, so an idle held Ping keeps no 17 KiB record buffers (Asio's
// ssl::stream would hold four). Certificates are kept as DER and parsed per connection; one
// SSL_CTX per distinct private key, the leaf set per SSL object.
#include "histogram.hpp"
#include "mock_fixtures.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/json.hpp>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "common/openssl_ptr.hpp"
#include "tls/certificate_memo.hpp"
#include "tls/chain_cache.hpp"

namespace cbagate::eas_load {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using boost::system::error_code;
namespace fixtures = cbagate::mock::fixtures;

using ssl_ptr = std::unique_ptr<SSL, ossl::deleter<SSL_free>>;
using session_ptr = std::unique_ptr<SSL_SESSION, ossl::deleter<SSL_SESSION_free>>;

// ---------------------------------------------------------------------------------------------
// Command line

enum class scenario_kind { ping, storm, sync, sendmail, idle };

struct options {
  std::string target;
  std::string host;
  std::uint16_t port = 443;
  std::string pki;
  std::string ca;
  scenario_kind scenario = scenario_kind::ping;
  std::string scenario_name = "ping";
  std::size_t devices = 1;
  std::size_t first_user = 0;
  unsigned threads = 1;
  double heartbeat_s = 900;
  bool mix = false;
  double time_scale = 1;
  double ramp_s = 0;
  double duration_s = 60;
  double timeout_s = 60;
  bool keep_alive = true;
  bool resume = false;
  std::size_t body_bytes = 0;
  std::size_t requests = 0;  // sync, sendmail: requests per device, then it stops (0 = no limit)
  bool json = false;
  bool quiet = false;
};

constexpr std::string_view usage_text =
    R"(usage: eas-load --target https://HOST:PORT --pki DIR [options]

  --target URL        the ActiveSync endpoint's origin (https only)
  --pki DIR           a certs-dev/make-pki directory with --users N (reads bulk/users.tsv)
  --ca FILE           CA bundle that verifies the server (default DIR/ca/root.pem)
  --scenario NAME     ping | storm | sync | sendmail | idle (default ping); idle: one
                      FolderSync, then the connection stays open and quiet to the end
  --devices N         simulated devices (default 1); device i uses bulk user first-user+i
  --first-user K      offset into bulk/users.tsv (default 0), for several processes
  --threads N         I/O threads, one io_context each (default 1)
  --ramp S            spread the devices' first connects over S seconds (default 0)
  --duration S        run S seconds after the ramp (default 60; storm ends when all are done)
  --heartbeat S       Ping HeartbeatInterval (default 900)
  --mix               ping: add Sync/SendMail/ItemOperations at 10/2/1 per device-hour
  --time-scale X      ping --mix: X simulated hours per real hour (default 1)
  --keep-alive on|off reuse connections (default on)
  --resume on|off     TLS session resumption (default off)
  --body-bytes N      SendMail MIME size, streamed (default 0 = the small fixture)
  --requests N        sync, sendmail: each device stops after N requests (default 0 = until
                      --duration ends); the run ends when every device is done
  --timeout S         per-request timeout; Pings get heartbeat + S (default 60)
  --json              final report as JSON on stdout
  --quiet             no progress line
exit: 0 no errors, 1 some request or handshake failed, 2 bad usage or setup
)";

std::optional<double> parse_number(std::string_view s) {
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<std::size_t> parse_count(std::string_view s) {
  std::size_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<bool> parse_bool(std::string_view s) {
  if (s == "on" || s == "yes" || s == "true" || s == "1") return true;
  if (s == "off" || s == "no" || s == "false" || s == "0") return false;
  return std::nullopt;
}

/** Parses argv; an error message on bad usage. */
std::variant<options, std::string> parse_options(int argc, char** argv) {
  options o;
  std::vector<std::string_view> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    auto value = [&]() -> std::optional<std::string_view> {
      if (i + 1 >= args.size()) return std::nullopt;
      return args[++i];
    };
    auto number = [&](double& out, double min) -> bool {
      auto v = value();
      if (!v) return false;
      auto n = parse_number(*v);
      if (!n || *n < min) return false;
      out = *n;
      return true;
    };
    auto count = [&](std::size_t& out, std::size_t min) -> bool {
      auto v = value();
      if (!v) return false;
      auto n = parse_count(*v);
      if (!n || *n < min) return false;
      out = *n;
      return true;
    };
    auto flag = [&](bool& out) {
      // "--resume" alone means on; an on/off word after it is taken as its value.
      if (i + 1 < args.size()) {
        if (auto b = parse_bool(args[i + 1])) {
          out = *b;
          ++i;
          return;
        }
      }
      out = true;
    };
    bool ok = true;
    if (a == "--help" || a == "-h") return std::string{};
    if (a == "--target") {
      auto v = value();
      ok = v.has_value();
      if (ok) o.target = std::string(*v);
    } else if (a == "--pki") {
      auto v = value();
      ok = v.has_value();
      if (ok) o.pki = std::string(*v);
    } else if (a == "--ca") {
      auto v = value();
      ok = v.has_value();
      if (ok) o.ca = std::string(*v);
    } else if (a == "--scenario") {
      auto v = value();
      ok = v.has_value();
      if (ok) {
        o.scenario_name = std::string(*v);
        if (*v == "ping") o.scenario = scenario_kind::ping;
        else if (*v == "storm") o.scenario = scenario_kind::storm;
        else if (*v == "sync") o.scenario = scenario_kind::sync;
        else if (*v == "sendmail") o.scenario = scenario_kind::sendmail;
        else if (*v == "idle") o.scenario = scenario_kind::idle;
        else ok = false;
      }
    } else if (a == "--devices") {
      ok = count(o.devices, 1);
    } else if (a == "--first-user") {
      ok = count(o.first_user, 0);
    } else if (a == "--threads") {
      std::size_t t = 0;
      ok = count(t, 1) && t <= 256;
      o.threads = static_cast<unsigned>(t);
    } else if (a == "--ramp") {
      ok = number(o.ramp_s, 0);
    } else if (a == "--duration") {
      ok = number(o.duration_s, 0);
    } else if (a == "--heartbeat") {
      ok = number(o.heartbeat_s, 1);
    } else if (a == "--time-scale") {
      ok = number(o.time_scale, 0);
    } else if (a == "--timeout") {
      ok = number(o.timeout_s, 0.001);
    } else if (a == "--body-bytes") {
      ok = count(o.body_bytes, 0);
    } else if (a == "--requests") {
      ok = count(o.requests, 0);
    } else if (a == "--mix") {
      flag(o.mix);
    } else if (a == "--keep-alive") {
      flag(o.keep_alive);
    } else if (a == "--resume") {
      flag(o.resume);
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--quiet") {
      o.quiet = true;
    } else {
      return "unknown option " + std::string(a);
    }
    if (!ok) return "bad or missing value for " + std::string(a);
  }
  if (o.target.empty() || o.pki.empty()) return std::string("--target and --pki are required");
  constexpr std::string_view scheme = "https://";
  if (!o.target.starts_with(scheme)) return std::string("--target must be https://HOST[:PORT]");
  std::string_view rest = std::string_view(o.target).substr(scheme.size());
  rest = rest.substr(0, rest.find('/'));
  std::string_view host = rest;
  if (auto colon = rest.rfind(':'); colon != std::string_view::npos && rest.back() != ']') {
    host = rest.substr(0, colon);
    auto p = parse_count(rest.substr(colon + 1));
    if (!p || *p == 0 || *p > 65535) return std::string("bad port in --target");
    o.port = static_cast<std::uint16_t>(*p);
  }
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  if (host.empty()) return std::string("no host in --target");
  o.host = std::string(host);
  if (o.ca.empty()) o.ca = o.pki + "/ca/root.pem";
  return o;
}

// ---------------------------------------------------------------------------------------------
// Devices' identities and TLS contexts

struct bulk_user {
  std::string upn;
  // Parsed once (about 4 KiB each, 40 MB for 10,000 devices): parsing it for every connection
  // cost the load core 1.2 M instructions per handshake, as much as an ECDSA verification.
  ossl::x509_ptr cert;
  std::size_t ctx = 0;
};

// The server's chain, verified in full (X509_verify_cert, with the host or IP check) the first
// time each distinct chain is seen; a handshake presenting byte-identical certificates is
// accepted without verifying them again. Every device talks to the same server: re-verifying
// its chain in each handshake only made the load core, not the proxy, the limit of a
// handshake storm (issue 14). The server's CertificateVerify is still checked by OpenSSL in
// every handshake.
struct server_chain_pin {
  std::mutex mu;
  std::set<std::array<unsigned char, 32>> verified;  // SHA-256 over the chain's DER
  EVP_MD* sha256 = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  ~server_chain_pin() { EVP_MD_free(sha256); }
};

struct tls_setup {
  std::vector<bulk_user> users;  // one per device, in device order
  std::vector<ossl::ssl_ctx_ptr> contexts;
  // The server's certificates, decoded once per distinct DER (certificate_memo: OpenSSL 3.0
  // decodes them in every handshake at 1.2 M instructions each).
  std::unique_ptr<tls::certificate_memo> server_certs = std::make_unique<tls::certificate_memo>(64);
  std::unique_ptr<server_chain_pin> pin = std::make_unique<server_chain_pin>();
};

// SSL_CTX_set_cert_verify_callback: see server_chain_pin.
int verify_server_chain(X509_STORE_CTX* xctx, void* arg) {
  auto* pin = static_cast<server_chain_pin*>(arg);
  std::array<unsigned char, 32> key{};
  bool keyed = false;
  if (X509* leaf = X509_STORE_CTX_get0_cert(xctx); leaf != nullptr && pin->sha256 != nullptr) {
    std::unique_ptr<EVP_MD_CTX, ossl::deleter<EVP_MD_CTX_free>> md(EVP_MD_CTX_new());
    keyed = md && EVP_DigestInit_ex(md.get(), pin->sha256, nullptr) == 1 && tls::digest_cert(md.get(), leaf);
    STACK_OF(X509)* sent = X509_STORE_CTX_get0_untrusted(xctx);
    for (int i = 0; keyed && sent != nullptr && i < sk_X509_num(sent); ++i)
      keyed = tls::digest_cert(md.get(), sk_X509_value(sent, i));
    unsigned int len = 0;
    keyed = keyed && EVP_DigestFinal_ex(md.get(), key.data(), &len) == 1 && len == key.size();
  }
  if (keyed) {
    std::lock_guard lock(pin->mu);
    if (pin->verified.contains(key)) return 1;
  }
  const int ok = X509_verify_cert(xctx);
  if (ok == 1 && keyed) {
    std::lock_guard lock(pin->mu);
    if (pin->verified.size() < 64) pin->verified.insert(key);
  }
  return ok;
}

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown";
  std::array<char, 256> buf{};
  ERR_error_string_n(e, buf.data(), buf.size());
  return buf.data();
}

ossl::x509_ptr read_cert(const std::string& path) {
  ossl::bio_ptr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return nullptr;
  return ossl::x509_ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

std::variant<tls_setup, std::string> load_tls(const options& o) {
  tls_setup out;
  std::ifstream tsv(o.pki + "/bulk/users.tsv");
  if (!tsv) return "cannot read " + o.pki + "/bulk/users.tsv (make-pki --users N)";
  auto issuing = read_cert(o.pki + "/ca/issuing.pem");
  if (!issuing) return "cannot read " + o.pki + "/ca/issuing.pem";
  std::map<std::string, std::size_t> ctx_of_key;
  std::string line;
  std::size_t row = 0;
  while (out.users.size() < o.devices && std::getline(tsv, line)) {
    if (line.empty()) continue;
    if (row++ < o.first_user) continue;
    std::array<std::string, 4> col;
    std::istringstream ls(line);
    for (auto& c : col) std::getline(ls, c, '\t');
    if (col[3].empty()) return "bad line in users.tsv: " + line;
    auto cert = read_cert(o.pki + "/" + col[2]);
    if (!cert) return "cannot read " + col[2];
    bulk_user u;
    u.upn = col[1];
    auto [it, fresh] = ctx_of_key.try_emplace(col[3], out.contexts.size());
    if (fresh) {
      ossl::bio_ptr kb(BIO_new_file((o.pki + "/" + col[3]).c_str(), "r"));
      ossl::evp_pkey_ptr key(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr)
                                : nullptr);
      if (!key) return "cannot read key " + col[3];
      ossl::ssl_ctx_ptr ctx(SSL_CTX_new(TLS_client_method()));
      if (!ctx) return "SSL_CTX_new: " + openssl_error();
      SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
      SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                                      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
      SSL_CTX_set_cert_verify_callback(ctx.get(), &verify_server_chain, out.pin.get());
      if (SSL_CTX_load_verify_locations(ctx.get(), o.ca.c_str(), nullptr) != 1)
        return "cannot load --ca " + o.ca + ": " + openssl_error();
      // The context's certificate is a placeholder with the right key type: each SSL object
      // gets its device's leaf; the chain (the issuing CA) stays with the key slot.
      if (SSL_CTX_use_certificate(ctx.get(), cert.get()) != 1 ||
          SSL_CTX_use_PrivateKey(ctx.get(), key.get()) != 1 ||
          SSL_CTX_check_private_key(ctx.get()) != 1 ||
          SSL_CTX_add1_chain_cert(ctx.get(), issuing.get()) != 1)
        return "client certificate/key setup: " + openssl_error();
      out.contexts.push_back(std::move(ctx));
    }
    u.ctx = it->second;
    u.cert = std::move(cert);
    out.users.push_back(std::move(u));
  }
  if (out.users.size() < o.devices)
    return "the PKI has " + std::to_string(out.users.size()) + " bulk users after --first-user, " +
           std::to_string(o.devices) + " devices need one each";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Requests

enum class command : std::size_t { foldersync, ping, sync, sendmail, itemoperations, count };
constexpr std::size_t command_count = static_cast<std::size_t>(command::count);
constexpr std::array<std::string_view, command_count> command_names{
    "FolderSync", "Ping", "Sync", "SendMail", "ItemOperations"};

std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/** 32 upper-case hex digits, stable for a device index. */
std::string device_id(std::size_t index) {
  std::uint64_t s = 0xEA510ADull + index;
  std::string out;
  constexpr std::string_view hex = "0123456789ABCDEF";
  for (int w = 0; w < 2; ++w) {
    std::uint64_t v = splitmix64(s);
    for (int i = 0; i < 16; ++i) out.push_back(hex[(v >> (60 - 4 * i)) & 0xF]);
  }
  return out;
}

struct device_kind {
  std::string_view type;
  std::string_view agent;
};

/** The README's mix: 50 % iPhone, 40 % Android, 10 % Outlook. */
device_kind kind_of(std::size_t index) {
  const std::size_t r = index % 10;
  if (r < 5) return {"iPhone", "Apple-iPhone13C2/1904.66"};
  if (r < 9) return {"Android", "Android/13-EAS-2.0"};
  return {"WindowsOutlook15", "Outlook-iOS-Android/1.0"};
}

/** The fixed bodies, built once from the mock's fixtures. */
struct bodies {
  std::string ping;              // ping_req with HeartbeatInterval = --heartbeat
  std::string sendmail_prefix;   // up to and including the MIME OPAQUE token
  std::string_view sendmail_suffix = "\x01\x01";
};

std::string mb_u_int32(std::uint64_t v) {
  std::string out(1, static_cast<char>(v & 0x7F));
  while (v >>= 7) out.insert(out.begin(), static_cast<char>(0x80 | (v & 0x7F)));
  return out;
}

bodies make_bodies(const options& o) {
  bodies b;
  std::string ping(fixtures::ping_req);
  const std::string from = std::string("\x03") + "480" + '\0';
  auto pos = ping.find(from);
  auto hb = std::to_string(static_cast<long long>(std::llround(o.heartbeat_s)));
  if (pos != std::string::npos) ping.replace(pos, from.size(), "\x03" + hb + std::string(1, '\0'));
  b.ping = std::move(ping);
  std::string_view sm = fixtures::sendmail;
  auto mime = sm.find("\x50\xC3");
  b.sendmail_prefix = std::string(sm.substr(0, mime + 2));
  return b;
}

/** Byte k of a generated MIME message of `size` bytes: headers, then 78-byte text lines. */
constexpr std::string_view mime_header =
    "From: load@lab.test\r\nTo: peer@lab.test\r\nSubject: eas-load\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain\r\n\r\n";

char mime_byte(std::size_t k) {
  if (k < mime_header.size()) return mime_header[k];
  const std::size_t c = (k - mime_header.size()) % 78;
  if (c == 76) return '\r';
  if (c == 77) return '\n';
  return static_cast<char>('a' + (k % 26));
}

/** Status of a Ping response (its first Status element), or -1. */
int ping_status(std::string_view body) {
  // 03 01 6A 00 | 00 0D (Ping page) | 45 <Ping> | 47 <Status> | 03 digits 00
  auto p = body.find("\x45\x47\x03");
  if (p == std::string_view::npos) return -1;
  int v = 0;
  for (std::size_t i = p + 3; i < body.size() && body[i] != '\0'; ++i) {
    if (body[i] < '0' || body[i] > '9') return -1;
    v = v * 10 + (body[i] - '0');
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Statistics

struct live_counters {
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> handshakes{0};
  std::atomic<std::int64_t> connected{0};          // open TLS connections (--mix: two a device)
  std::atomic<std::int64_t> devices_connected{0};  // devices whose main connection is open
  std::atomic<std::uint64_t> finished{0};
};

struct command_stats {
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  histogram latency_us;
};

struct shard_stats {
  std::array<command_stats, command_count> commands;
  std::map<std::string, std::uint64_t> errors;
  histogram handshake_us;
  std::uint64_t handshakes_full = 0;
  std::uint64_t handshakes_resumed = 0;
  std::uint64_t handshakes_failed = 0;
  std::uint64_t abandoned = 0;
  std::optional<clock_type::time_point> first_connect;
  std::optional<clock_type::time_point> last_handshake;
  // storm: connections whose FolderSync was answered, and when the last one was. With TLS 1.3
  // the client's handshake is done once it has sent its certificate; the server verifies it
  // after that (often after answering other ClientHellos), and only a response proves it did.
  std::uint64_t answered = 0;
  std::optional<clock_type::time_point> last_answered;
  std::uint64_t ping_status_2 = 0;
  std::uint64_t devices_with_foldersync = 0;
  std::uint64_t devices_with_ping = 0;
  std::uint64_t devices_with_error = 0;
};

// ---------------------------------------------------------------------------------------------
// Devices and shards

struct conn {
  std::optional<tcp::socket> sock;
  ssl_ptr ssl;
  bool healthy = false;   // may send close_notify and keep the session
  bool session_saved = false;  // this connection's session is the device's (resume)
  bool used = false;      // has carried a request (a failure then may be a stale keep-alive)
  bool timed_out = false;
  clock_type::time_point deadline = clock_type::time_point::max();
};

struct device {
  explicit device(asio::io_context& io, std::size_t i) : index(i), timer(io), mix_timer(io) {}
  std::size_t index;
  conn main;
  conn side;
  asio::steady_timer timer;
  asio::steady_timer mix_timer;
  session_ptr session;
  bool did_foldersync = false;
  bool did_ping = false;
  bool had_error = false;
};

struct run_context {
  const options& opt;
  const tls_setup& tls;
  const bodies& body;
  tcp::endpoint endpoint;
  bool host_is_ip = false;
  live_counters live;
};

struct shard {
  explicit shard(run_context& c) : ctx(c), supervisor(io) {}
  asio::io_context io{1};
  run_context& ctx;
  std::deque<device> devices;  // stable addresses
  shard_stats stats;
  std::array<char, 16384> scratch{};  // read buffer, used only between suspension points
  asio::steady_timer supervisor;
  bool stopping = false;
  clock_type::time_point ramp_start{};
};

constexpr auto use_ec = [](error_code& ec) { return asio::redirect_error(asio::use_awaitable, ec); };

void count_error(shard& s, device& d, std::optional<command> cmd, std::string kind) {
  ++s.stats.errors[std::move(kind)];
  if (cmd) ++s.stats.commands[static_cast<std::size_t>(*cmd)].failed;
  d.had_error = true;
  s.ctx.live.errors.fetch_add(1, std::memory_order_relaxed);
}

void close_conn(shard& s, device& d, conn& c) {
  if (c.ssl) {
    if (c.healthy) {
      if (s.ctx.opt.resume) {
        session_ptr sess(SSL_get1_session(c.ssl.get()));
        if (sess && SSL_SESSION_is_resumable(sess.get())) d.session = std::move(sess);
      }
      SSL_shutdown(c.ssl.get());  // one non-blocking close_notify, no wait for the peer's
    }
    c.ssl.reset();
    s.ctx.live.connected.fetch_sub(1, std::memory_order_relaxed);
    if (&c == &d.main) s.ctx.live.devices_connected.fetch_sub(1, std::memory_order_relaxed);
  }
  if (c.sock) {
    error_code ec;
    c.sock->close(ec);
    c.sock.reset();
  }
  ERR_clear_error();
  c.healthy = false;
  c.used = false;
  c.timed_out = false;
  c.deadline = clock_type::time_point::max();
}

/** Sleeps on a device timer; false when the run is stopping. */
asio::awaitable<bool> sleep_for(shard& s, asio::steady_timer& t, clock_type::duration d) {
  if (s.stopping) co_return false;
  t.expires_after(d);
  error_code ec;
  co_await t.async_wait(use_ec(ec));
  co_return !s.stopping;
}

enum class io_status { ok, eof, failed, timeout, stopped };

struct io_result {
  io_status status = io_status::ok;
  std::string detail;
};

asio::awaitable<io_result> wait_io(shard& s, conn& c, tcp::socket::wait_type w) {
  if (s.stopping) co_return io_result{io_status::stopped, {}};
  if (c.timed_out) co_return io_result{io_status::timeout, {}};
  error_code ec;
  co_await c.sock->async_wait(w, use_ec(ec));
  if (s.stopping) co_return io_result{io_status::stopped, {}};
  if (c.timed_out) co_return io_result{io_status::timeout, {}};
  if (ec) co_return io_result{io_status::failed, ec.message()};
  co_return io_result{};
}

/** What an SSL call's failure means: wait for readiness, or a final result. */
asio::awaitable<std::optional<io_result>> after_ssl_failure(shard& s, conn& c, int rc) {
  const int e = SSL_get_error(c.ssl.get(), rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    const auto w = e == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write;
    io_result r = co_await wait_io(s, c, w);
    if (r.status == io_status::ok) co_return std::nullopt;
    co_return r;
  }
  c.healthy = false;
  if (e == SSL_ERROR_ZERO_RETURN) co_return io_result{io_status::eof, "close_notify"};
  if (e == SSL_ERROR_SYSCALL) {
    const int err = errno;
    ERR_clear_error();
    if (err == 0) co_return io_result{io_status::eof, "eof"};
    co_return io_result{io_status::failed, std::strerror(err)};
  }
  co_return io_result{io_status::failed, openssl_error()};
}

asio::awaitable<io_result> tls_write(shard& s, conn& c, const char* p, std::size_t n) {
  while (n > 0) {
    ERR_clear_error();
    std::size_t written = 0;
    const int rc = SSL_write_ex(c.ssl.get(), p, n, &written);
    if (rc == 1) {
      p += written;
      n -= written;
      continue;
    }
    std::optional<io_result> r = co_await after_ssl_failure(s, c, rc);
    if (r) co_return *r;
  }
  co_return io_result{};
}

/** Reads some bytes into s.scratch; the count in `got` (0 never on ok). */
asio::awaitable<io_result> tls_read(shard& s, conn& c, std::size_t& got) {
  for (;;) {
    ERR_clear_error();
    const int rc = SSL_read_ex(c.ssl.get(), s.scratch.data(), s.scratch.size(), &got);
    if (rc == 1) co_return io_result{};
    std::optional<io_result> r = co_await after_ssl_failure(s, c, rc);
    if (r) co_return *r;
  }
}

std::string error_kind(std::string_view stage, const io_result& r) {
  switch (r.status) {
    case io_status::timeout: return std::string(stage) + ": timeout";
    case io_status::eof: return std::string(stage) + ": connection closed";
    default: return std::string(stage) + ": " + r.detail;
  }
}

void record_since(histogram& h, clock_type::time_point t0) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count();
  h.record(static_cast<std::uint64_t>(std::max<std::int64_t>(us, 0)));
}

/** TCP connect + TLS handshake with the device's certificate. Counts and records failures. */
asio::awaitable<bool> connect(shard& s, device& d, conn& c) {
  close_conn(s, d, c);
  const auto& o = s.ctx.opt;
  const auto t0 = clock_type::now();
  if (!s.stats.first_connect) s.stats.first_connect = t0;
  c.deadline = t0 + std::chrono::duration_cast<clock_type::duration>(
                        std::chrono::duration<double>(o.timeout_s));
  c.sock.emplace(s.io);
  error_code ec;
  co_await c.sock->async_connect(s.ctx.endpoint, use_ec(ec));
  if (s.stopping) {
    close_conn(s, d, c);
    co_return false;
  }
  if (ec || c.timed_out) {
    ++s.stats.handshakes_failed;
    count_error(s, d, std::nullopt, c.timed_out ? "connect: timeout" : "connect: " + ec.message());
    close_conn(s, d, c);
    co_return false;
  }
  c.sock->set_option(tcp::no_delay(true), ec);
  c.sock->native_non_blocking(true, ec);

  const auto& user = s.ctx.tls.users[d.index];
  c.ssl.reset(SSL_new(s.ctx.tls.contexts[user.ctx].get()));
  s.ctx.live.connected.fetch_add(1, std::memory_order_relaxed);
  if (&c == &d.main) s.ctx.live.devices_connected.fetch_add(1, std::memory_order_relaxed);
  SSL* ssl = c.ssl.get();
  bool setup = SSL_use_certificate(ssl, user.cert.get()) == 1 &&
               SSL_set_fd(ssl, static_cast<int>(c.sock->native_handle())) == 1;
  if (setup) {
    if (s.ctx.host_is_ip) {
      setup = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), o.host.c_str()) == 1;
    } else {
      setup = SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
                       const_cast<char*>(o.host.c_str())) == 1 &&
              SSL_set1_host(ssl, o.host.c_str()) == 1;
    }
  }
  if (setup && o.resume && d.session) {
    // A copy: a handshake that fails (the server died meanwhile) marks the session it tried
    // unresumable, and the device's next try must still offer it.
    const session_ptr attempt(SSL_SESSION_dup(d.session.get()));
    setup = attempt && SSL_set_session(ssl, attempt.get()) == 1;
  }
  if (!setup) {
    ++s.stats.handshakes_failed;
    count_error(s, d, std::nullopt, "tls setup: " + openssl_error());
    close_conn(s, d, c);
    co_return false;
  }
  SSL_set_connect_state(ssl);
  for (;;) {
    ERR_clear_error();
    int rc = 0;
    {
      // Not across a co_await: the scope is the thread's.
      tls::certificate_memo::scope memo(s.ctx.tls.server_certs.get());
      rc = SSL_connect(ssl);
    }
    if (rc == 1) break;
    auto r = co_await after_ssl_failure(s, c, rc);
    if (!r) continue;
    if (r->status == io_status::stopped) {
      close_conn(s, d, c);
      co_return false;
    }
    ++s.stats.handshakes_failed;
    std::string kind = error_kind("tls handshake", *r);
    if (SSL_get_verify_result(ssl) != X509_V_OK)
      kind = std::string("tls handshake: server certificate: ") +
             X509_verify_cert_error_string(SSL_get_verify_result(ssl));
    count_error(s, d, std::nullopt, std::move(kind));
    close_conn(s, d, c);
    co_return false;
  }
  c.healthy = true;
  c.session_saved = false;
  c.deadline = clock_type::time_point::max();
  record_since(s.stats.handshake_us, t0);
  if (SSL_session_reused(ssl)) ++s.stats.handshakes_resumed;
  else ++s.stats.handshakes_full;
  s.stats.last_handshake = clock_type::now();
  s.ctx.live.handshakes.fetch_add(1, std::memory_order_relaxed);
  co_return true;
}

std::string request_head(const run_context& ctx, const device& d, command cmd,
                         std::size_t content_length) {
  const auto& o = ctx.opt;
  const auto k = kind_of(d.index);
  std::string h;
  h.reserve(384);
  h += "POST /Microsoft-Server-ActiveSync?Cmd=";
  h += command_names[static_cast<std::size_t>(cmd)];
  h += "&User=";
  h += ctx.tls.users[d.index].upn;
  h += "&DeviceId=";
  h += device_id(o.first_user + d.index);
  h += "&DeviceType=";
  h += k.type;
  if (cmd == command::sendmail) h += "&SaveInSent=T";
  h += " HTTP/1.1\r\nHost: ";
  h += o.host;
  h += ':';
  h += std::to_string(o.port);
  h += "\r\nUser-Agent: ";
  h += k.agent;
  h += "\r\nMS-ASProtocolVersion: 14.1\r\nX-MS-PolicyKey: 0\r\n"
       "Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: ";
  h += std::to_string(content_length);
  h += "\r\n";
  if (!o.keep_alive) h += "Connection: close\r\n";
  h += "\r\n";
  return h;
}

/** Sends the request's body: a fixed string, or the streamed generated SendMail. */
asio::awaitable<io_result> send_body(shard& s, conn& c, command cmd, std::string_view fixed) {
  const auto& o = s.ctx.opt;
  if (cmd != command::sendmail || o.body_bytes == 0) {
    co_return co_await tls_write(s, c, fixed.data(), fixed.size());
  }
  // Streamed: 16 KiB at a time, generated, never held whole.
  std::string chunk;
  chunk.resize(16384);
  std::size_t k = 0;
  while (k < o.body_bytes) {
    const std::size_t n = std::min(chunk.size(), o.body_bytes - k);
    for (std::size_t i = 0; i < n; ++i) chunk[i] = mime_byte(k + i);
    auto r = co_await tls_write(s, c, chunk.data(), n);
    if (r.status != io_status::ok) co_return r;
    k += n;
  }
  co_return co_await tls_write(s, c, s.ctx.body.sendmail_suffix.data(),
                               s.ctx.body.sendmail_suffix.size());
}

/**
 * One ActiveSync request on connection `c` (connecting when needed), its response read whole.
 * Records latency, counts and errors. A failure on a reused connection before any response
 * byte is retried once on a new connection (a keep-alive the server had closed). Returns the
 * response body on HTTP 200, nothing otherwise.
 */
asio::awaitable<std::optional<std::string>> exchange(shard& s, device& d, conn& c, command cmd) {
  const auto& o = s.ctx.opt;
  const auto ci = static_cast<std::size_t>(cmd);
  std::string_view fixed;
  std::string head_body;  // sendmail with --body-bytes: the WBXML prefix goes with the head
  std::size_t content_length = 0;
  switch (cmd) {
    case command::foldersync: fixed = fixtures::foldersync_req; break;
    case command::ping: fixed = s.ctx.body.ping; break;
    case command::sync: fixed = fixtures::sync_req_getchanges; break;
    case command::itemoperations: fixed = fixtures::itemops_fetch_att; break;
    case command::sendmail:
      if (o.body_bytes == 0) {
        fixed = fixtures::sendmail;
      } else {
        head_body = s.ctx.body.sendmail_prefix + mb_u_int32(o.body_bytes);
        content_length = head_body.size() + o.body_bytes + s.ctx.body.sendmail_suffix.size();
      }
      break;
    case command::count: break;
  }
  if (content_length == 0) content_length = fixed.size();
  double timeout = o.timeout_s;
  if (cmd == command::ping) timeout += o.heartbeat_s;

  for (int attempt = 0; attempt < 2; ++attempt) {
    if (s.stopping) co_return std::nullopt;
    bool connected = c.ssl != nullptr;
    if (!connected) connected = co_await connect(s, d, c);
    if (!connected) {
      if (!s.stopping) ++s.stats.commands[ci].failed;
      co_return std::nullopt;
    }
    const bool reused = c.used;
    c.used = true;
    const auto t0 = clock_type::now();
    c.deadline = t0 + std::chrono::duration_cast<clock_type::duration>(
                          std::chrono::duration<double>(timeout));
    std::string head = request_head(s.ctx, d, cmd, content_length);
    if (!head_body.empty()) head += head_body;
    else if (fixed.size() <= 1024) head += fixed;  // one write for the small bodies
    auto r = co_await tls_write(s, c, head.data(), head.size());
    if (r.status == io_status::ok && head_body.empty() && fixed.size() > 1024)
      r = co_await tls_write(s, c, fixed.data(), fixed.size());
    else if (r.status == io_status::ok && !head_body.empty())
      r = co_await send_body(s, c, cmd, fixed);
    std::string_view stage = "write";
    bool got_bytes = false;
    std::optional<http::response_parser<http::string_body>> parser;
    if (r.status == io_status::ok) {
      stage = "read";
      parser.emplace();
      parser->eager(true);
      parser->body_limit(64u << 20);
      std::string carry;
      for (;;) {
        std::size_t got = 0;
        r = co_await tls_read(s, c, got);
        if (r.status == io_status::eof && got_bytes) {
          error_code ec;
          parser->put_eof(ec);
          r = ec ? io_result{io_status::failed, "truncated response"} : io_result{};
          break;
        }
        if (r.status != io_status::ok) break;
        got_bytes = true;
        carry.append(s.scratch.data(), got);
        error_code ec;
        while (!carry.empty() && !parser->is_done()) {
          const std::size_t used = parser->put(asio::buffer(carry), ec);
          carry.erase(0, used);
          if (ec == http::error::need_more) {
            ec = {};
            if (used == 0) break;
            continue;
          }
          if (ec) break;
        }
        if (ec) {
          r = io_result{io_status::failed, "bad response: " + ec.message()};
          break;
        }
        if (parser->is_done()) break;
      }
    }
    c.deadline = clock_type::time_point::max();
    if (r.status == io_status::stopped) {
      ++s.stats.abandoned;
      close_conn(s, d, c);
      co_return std::nullopt;
    }
    if (r.status != io_status::ok) {
      c.healthy = false;
      close_conn(s, d, c);
      if (reused && !got_bytes && r.status != io_status::timeout && attempt == 0) continue;
      count_error(s, d, cmd, error_kind(stage, r));
      co_return std::nullopt;
    }
    // Like a phone, keep the session as soon as its ticket has come (TLS 1.3 sends it after
    // the handshake), not only when the connection ends well: a copy, because a fatal error
    // later on this connection (the server killed) marks the connection's own session
    // unresumable.
    if (s.ctx.opt.resume && !c.session_saved) {
      SSL_SESSION* cur = SSL_get0_session(c.ssl.get());
      if (cur != nullptr && SSL_SESSION_is_resumable(cur)) {
        d.session.reset(SSL_SESSION_dup(cur));
        c.session_saved = true;
      }
    }
    auto& stats = s.stats.commands[ci];
    record_since(stats.latency_us, t0);
    s.ctx.live.requests.fetch_add(1, std::memory_order_relaxed);
    const unsigned status = parser->get().result_int();
    const bool keep = o.keep_alive && parser->get().keep_alive();
    std::string body = std::move(parser->get().body());
    parser.reset();
    if (!keep) close_conn(s, d, c);
    if (status != 200) {
      count_error(s, d, cmd, "http " + std::to_string(status));
      co_return std::nullopt;
    }
    ++stats.ok;
    co_return body;
  }
  co_return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Scenarios

clock_type::duration seconds_d(double s) {
  return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(s));
}

/** Waits for this device's turn in the ramp. */
asio::awaitable<bool> ramp(shard& s, device& d) {
  const auto& o = s.ctx.opt;
  if (o.ramp_s <= 0 || o.devices <= 1) co_return !s.stopping;
  const double at = o.ramp_s * static_cast<double>(d.index) / static_cast<double>(o.devices);
  const auto when = s.ramp_start + seconds_d(at);
  co_return co_await sleep_for(s, d.timer, when - clock_type::now());
}

/** --mix: Sync, SendMail, ItemOperations at 10/2/1 per device-hour x --time-scale, Poisson. */
asio::awaitable<void> mix_loop(shard& s, device& d) {
  const auto& o = s.ctx.opt;
  const double per_s = 13.0 / 3600.0 * o.time_scale;
  std::uint64_t rng = 0x5EED0000ull + d.index;
  while (!s.stopping && per_s > 0) {
    const double u = (static_cast<double>(splitmix64(rng) >> 11) + 0.5) / 9007199254740992.0;
    const bool awake = co_await sleep_for(s, d.mix_timer, seconds_d(-std::log(u) / per_s));
    if (!awake) break;
    const auto pick = splitmix64(rng) % 13;
    const command cmd = pick < 10 ? command::sync
                        : pick < 12 ? command::sendmail
                                    : command::itemoperations;
    co_await exchange(s, d, d.side, cmd);
  }
  close_conn(s, d, d.side);
}

asio::awaitable<void> ping_device(shard& s, device& d) {
  const auto& o = s.ctx.opt;
  const auto backoff = std::chrono::seconds(1);
  // Results of co_await go to named variables first: GCC 12 mishandles temporaries of a
  // co_await inside if/while conditions.
  const bool started = co_await ramp(s, d);
  if (!started) co_return;
  while (!d.did_foldersync) {
    std::optional<std::string> r = co_await exchange(s, d, d.main, command::foldersync);
    if (r) {
      d.did_foldersync = true;
      continue;
    }
    const bool awake = co_await sleep_for(s, d.timer, backoff);
    if (!awake) co_return;
  }
  if (o.mix) asio::co_spawn(s.io, mix_loop(s, d), asio::detached);
  while (!s.stopping) {
    auto body = co_await exchange(s, d, d.main, command::ping);
    if (!body) {
      const bool awake = co_await sleep_for(s, d.timer, backoff);
      if (!awake) break;
      continue;
    }
    d.did_ping = true;
    const int st = ping_status(*body);
    if (st == 2) {
      ++s.stats.ping_status_2;
      co_await exchange(s, d, d.main, command::sync);
    } else if (st != 1) {
      count_error(s, d, std::nullopt, "ping status " + std::to_string(st));
      const bool awake = co_await sleep_for(s, d.timer, backoff);
      if (!awake) break;
    }
  }
}

asio::awaitable<void> storm_device(shard& s, device& d) {
  const bool started = co_await ramp(s, d);
  if (!started) co_return;
  const int rounds = s.ctx.opt.resume ? 2 : 1;  // with --resume: a full, then a resumed one
  for (int i = 0; i < rounds && !s.stopping; ++i) {
    const bool connected = co_await connect(s, d, d.main);
    if (!connected) co_return;
    std::optional<std::string> r = co_await exchange(s, d, d.main, command::foldersync);
    if (r) {
      d.did_foldersync = true;
      ++s.stats.answered;
      s.stats.last_answered = clock_type::now();
    }
    close_conn(s, d, d.main);
  }
}

/** A device that syncs its folders once and then keeps its connection open without a request
 * (a kept-alive connection between requests), until the run ends. */
asio::awaitable<void> idle_device(shard& s, device& d) {
  const bool started = co_await ramp(s, d);
  if (!started) co_return;
  std::optional<std::string> r = co_await exchange(s, d, d.main, command::foldersync);
  if (!r) co_return;
  d.did_foldersync = true;
  while (co_await sleep_for(s, d.timer, std::chrono::hours(24))) {
  }
}

asio::awaitable<void> loop_device(shard& s, device& d, command cmd) {
  const bool started = co_await ramp(s, d);
  if (!started) co_return;
  const std::size_t limit = s.ctx.opt.requests;
  for (std::size_t n = 0; !s.stopping && (limit == 0 || n < limit); ++n) {
    std::optional<std::string> r = co_await exchange(s, d, d.main, cmd);
    if (r) continue;
    const bool awake = co_await sleep_for(s, d.timer, std::chrono::milliseconds(200));
    if (!awake) break;
  }
}

asio::awaitable<void> run_device(shard& s, device& d) {
  // if/else, not a switch: GCC 12 miscompiles some co_await inside switch cases.
  const scenario_kind k = s.ctx.opt.scenario;
  if (k == scenario_kind::ping) co_await ping_device(s, d);
  else if (k == scenario_kind::storm) co_await storm_device(s, d);
  else if (k == scenario_kind::idle) co_await idle_device(s, d);
  else if (k == scenario_kind::sync) co_await loop_device(s, d, command::sync);
  else co_await loop_device(s, d, command::sendmail);
  close_conn(s, d, d.main);
  s.ctx.live.finished.fetch_add(1, std::memory_order_relaxed);
}

/** Enforces per-operation deadlines (cancels the socket) and, at the end, stops everything. */
asio::awaitable<void> supervise(shard& s) {
  while (!s.stopping) {
    s.supervisor.expires_after(std::chrono::milliseconds(200));
    error_code ec;
    co_await s.supervisor.async_wait(use_ec(ec));
    const auto now = clock_type::now();
    for (auto& d : s.devices) {
      for (conn* c : {&d.main, &d.side}) {
        if (c->sock && !c->timed_out && now > c->deadline) {
          c->timed_out = true;
          c->sock->cancel(ec);
        }
      }
    }
  }
}

void stop_shard(shard& s) {
  s.stopping = true;
  error_code ec;
  s.supervisor.cancel();
  for (auto& d : s.devices) {
    d.timer.cancel();
    d.mix_timer.cancel();
    if (d.main.sock) d.main.sock->cancel(ec);
    if (d.side.sock) d.side.sock->cancel(ec);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

std::uint64_t rss_kib(std::string_view field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (!line.starts_with(field)) continue;
    auto rest = std::string_view(line).substr(field.size());
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    return parse_count(rest.substr(0, rest.find(' '))).value_or(0);
  }
  return 0;
}

double ms(std::uint64_t us) { return static_cast<double>(us) / 1000.0; }

json::object latency_json(const histogram& h) {
  json::object o;
  o["count"] = h.count();
  o["p50_ms"] = ms(h.quantile(0.50));
  o["p90_ms"] = ms(h.quantile(0.90));
  o["p99_ms"] = ms(h.quantile(0.99));
  o["max_ms"] = ms(h.max());
  o["mean_ms"] = h.mean() / 1000.0;
  return o;
}

struct final_numbers {
  shard_stats total;
  double elapsed_s = 0;
  double handshake_window_s = 0;
  double answered_window_s = 0;  // first connect -> last answered FolderSync (storm)
  std::uint64_t rss_setup_kib = 0;
  std::uint64_t rss_max_kib = 0;
  std::uint64_t rss_end_kib = 0;
  std::uint64_t max_connected = 0;    // devices with their main connection open
  std::uint64_t max_connections = 0;  // all open connections
  rlim_t fd_limit = 0;
};

json::object report_json(const options& o, const final_numbers& f) {
  const auto& t = f.total;
  json::object r;
  r["scenario"] = o.scenario_name;
  r["target"] = o.target;
  r["devices"] = o.devices;
  r["threads"] = o.threads;
  r["keep_alive"] = o.keep_alive;
  r["resume"] = o.resume;
  r["heartbeat_s"] = o.heartbeat_s;
  r["mix"] = o.mix;
  r["elapsed_s"] = f.elapsed_s;
  std::uint64_t ok = 0, failed = 0;
  json::object cmds;
  for (std::size_t i = 0; i < command_count; ++i) {
    const auto& c = t.commands[i];
    ok += c.ok;
    failed += c.failed;
    if (c.ok + c.failed == 0) continue;
    json::object e = latency_json(c.latency_us);
    e["ok"] = c.ok;
    e["failed"] = c.failed;
    cmds[command_names[i]] = std::move(e);
  }
  r["commands"] = std::move(cmds);
  json::object req;
  req["ok"] = ok;
  req["failed"] = failed;
  req["per_s"] = f.elapsed_s > 0 ? static_cast<double>(ok) / f.elapsed_s : 0.0;
  req["abandoned_at_end"] = t.abandoned;
  r["requests"] = std::move(req);
  json::object errs;
  std::uint64_t n_err = 0;
  for (const auto& [k, v] : t.errors) {
    errs[k] = v;
    n_err += v;
  }
  r["errors"] = std::move(errs);
  r["error_count"] = n_err;
  json::object hs = latency_json(t.handshake_us);
  hs["full"] = t.handshakes_full;
  hs["resumed"] = t.handshakes_resumed;
  hs["failed"] = t.handshakes_failed;
  hs["window_s"] = f.handshake_window_s;
  hs["answered"] = t.answered;
  hs["answered_window_s"] = f.answered_window_s;
  hs["answered_per_s"] = f.answered_window_s > 0
                             ? static_cast<double>(t.answered) / f.answered_window_s
                             : 0.0;
  hs["per_s"] = f.handshake_window_s > 0
                    ? static_cast<double>(t.handshakes_full + t.handshakes_resumed) /
                          f.handshake_window_s
                    : 0.0;
  r["handshakes"] = std::move(hs);
  json::object dev;
  dev["with_foldersync"] = t.devices_with_foldersync;
  dev["with_ping"] = t.devices_with_ping;
  dev["with_error"] = t.devices_with_error;
  dev["max_connected"] = f.max_connected;
  dev["max_connections"] = f.max_connections;
  r["device_summary"] = std::move(dev);
  r["ping_status_2"] = t.ping_status_2;
  json::object mem;
  mem["rss_setup_kib"] = f.rss_setup_kib;
  mem["rss_max_kib"] = f.rss_max_kib;
  mem["rss_end_kib"] = f.rss_end_kib;
  mem["per_device_kib"] = static_cast<double>(f.rss_max_kib - std::min(f.rss_max_kib, f.rss_setup_kib)) /
                          static_cast<double>(o.devices);
  mem["fd_limit"] = static_cast<std::uint64_t>(f.fd_limit);
  r["memory"] = std::move(mem);
  return r;
}

void print_text(const options& o, const final_numbers& f, const json::object& r) {
  const auto& t = f.total;
  std::printf("eas-load %s: %zu devices, %u threads, %.1f s, keep-alive %s, resume %s\n",
              o.scenario_name.c_str(), o.devices, o.threads, f.elapsed_s,
              o.keep_alive ? "on" : "off", o.resume ? "on" : "off");
  std::printf("%-15s %9s %7s %10s %10s %10s %10s\n", "command", "ok", "failed", "p50 ms",
              "p90 ms", "p99 ms", "max ms");
  for (std::size_t i = 0; i < command_count; ++i) {
    const auto& c = t.commands[i];
    if (c.ok + c.failed == 0) continue;
    const auto& h = c.latency_us;
    std::printf("%-15s %9llu %7llu %10.3f %10.3f %10.3f %10.3f\n",
                std::string(command_names[i]).c_str(), static_cast<unsigned long long>(c.ok),
                static_cast<unsigned long long>(c.failed), ms(h.quantile(0.5)),
                ms(h.quantile(0.9)), ms(h.quantile(0.99)), ms(h.max()));
  }
  const auto& req = r.at("requests").as_object();
  std::printf("requests: %s ok, %s failed, %.1f req/s, %s abandoned at the end\n",
              json::serialize(req.at("ok")).c_str(), json::serialize(req.at("failed")).c_str(),
              req.at("per_s").as_double(), json::serialize(req.at("abandoned_at_end")).c_str());
  const auto& h = t.handshake_us;
  std::printf("handshakes: %llu full, %llu resumed, %llu failed, %.1f/s over %.2f s; "
              "p50 %.3f p90 %.3f p99 %.3f max %.3f ms\n",
              static_cast<unsigned long long>(t.handshakes_full),
              static_cast<unsigned long long>(t.handshakes_resumed),
              static_cast<unsigned long long>(t.handshakes_failed),
              r.at("handshakes").as_object().at("per_s").as_double(), f.handshake_window_s,
              ms(h.quantile(0.5)), ms(h.quantile(0.9)), ms(h.quantile(0.99)), ms(h.max()));
  std::printf("devices: %llu did FolderSync, %llu did Ping, %llu saw an error, max %llu connected "
              "(%llu connections)\n",
              static_cast<unsigned long long>(t.devices_with_foldersync),
              static_cast<unsigned long long>(t.devices_with_ping),
              static_cast<unsigned long long>(t.devices_with_error),
              static_cast<unsigned long long>(f.max_connected),
              static_cast<unsigned long long>(f.max_connections));
  if (t.errors.empty()) std::printf("errors: none\n");
  for (const auto& [k, v] : t.errors)
    std::printf("error %-50s %llu\n", k.c_str(), static_cast<unsigned long long>(v));
  std::printf("memory: RSS %llu KiB after setup, max %llu KiB, %.1f KiB per device\n",
              static_cast<unsigned long long>(f.rss_setup_kib),
              static_cast<unsigned long long>(f.rss_max_kib),
              r.at("memory").as_object().at("per_device_kib").as_double());
}

// ---------------------------------------------------------------------------------------------

int run(int argc, char** argv) {
  auto parsed = parse_options(argc, argv);
  if (auto* err = std::get_if<std::string>(&parsed)) {
    if (err->empty()) {
      std::cout << usage_text;
      return 0;
    }
    std::cerr << "eas-load: " << *err << "\n" << usage_text;
    return 2;
  }
  const options& o = std::get<options>(parsed);
  std::signal(SIGPIPE, SIG_IGN);  // OpenSSL writes to the socket itself

  // Descriptors: one per held connection, two per device with --mix.
  final_numbers f;
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    if (lim.rlim_cur < lim.rlim_max) {
      rlimit raised = lim;
      raised.rlim_cur = lim.rlim_max;
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
    }
    f.fd_limit = lim.rlim_cur;
    const std::size_t need = o.devices * (o.mix ? 2 : 1) + 64;
    if (need > lim.rlim_cur)
      std::cerr << "eas-load: warning: " << o.devices << " devices need up to " << need
                << " file descriptors, RLIMIT_NOFILE is " << lim.rlim_cur
                << " (hard limit); connects beyond it will fail\n";
  }

  auto tls = load_tls(o);
  if (auto* err = std::get_if<std::string>(&tls)) {
    std::cerr << "eas-load: " << *err << "\n";
    return 2;
  }
  const bodies body = make_bodies(o);
  error_code ec;
  auto addr = asio::ip::make_address(o.host, ec);
  run_context ctx{o, std::get<tls_setup>(tls), body, {}, !ec, {}};
  if (ec) {
    asio::io_context rio;
    tcp::resolver res(rio);
    auto eps = res.resolve(o.host, std::to_string(o.port), ec);
    if (ec || eps.empty()) {
      std::cerr << "eas-load: cannot resolve " << o.host << ": " << ec.message() << "\n";
      return 2;
    }
    ctx.endpoint = eps.begin()->endpoint();
  } else {
    ctx.endpoint = tcp::endpoint(addr, o.port);
  }

  std::deque<shard> shards;
  for (unsigned i = 0; i < o.threads; ++i) shards.emplace_back(ctx);
  for (std::size_t i = 0; i < o.devices; ++i) {
    auto& s = shards[i % o.threads];
    s.devices.emplace_back(s.io, i);
  }
  f.rss_setup_kib = rss_kib("VmRSS:");
  const auto start = clock_type::now();
  for (auto& s : shards) {
    s.ramp_start = start;
    asio::co_spawn(s.io, supervise(s), asio::detached);
    for (auto& d : s.devices) asio::co_spawn(s.io, run_device(s, d), asio::detached);
  }
  std::vector<std::thread> threads;
  for (auto& s : shards) threads.emplace_back([&s] { s.io.run(); });

  // The main thread: progress once a second, the end of the run, SIGINT/SIGTERM.
  asio::io_context main_io{1};
  asio::signal_set signals(main_io, SIGINT, SIGTERM);
  bool interrupted = false;
  signals.async_wait([&](const error_code& e, int) {
    if (!e) interrupted = true;
  });
  const auto end = start + seconds_d(o.ramp_s + o.duration_s);
  const bool tty = isatty(STDERR_FILENO) != 0;
  auto last_tick = start;
  std::uint64_t last_requests = 0, last_hs = 0;
  std::size_t ticks = 0;
  for (;;) {
    main_io.run_for(std::chrono::milliseconds(100));
    main_io.restart();
    const auto now = clock_type::now();
    f.max_connected = std::max<std::uint64_t>(
        f.max_connected,
        static_cast<std::uint64_t>(std::max<std::int64_t>(ctx.live.devices_connected.load(), 0)));
    f.max_connections = std::max<std::uint64_t>(
        f.max_connections,
        static_cast<std::uint64_t>(std::max<std::int64_t>(ctx.live.connected.load(), 0)));
    const bool done = ctx.live.finished.load() >= o.devices;
    if (++ticks % 10 == 0 || done || interrupted || now >= end) {
      f.rss_max_kib = std::max(f.rss_max_kib, rss_kib("VmRSS:"));
      const double dt = std::chrono::duration<double>(now - last_tick).count();
      const auto req = ctx.live.requests.load();
      const auto hs = ctx.live.handshakes.load();
      if (!o.quiet && dt > 0) {
        std::fprintf(stderr,
                     "%s[%6.1fs] devices connected %lld/%zu (%lld connections)  requests %llu  "
                     "errors %llu  %.1f req/s  %.1f handshakes/s  rss %llu MiB%s",
                     tty ? "\r" : "", std::chrono::duration<double>(now - start).count(),
                     static_cast<long long>(ctx.live.devices_connected.load()), o.devices,
                     static_cast<long long>(ctx.live.connected.load()),
                     static_cast<unsigned long long>(req),
                     static_cast<unsigned long long>(ctx.live.errors.load()),
                     static_cast<double>(req - last_requests) / dt,
                     static_cast<double>(hs - last_hs) / dt,
                     static_cast<unsigned long long>(f.rss_max_kib / 1024), tty ? "" : "\n");
      }
      last_tick = now;
      last_requests = req;
      last_hs = hs;
    }
    if (done || interrupted || now >= end) break;
  }
  if (!o.quiet && tty) std::fputc('\n', stderr);
  const auto stop_at = clock_type::now();
  for (auto& s : shards) asio::post(s.io, [&s] { stop_shard(s); });
  for (auto& t : threads) t.join();
  f.rss_end_kib = rss_kib("VmRSS:");
  f.elapsed_s = std::chrono::duration<double>(stop_at - start).count();

  std::optional<clock_type::time_point> first, last, last_answered;
  for (auto& s : shards) {
    auto& t = f.total;
    const auto& st = s.stats;
    for (std::size_t i = 0; i < command_count; ++i) {
      t.commands[i].ok += st.commands[i].ok;
      t.commands[i].failed += st.commands[i].failed;
      t.commands[i].latency_us.merge(st.commands[i].latency_us);
    }
    for (const auto& [k, v] : st.errors) t.errors[k] += v;
    t.handshake_us.merge(st.handshake_us);
    t.handshakes_full += st.handshakes_full;
    t.handshakes_resumed += st.handshakes_resumed;
    t.handshakes_failed += st.handshakes_failed;
    t.abandoned += st.abandoned;
    t.ping_status_2 += st.ping_status_2;
    if (st.first_connect && (!first || *st.first_connect < *first)) first = st.first_connect;
    if (st.last_handshake && (!last || *st.last_handshake > *last)) last = st.last_handshake;
    if (st.last_answered && (!last_answered || *st.last_answered > *last_answered))
      last_answered = st.last_answered;
    t.answered += st.answered;
    for (const auto& d : s.devices) {
      t.devices_with_foldersync += d.did_foldersync ? 1 : 0;
      t.devices_with_ping += d.did_ping ? 1 : 0;
      t.devices_with_error += d.had_error ? 1 : 0;
    }
  }
  if (first && last && *last > *first)
    f.handshake_window_s = std::chrono::duration<double>(*last - *first).count();
  if (first && last_answered && *last_answered > *first)
    f.answered_window_s = std::chrono::duration<double>(*last_answered - *first).count();

  const json::object r = report_json(o, f);
  if (o.json) std::cout << json::serialize(r) << "\n";
  else print_text(o, f, r);
  std::cout.flush();
  std::fflush(stdout);
  return r.at("error_count").as_uint64() > 0 ? 1 : 0;
}

}  // namespace
}  // namespace cbagate::eas_load

int main(int argc, char** argv) { return cbagate::eas_load::run(argc, argv); }
