// libFuzzer target: CRL parsing and indexing (revocation/crl_index: what a tls.crl file or a
// CDP download goes through). The first byte picks the mode: even = the bytes as they are
// (parse_crls, then index_crl against a registry holding the fuzz CA: stops at the issuer or
// the signature); odd = each parsed CRL is re-issued by the fuzz CA and re-signed first, so the
// extension checks, the times and the serial index run on fuzzer-chosen content.
// Properties: no crash; an indexed CRL's serial list is sorted and covers what it claims.
#include "fuzz_ca.hpp"
#include "revocation/crl_index.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <openssl/bio.h>
#include <openssl/err.h>

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (1u << 20)) return 0;
  const bool resign = (data[0] & 1) != 0;
  static cbagate::identity::issuer_registry* issuers = [] {
    auto* r = new cbagate::identity::issuer_registry();
    r->add(fuzz::ca().cert);
    return r;
  }();
  cbagate::ossl::bio_ptr bio{BIO_new_mem_buf(data + 1, static_cast<int>(size - 1))};
  std::string err;
  auto crls = cbagate::revocation::detail::parse_crls(bio.get(), err);
  if (crls.empty()) require(!err.empty());
  for (auto& crl : crls) {
    if (resign) {
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(fuzz::ca().cert));
      if (X509_CRL_sign(crl.get(), fuzz::ca().key, EVP_sha256()) <= 0) {
        ERR_clear_error();
        continue;
      }
    }
    std::string why;
    auto index = cbagate::revocation::detail::index_crl(crl.get(), *issuers, "fuzz", why);
    if (!index) {
      require(!why.empty());
      continue;
    }
    require(std::is_sorted(index->serials.begin(), index->serials.end()));
    require(index->serials.size() == index->reasons.size());
    for (const std::string& serial : index->serials) require(index->find(serial) != nullptr);
  }
  ERR_clear_error();
  return 0;
}
