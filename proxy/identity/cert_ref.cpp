#include "identity/cert_ref.hpp"

#include <cstring>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

namespace cbagate::identity {
namespace {

void sha1(const unsigned char* data, std::size_t len, sha1_digest& out) {
  unsigned int n = 0;
  if (EVP_Digest(data, len, out.data(), &n, EVP_sha1(), nullptr) != 1 || n != out.size())
    out.fill(0);
}

// Only plain http:// is fetched (docs/revocation.md: as Windows does for CDP and AIA).
bool is_http_url(const ASN1_IA5STRING* s) {
  constexpr std::string_view prefix = "http://";
  if (s == nullptr || static_cast<std::size_t>(s->length) <= prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const char c = static_cast<char>(s->data[i]);
    if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != prefix[i]) return false;
  }
  for (int i = 0; i < s->length; ++i)
    if (s->data[i] <= 0x20 || s->data[i] >= 0x7f) return false;
  return true;
}

std::string to_string(const ASN1_IA5STRING* s) {
  return {reinterpret_cast<const char*>(s->data), static_cast<std::size_t>(s->length)};
}

struct dist_points_free {
  void operator()(CRL_DIST_POINTS* p) const noexcept { CRL_DIST_POINTS_free(p); }
};
struct aia_free {
  void operator()(AUTHORITY_INFO_ACCESS* p) const noexcept { AUTHORITY_INFO_ACCESS_free(p); }
};

void read_cdp(X509* x, std::vector<std::string>& out) {
  std::unique_ptr<CRL_DIST_POINTS, dist_points_free> dps{static_cast<CRL_DIST_POINTS*>(
      X509_get_ext_d2i(x, NID_crl_distribution_points, nullptr, nullptr))};
  if (!dps) return;
  for (int i = 0; i < sk_DIST_POINT_num(dps.get()); ++i) {
    const DIST_POINT* dp = sk_DIST_POINT_value(dps.get(), i);
    // Indirect CRLs (cRLIssuer) and nameRelativeToCRLIssuer are not supported: skipped.
    if (dp->distpoint == nullptr || dp->distpoint->type != 0 || dp->CRLissuer != nullptr) continue;
    const GENERAL_NAMES* names = dp->distpoint->name.fullname;
    for (int j = 0; j < sk_GENERAL_NAME_num(names); ++j) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, j);
      if (gn->type == GEN_URI && is_http_url(gn->d.uniformResourceIdentifier))
        out.push_back(to_string(gn->d.uniformResourceIdentifier));
    }
  }
}

void read_aia_ocsp(X509* x, std::vector<std::string>& out) {
  std::unique_ptr<AUTHORITY_INFO_ACCESS, aia_free> aia{static_cast<AUTHORITY_INFO_ACCESS*>(
      X509_get_ext_d2i(x, NID_info_access, nullptr, nullptr))};
  if (!aia) return;
  for (int i = 0; i < sk_ACCESS_DESCRIPTION_num(aia.get()); ++i) {
    const ACCESS_DESCRIPTION* ad = sk_ACCESS_DESCRIPTION_value(aia.get(), i);
    if (OBJ_obj2nid(ad->method) != NID_ad_OCSP || ad->location->type != GEN_URI) continue;
    if (is_http_url(ad->location->d.uniformResourceIdentifier))
      out.push_back(to_string(ad->location->d.uniformResourceIdentifier));
  }
}

}  // namespace

std::string serial_octets(const ASN1_INTEGER* serial) {
  if (serial == nullptr) return {};
  unsigned char* der = nullptr;
  const int len = i2d_ASN1_INTEGER(serial, &der);
  if (len < 2 || der == nullptr) {
    OPENSSL_free(der);
    return {};
  }
  // DER: tag 0x02, a short or long length, then the content octets.
  std::size_t off = 2;
  if ((der[1] & 0x80) != 0) off += der[1] & 0x7fu;
  std::string out;
  if (off <= static_cast<std::size_t>(len))
    out.assign(reinterpret_cast<const char*>(der) + off, static_cast<std::size_t>(len) - off);
  OPENSSL_free(der);
  return out;
}

issuer_id issuer_id_of(const X509* ca) {
  issuer_id id;
  unsigned char* der = nullptr;
  const int len = i2d_X509_NAME(X509_get_subject_name(ca), &der);
  if (len > 0) sha1(der, static_cast<std::size_t>(len), id.name_hash);
  OPENSSL_free(der);
  // The subjectPublicKey BIT STRING value without its unused-bits octet, as OCSP_cert_id_new
  // hashes it (RFC 6960 4.1.1 issuerKeyHash).
  if (const ASN1_BIT_STRING* key = X509_get0_pubkey_bitstr(ca))
    sha1(key->data, static_cast<std::size_t>(key->length), id.key_hash);
  return id;
}

chain_refs refs_of_chain(STACK_OF(X509) * verified_chain) {
  chain_refs out;
  const int n = verified_chain ? sk_X509_num(verified_chain) : 0;
  if (n < 2) return out;
  out.reserve(static_cast<std::size_t>(n - 1));
  for (int i = 0; i + 1 < n; ++i) {
    X509* x = sk_X509_value(verified_chain, i);
    cert_ref ref;
    ref.issuer = issuer_id_of(sk_X509_value(verified_chain, i + 1));
    ref.serial = serial_octets(X509_get0_serialNumber(x));
    read_cdp(x, ref.cdp_urls);
    read_aia_ocsp(x, ref.ocsp_urls);
    out.push_back(std::move(ref));
  }
  return out;
}

void issuer_registry::add(X509* ca) {
  if (ca == nullptr) return;
  const issuer_id id = issuer_id_of(ca);
  std::lock_guard lock(mu_);
  if (by_id_.size() >= max_ || by_id_.contains(id)) return;
  X509_up_ref(ca);
  by_id_.emplace(id, ossl::x509_ptr{ca});
}

ossl::x509_ptr issuer_registry::find(const issuer_id& id) const {
  std::lock_guard lock(mu_);
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) return nullptr;
  X509_up_ref(it->second.get());
  return ossl::x509_ptr{it->second.get()};
}

std::vector<ossl::x509_ptr> issuer_registry::find_by_name(const X509_NAME* name) const {
  std::vector<ossl::x509_ptr> out;
  std::lock_guard lock(mu_);
  for (const auto& [id, cert] : by_id_) {
    if (X509_NAME_cmp(X509_get_subject_name(cert.get()), name) != 0) continue;
    X509_up_ref(cert.get());
    out.emplace_back(cert.get());
  }
  return out;
}

std::size_t issuer_registry::size() const {
  std::lock_guard lock(mu_);
  return by_id_.size();
}

}  // namespace cbagate::identity
