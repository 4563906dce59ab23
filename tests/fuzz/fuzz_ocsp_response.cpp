// libFuzzer target: OCSP response reading (revocation/ocsp: client-certificate checks and the
// server's own staple). The first byte picks the mode: even = the bytes as a DER OCSPResponse,
// checked against the fuzz CA (stops at the signature); odd = the SingleResponses the fuzzer
// wrote (status, reason, times) are re-issued for (fuzz CA, serial 0x2A) and signed by the fuzz
// CA, so the status, time and reason handling runs on fuzzer-chosen content.
// Properties: no crash; an answer without error has a status, and a revoked one a reason.
#include "fuzz_ca.hpp"
#include "revocation/ocsp.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include <openssl/err.h>
#include <openssl/ocsp.h>

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

constexpr std::string_view serial = "\x2a";

// The fuzzer's SingleResponses, re-issued for (fuzz CA, serial) and signed by the fuzz CA.
std::string rebuild(std::string_view der) {
  const auto* p = reinterpret_cast<const unsigned char*>(der.data());
  std::unique_ptr<OCSP_RESPONSE, decltype(&OCSP_RESPONSE_free)> resp{
      d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())), OCSP_RESPONSE_free};
  if (!resp) return {};
  std::unique_ptr<OCSP_BASICRESP, decltype(&OCSP_BASICRESP_free)> in{
      OCSP_response_get1_basic(resp.get()), OCSP_BASICRESP_free};
  if (!in) return {};
  std::unique_ptr<OCSP_BASICRESP, decltype(&OCSP_BASICRESP_free)> out{OCSP_BASICRESP_new(),
                                                                      OCSP_BASICRESP_free};
  std::unique_ptr<ASN1_INTEGER, decltype(&ASN1_INTEGER_free)> sn{ASN1_INTEGER_new(),
                                                                 ASN1_INTEGER_free};
  ASN1_INTEGER_set(sn.get(), 0x2a);
  for (int i = 0; i < OCSP_resp_count(in.get()) && i < 8; ++i) {
    OCSP_SINGLERESP* single = OCSP_resp_get0(in.get(), i);
    int reason = -1;
    ASN1_GENERALIZEDTIME *revoked = nullptr, *this_update = nullptr, *next_update = nullptr;
    const int status = OCSP_single_get0_status(single, &reason, &revoked, &this_update, &next_update);
    if (status < 0 || !this_update) continue;
    OCSP_CERTID* id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(fuzz::ca().cert),
                                       X509_get0_pubkey_bitstr(fuzz::ca().cert), sn.get());
    if (!id) continue;
    // The reason only goes with a revocation time (OpenSSL's rule when building).
    OCSP_basic_add1_status(out.get(), id, status, revoked ? reason : -1, revoked, this_update,
                           next_update);
    OCSP_CERTID_free(id);
  }
  if (OCSP_basic_sign(out.get(), fuzz::ca().cert, fuzz::ca().key, EVP_sha256(), nullptr,
                      OCSP_NOCERTS) != 1)
    return {};
  std::unique_ptr<OCSP_RESPONSE, decltype(&OCSP_RESPONSE_free)> signed_resp{
      OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, out.get()), OCSP_RESPONSE_free};
  unsigned char* buf = nullptr;
  const int n = signed_resp ? i2d_OCSP_RESPONSE(signed_resp.get(), &buf) : -1;
  if (n <= 0) return {};
  std::string bytes(reinterpret_cast<const char*>(buf), static_cast<std::size_t>(n));
  OPENSSL_free(buf);
  return bytes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > (1u << 16)) return 0;
  std::string_view der(reinterpret_cast<const char*>(data + 1), size - 1);
  std::string rebuilt;
  if ((data[0] & 1) != 0) {
    rebuilt = rebuild(der);
    ERR_clear_error();
    if (rebuilt.empty()) return 0;
    der = rebuilt;
  }
  const auto r = cbagate::revocation::detail::read_ocsp_response(der, fuzz::ca().cert, serial, 300);
  using cbagate::revocation::status;
  if (r.error == cbagate::revocation::detail::fetch_error::none) {
    if (r.st == status::revoked) require(!r.reason.empty());
    if (r.next_update) require(true);
  } else {
    require(!r.message.empty());
  }
  ERR_clear_error();
  return 0;
}
