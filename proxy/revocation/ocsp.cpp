#include "revocation/ocsp.hpp"

#include "revocation/crl_index.hpp"

#include <memory>

#include <openssl/err.h>
#include <openssl/ocsp.h>

namespace cbagate::revocation::detail {
namespace {

using ossl::deleter;
using certid_ptr = std::unique_ptr<OCSP_CERTID, deleter<OCSP_CERTID_free>>;
using request_ptr = std::unique_ptr<OCSP_REQUEST, deleter<OCSP_REQUEST_free>>;
using response_ptr = std::unique_ptr<OCSP_RESPONSE, deleter<OCSP_RESPONSE_free>>;
using basic_ptr = std::unique_ptr<OCSP_BASICRESP, deleter<OCSP_BASICRESP_free>>;
using integer_ptr = std::unique_ptr<ASN1_INTEGER, deleter<ASN1_INTEGER_free>>;

struct shallow_stack_free {
  void operator()(STACK_OF(X509) * s) const noexcept { sk_X509_free(s); }
};

// serial content octets -> ASN1_INTEGER, through its DER encoding.
integer_ptr to_integer(std::string_view serial) {
  if (serial.empty() || serial.size() > 126) return nullptr;
  std::string der;
  der.push_back('\x02');
  der.push_back(static_cast<char>(serial.size()));
  der.append(serial);
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  return integer_ptr{d2i_ASN1_INTEGER(nullptr, &p, static_cast<long>(der.size()))};
}

certid_ptr make_cert_id(X509* issuer, std::string_view serial) {
  const integer_ptr sn = to_integer(serial);
  if (!sn) return nullptr;
  return certid_ptr{OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(issuer),
                                     X509_get0_pubkey_bitstr(issuer), sn.get())};
}

ocsp_result fail(fetch_error e, std::string message) {
  ocsp_result r;
  r.error = e;
  r.message = std::move(message);
  return r;
}

}  // namespace

std::string make_ocsp_request(X509* issuer, std::string_view serial, std::string& err) {
  certid_ptr id = make_cert_id(issuer, serial);
  request_ptr req{OCSP_REQUEST_new()};
  if (!id || !req) {
    err = "cannot build the CertID: " + openssl_reason();
    return {};
  }
  if (OCSP_request_add0_id(req.get(), id.get()) == nullptr) {
    err = "cannot build the request: " + openssl_reason();
    return {};
  }
  id.release();  // owned by the request now
  unsigned char* der = nullptr;
  const int len = i2d_OCSP_REQUEST(req.get(), &der);
  if (len <= 0) {
    err = "cannot encode the request: " + openssl_reason();
    return {};
  }
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
  OPENSSL_free(der);
  return out;
}

ocsp_result read_ocsp_response(std::string_view der, X509* issuer, std::string_view serial,
                               long skew_seconds) {
  ERR_clear_error();
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  response_ptr resp{d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size()))};
  if (!resp) return fail(fetch_error::malformed, "malformed OCSP response: " + openssl_reason());
  const int rs = OCSP_response_status(resp.get());
  if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL)
    return fail(fetch_error::other,
                std::string("responder status ") + OCSP_response_status_str(rs));
  basic_ptr basic{OCSP_response_get1_basic(resp.get())};
  if (!basic) return fail(fetch_error::malformed, "no basic OCSP response: " + openssl_reason());

  // The issuer is the only trust: it may sign itself (found in `certs`, OCSP_TRUSTOTHER), or a
  // delegated responder certificate shipped in the response must chain to it (PARTIAL_CHAIN:
  // the issuer is usually an intermediate) and, as OpenSSL's ocsp_check_issuer enforces, be
  // issued by the CertID's CA with the OCSPSigning EKU (RFC 6960 4.2.2.2). OCSP_NOEXPLICIT:
  // no other "trusted for OCSP signing" root may vouch.
  ossl::x509_store_ptr store{X509_STORE_new()};
  std::unique_ptr<STACK_OF(X509), shallow_stack_free> certs{sk_X509_new_null()};
  if (!store || !certs || X509_STORE_add_cert(store.get(), issuer) != 1 ||
      X509_STORE_set_flags(store.get(), X509_V_FLAG_PARTIAL_CHAIN) != 1 ||
      sk_X509_push(certs.get(), issuer) <= 0)
    return fail(fetch_error::other, "cannot set up verification: " + openssl_reason());
  if (OCSP_basic_verify(basic.get(), certs.get(), store.get(),
                        OCSP_TRUSTOTHER | OCSP_NOEXPLICIT) != 1)
    return fail(fetch_error::signature, "signature: " + openssl_reason());

  certid_ptr id = make_cert_id(issuer, serial);
  if (!id) return fail(fetch_error::other, "cannot build the CertID: " + openssl_reason());
  int cert_status = 0;
  int reason = -1;
  ASN1_GENERALIZEDTIME* revoked_at = nullptr;
  ASN1_GENERALIZEDTIME* this_update = nullptr;
  ASN1_GENERALIZEDTIME* next_update = nullptr;
  if (OCSP_resp_find_status(basic.get(), id.get(), &cert_status, &reason, &revoked_at,
                            &this_update, &next_update) != 1)
    return fail(fetch_error::malformed, "no answer for the certificate in the response");
  if (OCSP_check_validity(this_update, next_update, skew_seconds, -1) != 1)
    return fail(fetch_error::stale, "stale: " + openssl_reason());

  ocsp_result r;
  const auto tu = unix_time(this_update);
  if (!tu) return fail(fetch_error::malformed, "bad thisUpdate");
  r.this_update = *tu;
  if (next_update != nullptr) {
    r.next_update = unix_time(next_update);
    if (!r.next_update) return fail(fetch_error::malformed, "bad nextUpdate");
  }
  switch (cert_status) {
    case V_OCSP_CERTSTATUS_GOOD: r.st = status::good; break;
    case V_OCSP_CERTSTATUS_REVOKED:
      r.st = status::revoked;
      r.reason = reason >= 0 && reason <= 10 ? reason_name(static_cast<std::uint8_t>(reason))
                                             : std::string_view("revoked");
      break;
    default: r.st = status::unknown; r.reason = "ocsp_unknown"; break;
  }
  ERR_clear_error();
  return r;
}

}  // namespace cbagate::revocation::detail
