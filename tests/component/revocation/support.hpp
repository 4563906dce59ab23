#pragma once
// Shared fixtures of the revocation component tests: the dev PKI, CRLs and certificates made
// on the fly, a loopback HTTP server, and a helper that awaits checker::async_check.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "common/openssl_ptr.hpp"
#include "identity/cert_ref.hpp"
#include "revocation/checker.hpp"

namespace test {

namespace rev = cbagate::revocation;
namespace id = cbagate::identity;
namespace ossl = cbagate::ossl;

std::string pki(const std::string& rel);
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);
ossl::x509_ptr read_cert(const std::string& path);
ossl::evp_pkey_ptr read_key(const std::string& path);
std::int64_t unix_now();

/** A private temporary directory, removed with its content. */
struct temp_dir {
  temp_dir();
  ~temp_dir();
  std::string path;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

/** Registry holding the dev PKI's root and issuing CA. */
std::shared_ptr<id::issuer_registry> lab_registry();

/** refs_of_chain of clients/<name>-chain.pem + ca/root.pem (leaf, issuing CA). */
id::chain_refs lab_refs(const std::string& client);

struct crl_spec {
  X509* name_from = nullptr;      ///< the CRL's issuer name is this certificate's subject
  EVP_PKEY* key = nullptr;        ///< signing key
  std::vector<std::pair<const ASN1_INTEGER*, int>> revoked;  ///< serial, reason (-1 = none)
  long this_update = -3600;       ///< seconds from now
  std::optional<long> next_update = 86400;
  bool delta = false;
};
/** A CRL built and signed as `s` says; DER. */
std::string make_crl_der(const crl_spec& s);
std::string der_to_pem_crl(const std::string& der);

/** A tiny HTTP/1.1 server on 127.0.0.1:0 on its own thread. */
class http_server {
 public:
  struct route {
    int status = 200;
    std::string body;
    bool hang = false;                       ///< read the request, never answer
    std::chrono::milliseconds delay{0};      ///< answer after this long
  };
  explicit http_server(std::map<std::string, route> routes);
  ~http_server();
  std::string url(const std::string& path) const;
  int hits(const std::string& path) const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/** Awaits checker.async_check on an io_context run on this thread (bounded). */
rev::verdict await_check(rev::checker& c, const id::chain_refs& refs, const rev::policy& p);
/** Two concurrent async_checks of the same refs. */
std::pair<rev::verdict, rev::verdict> await_two(rev::checker& c, const id::chain_refs& refs,
                                                const rev::policy& p);

/** The value of one rendered metric series line ("name{labels}"), or -1. */
long long metric(const cbagate::observability::registry& r, const std::string& series);

}  // namespace test
