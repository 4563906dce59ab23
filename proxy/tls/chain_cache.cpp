#include "tls/chain_cache.hpp"

#include <openssl/crypto.h>

namespace cbagate::tls {
namespace {

struct md_ctx_free {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};


}  // namespace

bool digest_cert(EVP_MD_CTX* md, X509* x) {
  unsigned char* der = nullptr;
  const int n = i2d_X509(x, &der);
  if (n <= 0 || der == nullptr) return false;
  const bool ok = EVP_DigestUpdate(md, der, static_cast<std::size_t>(n)) == 1;
  OPENSSL_free(der);
  return ok;
}

chain_cache::chain_cache(std::size_t capacity)
    : entries_(capacity),
      sha256_(EVP_MD_fetch(nullptr, "SHA256", nullptr)) {}

chain_cache::~chain_cache() { EVP_MD_free(sha256_); }

bool chain_cache::key_of(X509* leaf, STACK_OF(X509) * sent, chain_key& out) const {
  if (leaf == nullptr || sha256_ == nullptr) return false;
  std::unique_ptr<EVP_MD_CTX, md_ctx_free> md{EVP_MD_CTX_new()};
  if (!md || EVP_DigestInit_ex(md.get(), sha256_, nullptr) != 1) return false;
  if (!digest_cert(md.get(), leaf)) return false;
  // DER is self-delimiting: the concatenation names the sequence unambiguously.
  for (int i = 0; sent != nullptr && i < sk_X509_num(sent); ++i) {
    X509* x = sk_X509_value(sent, i);
    if (x == leaf) continue;
    if (!digest_cert(md.get(), x)) return false;
  }
  unsigned int len = 0;
  return EVP_DigestFinal_ex(md.get(), out.data(), &len) == 1 && len == out.size();
}

std::shared_ptr<const identity::client_identity> chain_cache::find(const chain_key& key,
                                                                    std::int64_t now) {
  std::shared_ptr<const identity::client_identity> out;
  entries_.find(key, [&](const entry& e) {
    if (now < e.not_before || now > e.not_after) return false;
    out = e.id;
    return true;
  });
  return out;
}

void chain_cache::insert(const chain_key& key, std::shared_ptr<const identity::client_identity> id,
                         std::int64_t not_before, std::int64_t not_after) {
  if (!id || !id->ok() || not_before > not_after) return;
  entries_.put(key, entry{not_before, not_after, std::move(id)}, /*replace=*/true);
}

std::size_t chain_cache::size() const { return entries_.size(); }

}  // namespace cbagate::tls
