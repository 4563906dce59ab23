#include "upstream/pool.hpp"

#include "common/error.hpp"
#include "common/openssl_ptr.hpp"
#include "upstream/health.hpp"

#include <sys/socket.h>

#include <algorithm>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/err.h>
#include <openssl/x509v3.h>

namespace cbagate::upstream {
namespace {

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);
// A server whose connect failed is passed over for this long while others are available.
constexpr auto down_period = std::chrono::seconds(10);

std::string describe(errc e) {
  switch (e) {
    case errc::connect_failed: return "no backend server accepted the connection";
    case errc::tls_failed: return "TLS handshake with the backend failed";
    case errc::resolve_failed: return "backend name did not resolve";
  }
  return "unknown upstream error";
}

// True when an idle connection has been closed or sent something unsolicited: either way it
// cannot carry a new request. Non-blocking peek on the raw socket.
bool looks_alive(beast::tcp_stream& s) {
  if (!s.socket().is_open()) return false;
  char byte = 0;
  const ssize_t n = ::recv(s.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return false;                        // orderly close by the backend
  if (n > 0) return false;                         // unexpected bytes (or a TLS alert)
  return errno == EAGAIN || errno == EWOULDBLOCK;  // nothing pending: still usable
}

// RFC 5929 section 4.1: the certificate's own signature hash, except MD5 and SHA-1 become
// SHA-256 (and so does a signature without a separate hash, such as Ed25519).
std::vector<unsigned char> tls_server_end_point(SSL* ssl) {
  std::vector<unsigned char> out;
  ossl::x509_ptr cert(SSL_get1_peer_certificate(ssl));
  if (!cert) return out;
  int md_nid = NID_undef;
  const EVP_MD* md = nullptr;
  if (OBJ_find_sigid_algs(X509_get_signature_nid(cert.get()), &md_nid, nullptr) &&
      md_nid != NID_md5 && md_nid != NID_sha1 && md_nid != NID_undef)
    md = EVP_get_digestbynid(md_nid);
  if (!md) md = EVP_sha256();
  unsigned char buf[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert.get(), md, buf, &len) == 1) out.assign(buf, buf + len);
  return out;
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

const boost::system::error_category& category() noexcept {
  static const enum_category<errc, describe> instance("proxy.upstream");
  return instance;
}

connection::~connection() {
  if (pinned && private_open != nullptr) private_open->dec();
}

void make_private(connection& c, observability::gauge* open) noexcept {
  if (c.pinned) return;
  c.pinned = true;
  c.private_open = open;
  if (open != nullptr) open->inc();
}

beast::tcp_stream& connection::tcp() noexcept {
  if (auto* p = std::get_if<plain_stream>(&stream)) return *p;
  return beast::get_lowest_layer(std::get<tls_stream>(stream));
}

void client_tls::expect_peer(SSL* ssl, const std::string& host) const {
  const std::string& name = server_name_.empty() ? host : server_name_;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  if (is_ip_literal(name)) {
    X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str());
  } else {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // inside OpenSSL's macro
    SSL_set_tlsext_host_name(ssl, name.c_str());
#pragma GCC diagnostic pop
    X509_VERIFY_PARAM_set1_host(param, name.c_str(), name.size());
  }
}

std::shared_ptr<client_tls> client_tls::make(const config::upstream_section& cfg,
                                             std::string& error) {
  std::shared_ptr<client_tls> self(new client_tls());
  SSL_CTX* c = self->ctx_.native_handle();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  error_code ec;
  if (!cfg.ca.empty()) {
    self->ctx_.load_verify_file(cfg.ca, ec);
    if (ec) {
      error = "upstream: cannot load upstream.ca " + cfg.ca + ": " + ec.message();
      return nullptr;
    }
  } else {
    self->ctx_.set_default_verify_paths(ec);
    if (ec) {
      error = "upstream: cannot load the system CA store: " + ec.message();
      return nullptr;
    }
  }
  self->ctx_.set_verify_mode(net::ssl::verify_peer);
  self->server_name_ = cfg.server_name;
  return self;
}

pool::pool(net::any_io_executor ex, std::shared_ptr<const config::snapshot> cfg,
           std::shared_ptr<client_tls> tls)
    : ex_(std::move(ex)), cfg_(std::move(cfg)), tls_(std::move(tls)) {
  down_until_.resize(cfg_->upstream.servers.size());
}

net::awaitable<error_code> pool::connect_one(std::size_t index, connection& out, std::string& why) {
  const config::upstream_server& srv = cfg_->upstream.servers[index];
  const auto deadline = std::chrono::duration_cast<std::chrono::milliseconds>(
      cfg_->timeouts.upstream_connect);

  net::ip::tcp::resolver resolver(ex_);
  auto [rec, results] = co_await resolver.async_resolve(srv.host, std::to_string(srv.port), use_tuple);
  if (rec) {
    why = srv.url + ": resolve: " + rec.message();
    co_return make_error_code(errc::resolve_failed);
  }

  beast::tcp_stream tcp(ex_);
  tcp.expires_after(deadline);
  auto [cec, ep] = co_await tcp.async_connect(results, use_tuple);
  if (cec) {
    why = srv.url + ": connect: " + (cec == beast::error::timeout ? std::string("timed out")
                                                                  : cec.message());
    co_return cec;
  }
  tcp.socket().set_option(net::ip::tcp::no_delay(true));

  if (!srv.tls) {
    out.stream.emplace<plain_stream>(std::move(tcp));
    co_return error_code{};
  }

  auto& tls = out.stream.emplace<tls_stream>(std::move(tcp), tls_->context());
  SSL* ssl = tls.native_handle();
  tls_->expect_peer(ssl, srv.host);
  beast::get_lowest_layer(tls).expires_after(deadline);
  auto [hec] = co_await tls.async_handshake(net::ssl::stream_base::client, use_tuple);
  if (hec) {
    const long verify = SSL_get_verify_result(ssl);
    why = srv.url + ": TLS handshake: " + hec.message();
    if (verify != X509_V_OK) why += std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")";
    out.stream.emplace<plain_stream>(ex_);
    co_return make_error_code(errc::tls_failed);
  }
  beast::get_lowest_layer(tls).expires_never();
  out.tls_server_end_point = tls_server_end_point(ssl);
  co_return error_code{};
}

std::unique_ptr<connection> pool::take_idle(const std::string& key) {
  // Newest idle first: it is the least likely to have been closed by the backend.
  while (!idle_.empty()) {
    std::unique_ptr<connection> c;
    for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
      if ((*it)->key == key && !(*it)->pinned) {
        c = std::move(*it);
        idle_.erase(std::next(it).base());
        break;
      }
    }
    if (!c) break;
    // An idle connection to a server taken out of the rotation is not reused (health.hpp).
    const bool in_rotation = !health_ || health_->usable(c->server) || !health_->any_usable();
    if (in_rotation && clock::now() - c->idle_since < cfg_->upstream.idle_timeout &&
        looks_alive(c->tcp()))
      return c;
  }
  return nullptr;
}

net::awaitable<lease> pool::acquire(std::string key) {
  lease result;
  if ((result.conn = take_idle(key))) {
    result.reused = true;
    co_return result;
  }

  const std::size_t n = cfg_->upstream.servers.size();
  const auto start = clock::now();
  const std::size_t first = next_++ % n;
  // Two passes: servers not marked down first, then the down ones (when all are failing, keep
  // trying rather than refusing everybody).
  // Each server is tried at most once per acquire: one that just failed in the first pass is
  // "down" by then and must not be tried again in the second (that doubled the wait for a dead
  // backend and named it twice in the log).
  std::vector<bool> tried(n, false);
  // Servers out of the rotation (health.hpp) count as down, unless none is in it.
  const bool health_filter = health_ && health_->any_usable();
  for (int pass = 0; pass < 2 && !result.conn; ++pass) {
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (first + k) % n;
      const bool down = clock::now() < down_until_[i] || (health_filter && !health_->usable(i));
      if ((pass == 0) == down || tried[i]) continue;
      tried[i] = true;
      auto c = std::make_unique<connection>(plain_stream(ex_), i, key, next_id_++);
      std::string why;
      error_code ec = co_await connect_one(i, *c, why);
      if (!ec) {
        down_until_[i] = {};
        result.conn = std::move(c);
        break;
      }
      down_until_[i] = clock::now() + down_period;
      if (health_) health_->report(i, true);
      if (!result.detail.empty()) result.detail += "; ";
      result.detail += why;
    }
  }
  result.connect_time = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - start);
  co_return result;
}

bool pool::reusable(connection& conn) const {
  return clock::now() - conn.idle_since < cfg_->upstream.idle_timeout && looks_alive(conn.tcp());
}

void pool::release(std::unique_ptr<connection> conn) {
  if (!conn) return;
  // A connection that carried connection-bound authentication runs as its user for every later
  // request on it (issue 10): it is closed rather than shared.
  if (conn->pinned) return;
  if (cfg_->upstream.max_idle_per_server == 0) return;  // closed by the destructor
  // At the bound, the least recently used idle connection of that server makes room: with
  // per-user keys (Kerberos) the active users keep theirs.
  std::size_t same_server = 0;
  for (const auto& c : idle_) same_server += c->server == conn->server;
  if (same_server >= cfg_->upstream.max_idle_per_server) {
    auto oldest = std::find_if(idle_.begin(), idle_.end(),
                               [&](const auto& c) { return c->server == conn->server; });
    if (oldest != idle_.end()) idle_.erase(oldest);
  }
  conn->idle_since = clock::now();
  conn->tcp().expires_never();
  idle_.push_back(std::move(conn));
}

void pool::sweep() {
  const auto now = clock::now();
  std::erase_if(idle_, [&](const std::unique_ptr<connection>& c) {
    return now - c->idle_since >= cfg_->upstream.idle_timeout;
  });
}

}  // namespace cbagate::upstream
