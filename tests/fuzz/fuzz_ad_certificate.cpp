// libFuzzer target: what Active Directory strong mapping reads of a client certificate (issue 12,
// identity/ad_certificate + directory/mapping). Every input is used twice:
// - as the value of the SID security extension (1.3.6.1.4.1.311.25.2) of an otherwise fixed
//   certificate: identity::read_sid_extension, then directory::parse_sid on the SID it yields;
// - as a whole DER certificate: identity::read_ad_facts (the AD spellings of issuer and subject,
//   SKI, thumbprint, SID extension) and read_template.
// Properties: the SID extension is either a printable SID string or an error, never both; a SID
// string that parses prints back to itself; every string meant for logs and LDAP filters has no
// control character; parse_sid/sid_to_string round-trip on the raw bytes too.
#include "directory/mapping.hpp"
#include "identity/ad_certificate.hpp"

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "fuzz_ca.hpp"

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

bool log_safe(std::string_view s) {
  for (const char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  return true;
}

// The SID string contract: parse_sid accepts only the canonical spelling, so what it accepts
// prints back unchanged, and the binary form parses back to the same bytes.
void check_sid_text(std::string_view text) {
  const auto bin = cbagate::directory::parse_sid(text);
  if (!bin) return;
  require(cbagate::directory::sid_to_string(*bin) == text);
}

void check_sid_binary(std::span<const std::uint8_t> bytes) {
  const std::string text = cbagate::directory::sid_to_string(bytes);
  if (text.empty()) return;
  require(log_safe(text));
  const auto again = cbagate::directory::parse_sid(text);
  require(again.has_value());
  require(cbagate::directory::sid_to_string(*again) == text);
}

// A certificate whose only varying part is the SID extension's value (not signed: nothing here
// checks a signature).
void with_sid_extension(const std::uint8_t* data, std::size_t size) {
  static ASN1_OBJECT* const oid = OBJ_txt2obj("1.3.6.1.4.1.311.25.2", 1);
  X509* cert = X509_new();
  ASN1_OCTET_STRING* value = ASN1_OCTET_STRING_new();
  require(cert != nullptr && value != nullptr && oid != nullptr);
  X509_set_issuer_name(cert, X509_get_subject_name(fuzz::ca().cert));
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 2);
  require(ASN1_OCTET_STRING_set(value, data, static_cast<int>(size)) == 1);
  X509_EXTENSION* ext = X509_EXTENSION_create_by_OBJ(nullptr, oid, 0, value);
  require(ext != nullptr && X509_add_ext(cert, ext, -1) == 1);
  X509_EXTENSION_free(ext);
  ASN1_OCTET_STRING_free(value);

  const cbagate::identity::sid_extension sid = cbagate::identity::read_sid_extension(cert);
  require(sid.present);
  require(sid.sid.empty() != sid.error.empty());  // exactly one of the two
  require(log_safe(sid.sid) && log_safe(sid.error));
  require(sid.sid.size() <= 184);
  check_sid_text(sid.sid);

  const cbagate::identity::ad_facts facts = cbagate::identity::read_ad_facts(cert);
  require(facts.sid == sid.sid && facts.sid_error == sid.error);
  X509_free(cert);
}

void as_certificate(const std::uint8_t* data, std::size_t size) {
  if (size > static_cast<std::size_t>(LONG_MAX)) return;
  const unsigned char* p = data;
  X509* cert = d2i_X509(nullptr, &p, static_cast<long>(size));
  if (cert == nullptr) return;
  const cbagate::identity::ad_facts f = cbagate::identity::read_ad_facts(cert);
  for (const std::string* s : {&f.issuer_dn, &f.subject_dn, &f.ski, &f.sha1, &f.sid, &f.sid_error})
    require(log_safe(*s));
  require(f.sid.empty() || f.sid_error.empty());
  check_sid_text(f.sid);
  const cbagate::identity::template_info t = cbagate::identity::read_template(cert);
  require(log_safe(t.error));
  X509_free(cert);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 1 << 16) return 0;  // a certificate extension is far smaller
  with_sid_extension(data, size);
  as_certificate(data, size);
  check_sid_text(std::string_view(reinterpret_cast<const char*>(data), size));
  check_sid_binary({data, size});
  return 0;
}
