#include "revocation/crl_index.hpp"

#include "revocation/checker.hpp"

#include <algorithm>
#include <ctime>
#include <numeric>
#include <system_error>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "common/openssl_error.hpp"

namespace cbagate::revocation {
namespace detail {
namespace {

bool is_pem_end_of_input(unsigned long e) {
  return e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE);
}

std::string name_of(const X509_NAME* name) {
  ossl::bio_ptr bio{BIO_new(BIO_s_mem())};
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return "?";
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

struct idp_free {
  void operator()(ISSUING_DIST_POINT* p) const noexcept { ISSUING_DIST_POINT_free(p); }
};

// CRL extensions this index understands; any other critical one makes the CRL unusable
// (RFC 5280 5.2: a CRL with an unrecognised critical extension must not be used).
bool is_handled_crl_extension(int nid) {
  return nid == NID_crl_number || nid == NID_authority_key_identifier ||
         nid == NID_issuing_distribution_point;
}

bool is_handled_entry_extension(int nid) {
  return nid == NID_crl_reason || nid == NID_invalidity_date || nid == NID_hold_instruction_code;
}

// Checks the extensions and scope; fills the scope flags. Empty string = acceptable.
std::string check_extensions(X509_CRL* crl, crl_index& out) {
  if (X509_CRL_get_ext_by_NID(crl, NID_delta_crl, -1) >= 0)
    return "delta CRLs are not supported (deltaCRLIndicator)";
  for (int i = 0; i < X509_CRL_get_ext_count(crl); ++i) {
    X509_EXTENSION* ext = X509_CRL_get_ext(crl, i);
    const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
    if (X509_EXTENSION_get_critical(ext) && !is_handled_crl_extension(nid))
      return "unsupported critical CRL extension " +
             std::string(nid != NID_undef ? OBJ_nid2sn(nid) : "(unknown OID)");
  }
  int crit = 0;
  std::unique_ptr<ISSUING_DIST_POINT, idp_free> idp{static_cast<ISSUING_DIST_POINT*>(
      X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, &crit, nullptr))};
  if (!idp && crit >= 0) return "malformed issuingDistributionPoint";
  if (idp) {
    if (idp->indirectCRL > 0) return "indirect CRLs are not supported";
    if (idp->onlysomereasons != nullptr)
      return "partitioned CRLs (onlySomeReasons) are not supported";
    if (idp->onlyattr > 0) return "attribute certificate CRLs are not supported";
    out.only_user_certs = idp->onlyuser > 0;
    out.only_ca_certs = idp->onlyCA > 0;
  }
  return {};
}

}  // namespace

std::string openssl_reason() { return ossl::error_reason(); }

std::string_view reason_name(std::uint8_t code) noexcept {
  switch (code) {
    case 0: return "unspecified";
    case 1: return "keyCompromise";
    case 2: return "cACompromise";
    case 3: return "affiliationChanged";
    case 4: return "superseded";
    case 5: return "cessationOfOperation";
    case 6: return "certificateHold";
    case 8: return "removeFromCRL";
    case 9: return "privilegeWithdrawn";
    case 10: return "aACompromise";
    default: return "revoked";
  }
}

const std::uint8_t* crl_index::find(std::string_view serial) const noexcept {
  const auto it = std::lower_bound(serials.begin(), serials.end(), serial,
                                   [](const std::string& a, std::string_view b) { return a < b; });
  if (it == serials.end() || *it != serial) return nullptr;
  return &reasons[static_cast<std::size_t>(it - serials.begin())];
}

std::optional<std::int64_t> unix_time(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm));
}

std::vector<ossl::x509_crl_ptr> parse_crls(BIO* data, std::string& err) {
  std::vector<ossl::x509_crl_ptr> out;
  ERR_clear_error();
  while (X509_CRL* raw = PEM_read_bio_X509_CRL(data, nullptr, nullptr, nullptr))
    out.emplace_back(raw);
  if (!out.empty()) {
    if (!is_pem_end_of_input(ERR_peek_last_error())) {
      err = "malformed PEM after " + std::to_string(out.size()) + " CRL(s): " + openssl_reason();
      out.clear();
      return out;
    }
    ERR_clear_error();
    return out;
  }
  const std::string pem_reason = openssl_reason();
  if (BIO_seek(data, 0) == 0) {
    if (ossl::x509_crl_ptr crl{d2i_X509_CRL_bio(data, nullptr)}) {
      out.push_back(std::move(crl));
      return out;
    }
  }
  err = "no CRL found (PEM: " + pem_reason + "; DER: " + openssl_reason() + ")";
  return out;
}

std::shared_ptr<const crl_index> index_crl(X509_CRL* crl, const identity::issuer_registry& issuers,
                                           std::string source, std::string& err) {
  auto out = std::make_shared<crl_index>();
  out->source = std::move(source);
  const X509_NAME* issuer_name = X509_CRL_get_issuer(crl);
  const auto candidates = issuers.find_by_name(issuer_name);
  if (candidates.empty()) {
    err = "issuer '" + name_of(issuer_name) + "' is not a known CA";
    return nullptr;
  }
  const X509* issuer = nullptr;
  for (const auto& c : candidates) {
    EVP_PKEY* key = X509_get0_pubkey(c.get());
    if (key != nullptr && X509_CRL_verify(crl, key) == 1) {
      issuer = c.get();
      break;
    }
  }
  ERR_clear_error();
  if (issuer == nullptr) {
    err = "bad signature: not signed by the key of '" + name_of(issuer_name) + "'";
    return nullptr;
  }
  if (std::string e = check_extensions(crl, *out); !e.empty()) {
    err = std::move(e);
    return nullptr;
  }
  out->issuer = identity::issuer_id_of(issuer);
  const auto this_update = unix_time(X509_CRL_get0_lastUpdate(crl));
  if (!this_update) {
    err = "bad thisUpdate";
    return nullptr;
  }
  out->this_update = *this_update;
  if (const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl)) {
    out->next_update = unix_time(next);
    if (!out->next_update) {
      err = "bad nextUpdate";
      return nullptr;
    }
  }
  STACK_OF(X509_REVOKED)* revoked = X509_CRL_get_REVOKED(crl);
  const int n = revoked ? sk_X509_REVOKED_num(revoked) : 0;
  std::vector<std::pair<std::string, std::uint8_t>> entries;
  entries.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    X509_REVOKED* r = sk_X509_REVOKED_value(revoked, i);
    const STACK_OF(X509_EXTENSION)* exts = X509_REVOKED_get0_extensions(r);
    for (int j = 0; j < sk_X509_EXTENSION_num(exts); ++j) {
      X509_EXTENSION* ext = sk_X509_EXTENSION_value(exts, j);
      const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(ext));
      if (X509_EXTENSION_get_critical(ext) && !is_handled_entry_extension(nid)) {
        err = "unsupported critical CRL entry extension " +
              std::string(nid != NID_undef ? OBJ_nid2sn(nid) : "(unknown OID)");
        return nullptr;
      }
    }
    std::uint8_t reason = no_reason;
    int crit = 0;
    if (auto* e = static_cast<ASN1_ENUMERATED*>(X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit,
                                                                        nullptr))) {
      const long v = ASN1_ENUMERATED_get(e);
      ASN1_ENUMERATED_free(e);
      if (v >= 0 && v <= 10) reason = static_cast<std::uint8_t>(v);
    }
    if (reason == remove_from_crl) continue;  // only meaningful in delta CRLs
    entries.emplace_back(identity::serial_octets(X509_REVOKED_get0_serialNumber(r)), reason);
  }
  std::sort(entries.begin(), entries.end());
  out->serials.reserve(entries.size());
  out->reasons.reserve(entries.size());
  for (auto& [serial, reason] : entries) {
    if (!out->serials.empty() && out->serials.back() == serial) continue;
    out->serials.push_back(std::move(serial));
    out->reasons.push_back(reason);
  }
  return out;
}

}  // namespace detail

expected<std::shared_ptr<const crl_files>> crl_files::load(
    const std::vector<std::string>& paths, const identity::issuer_registry& issuers,
    std::string* error_detail) {
  auto set = std::make_shared<detail::crl_set>();
  auto fail = [&](const std::string& path, const std::string& why) {
    if (error_detail) *error_detail = "crl '" + path + "': " + why;
    return expected<std::shared_ptr<const crl_files>>(make_error_code(errc::crl_load_failed));
  };
  for (const std::string& path : paths) {
    ERR_clear_error();
    ossl::bio_ptr bio{BIO_new_file(path.c_str(), "rb")};
    if (!bio) return fail(path, "cannot open: " + detail::openssl_reason());
    std::string err;
    auto crls = detail::parse_crls(bio.get(), err);
    if (crls.empty()) return fail(path, err);
    for (std::size_t i = 0; i < crls.size(); ++i) {
      auto idx = detail::index_crl(crls[i].get(), issuers, path, err);
      if (!idx) {
        return fail(path, crls.size() > 1 ? "CRL #" + std::to_string(i + 1) + ": " + err : err);
      }
      ++set->count;
      auto [it, inserted] = set->by_issuer.try_emplace(idx->issuer, idx);
      if (!inserted && idx->this_update > it->second->this_update) it->second = std::move(idx);
    }
  }
  auto files = std::shared_ptr<crl_files>(new crl_files());
  files->impl_ = std::move(set);
  return std::shared_ptr<const crl_files>(std::move(files));
}

std::size_t crl_files::size() const noexcept { return impl_ ? impl_->by_issuer.size() : 0; }

}  // namespace cbagate::revocation
