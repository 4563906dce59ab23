#pragma once
// RAII owners for OpenSSL handles: unique_ptr with stateless deleters (STYLE.md 5.3).
#include <memory>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace cbagate::ossl {

template <auto Free>
struct deleter {
  template <class T>
  void operator()(T* p) const noexcept { Free(p); }
};

using x509_ptr = std::unique_ptr<X509, deleter<X509_free>>;
using x509_crl_ptr = std::unique_ptr<X509_CRL, deleter<X509_CRL_free>>;
using x509_store_ptr = std::unique_ptr<X509_STORE, deleter<X509_STORE_free>>;
using x509_store_ctx_ptr = std::unique_ptr<X509_STORE_CTX, deleter<X509_STORE_CTX_free>>;
using bio_ptr = std::unique_ptr<BIO, deleter<BIO_free_all>>;
using evp_pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY_free>>;
using ssl_ctx_ptr = std::unique_ptr<SSL_CTX, deleter<SSL_CTX_free>>;
using general_names_ptr = std::unique_ptr<GENERAL_NAMES, deleter<GENERAL_NAMES_free>>;
using eku_ptr = std::unique_ptr<EXTENDED_KEY_USAGE, deleter<EXTENDED_KEY_USAGE_free>>;

inline void free_x509_stack(STACK_OF(X509) * s) noexcept { sk_X509_pop_free(s, X509_free); }
using x509_stack_ptr = std::unique_ptr<STACK_OF(X509), deleter<free_x509_stack>>;

inline void free_crl_stack(STACK_OF(X509_CRL) * s) noexcept { sk_X509_CRL_pop_free(s, X509_CRL_free); }
using x509_crl_stack_ptr = std::unique_ptr<STACK_OF(X509_CRL), deleter<free_crl_stack>>;

}  // namespace cbagate::ossl
