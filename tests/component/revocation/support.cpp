#include "support.hpp"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "observability/metrics.hpp"

namespace test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

std::string pki(const std::string& rel) { return std::string(CBAGATE_TEST_PKI) + "/" + rel; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
  if (!out) throw std::runtime_error("cannot write " + path);
}

ossl::x509_ptr read_cert(const std::string& path) {
  ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
  if (!bio) throw std::runtime_error("cannot open " + path);
  ossl::x509_ptr x{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)};
  if (!x) throw std::runtime_error("no certificate in " + path);
  return x;
}

ossl::evp_pkey_ptr read_key(const std::string& path) {
  ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
  if (!bio) throw std::runtime_error("cannot open " + path);
  ossl::evp_pkey_ptr k{PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)};
  if (!k) throw std::runtime_error("no key in " + path);
  return k;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

temp_dir::temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "cbagate-rev-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path = tmpl;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::shared_ptr<id::issuer_registry> lab_registry() {
  auto r = std::make_shared<id::issuer_registry>();
  r->add(read_cert(pki("ca/root.pem")).get());
  r->add(read_cert(pki("ca/issuing.pem")).get());
  return r;
}

id::chain_refs lab_refs(const std::string& client) {
  ossl::x509_stack_ptr chain{sk_X509_new_null()};
  ossl::bio_ptr bio{BIO_new_file(pki("clients/" + client + "-chain.pem").c_str(), "rb")};
  if (!bio) throw std::runtime_error("no chain for " + client);
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    sk_X509_push(chain.get(), x);
  sk_X509_push(chain.get(), read_cert(pki("ca/root.pem")).release());
  return id::refs_of_chain(chain.get());
}

std::string make_crl_der(const crl_spec& s) {
  ossl::x509_crl_ptr crl{X509_CRL_new()};
  X509_CRL_set_version(crl.get(), 1);
  X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(s.name_from));
  const time_t now = static_cast<time_t>(unix_now());
  ASN1_TIME* t = ASN1_TIME_adj(nullptr, now, 0, s.this_update);
  X509_CRL_set1_lastUpdate(crl.get(), t);
  ASN1_TIME_free(t);
  if (s.next_update) {
    t = ASN1_TIME_adj(nullptr, now, 0, *s.next_update);
    X509_CRL_set1_nextUpdate(crl.get(), t);
    ASN1_TIME_free(t);
  }
  for (const auto& [serial, reason] : s.revoked) {
    X509_REVOKED* r = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(r, const_cast<ASN1_INTEGER*>(serial));
    t = ASN1_TIME_adj(nullptr, now, 0, -60);
    X509_REVOKED_set_revocationDate(r, t);
    ASN1_TIME_free(t);
    if (reason >= 0) {
      ASN1_ENUMERATED* e = ASN1_ENUMERATED_new();
      ASN1_ENUMERATED_set(e, reason);
      X509_REVOKED_add1_ext_i2d(r, NID_crl_reason, e, 0, 0);
      ASN1_ENUMERATED_free(e);
    }
    X509_CRL_add0_revoked(crl.get(), r);
  }
  if (s.delta) {
    ASN1_INTEGER* base = ASN1_INTEGER_new();
    ASN1_INTEGER_set(base, 1);
    X509_CRL_add1_ext_i2d(crl.get(), NID_delta_crl, base, 1, 0);
    ASN1_INTEGER_free(base);
  }
  X509_CRL_sort(crl.get());
  if (X509_CRL_sign(crl.get(), s.key, EVP_sha256()) <= 0)
    throw std::runtime_error("X509_CRL_sign failed");
  unsigned char* der = nullptr;
  const int len = i2d_X509_CRL(crl.get(), &der);
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

std::string der_to_pem_crl(const std::string& der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  ossl::x509_crl_ptr crl{d2i_X509_CRL(nullptr, &p, static_cast<long>(der.size()))};
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  PEM_write_bio_X509_CRL(bio.get(), crl.get());
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

// ---- http_server -----------------------------------------------------------------------------

struct http_server::impl {
  explicit impl(std::map<std::string, route> r)
      : routes(std::move(r)), acceptor(ioc, {net::ip::make_address("127.0.0.1"), 0}) {}

  net::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
      if (ec) co_return;
      net::co_spawn(ioc, serve(std::move(sock)), net::detached);
    }
  }

  net::awaitable<void> serve(tcp::socket sock) {
    beast::tcp_stream s(std::move(sock));
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    s.expires_after(std::chrono::seconds(30));
    auto [rec, n] = co_await http::async_read(s, buf, req, use_tuple);
    if (rec) co_return;
    const std::string path(req.target());
    {
      std::lock_guard lock(mu);
      ++counts[path];
      last_bodies[path] = req.body();
    }
    const auto it = routes.find(path);
    route r = it == routes.end() ? route{404, "not found", false, {}} : it->second;
    if (r.hang || r.delay.count() > 0) {
      net::steady_timer t(ioc);
      t.expires_after(r.hang ? std::chrono::milliseconds(60000) : r.delay);
      co_await t.async_wait(use_tuple);
      if (r.hang) co_return;
    }
    http::response<http::string_body> res{static_cast<http::status>(r.status), 11};
    res.body() = r.body;
    res.keep_alive(false);
    res.prepare_payload();
    co_await http::async_write(s, res, use_tuple);
    beast::error_code ignored;
    s.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  std::map<std::string, route> routes;
  net::io_context ioc{1};
  tcp::acceptor acceptor;
  mutable std::mutex mu;
  std::map<std::string, int> counts;
  std::map<std::string, std::string> last_bodies;
  std::thread thread;
};

http_server::http_server(std::map<std::string, route> routes)
    : impl_(std::make_unique<impl>(std::move(routes))) {
  net::co_spawn(impl_->ioc, impl_->accept_loop(), net::detached);
  impl_->thread = std::thread([i = impl_.get()] { i->ioc.run(); });
}

http_server::~http_server() {
  impl_->ioc.stop();
  impl_->thread.join();
}

std::string http_server::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(impl_->acceptor.local_endpoint().port()) + path;
}

int http_server::hits(const std::string& path) const {
  std::lock_guard lock(impl_->mu);
  const auto it = impl_->counts.find(path);
  return it == impl_->counts.end() ? 0 : it->second;
}

// ---- awaiting ------------------------------------------------------------------------------

rev::verdict await_check(rev::checker& c, const id::chain_refs& refs, const rev::policy& p) {
  net::io_context ioc{1};
  std::optional<rev::verdict> out;
  net::co_spawn(ioc, c.async_check(refs, p, ioc.get_executor()),
                [&](std::exception_ptr e, rev::verdict v) {
                  if (!e) out = std::move(v);
                });
  ioc.run_for(std::chrono::seconds(20));
  if (!out) throw std::runtime_error("async_check did not complete");
  return *out;
}

std::pair<rev::verdict, rev::verdict> await_two(rev::checker& c, const id::chain_refs& refs,
                                                const rev::policy& p) {
  net::io_context ioc{1};
  std::optional<rev::verdict> a;
  std::optional<rev::verdict> b;
  net::co_spawn(ioc, c.async_check(refs, p, ioc.get_executor()),
                [&](std::exception_ptr e, rev::verdict v) {
                  if (!e) a = std::move(v);
                });
  net::co_spawn(ioc, c.async_check(refs, p, ioc.get_executor()),
                [&](std::exception_ptr e, rev::verdict v) {
                  if (!e) b = std::move(v);
                });
  ioc.run_for(std::chrono::seconds(20));
  if (!a || !b) throw std::runtime_error("async_check did not complete");
  return {*a, *b};
}

long long metric(const cbagate::observability::registry& r, const std::string& series) {
  std::istringstream in(r.render());
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::stoll(line.substr(series.size() + 1));
  }
  return -1;
}

}  // namespace test
