#include "identity/upn.hpp"

#include <climits>
#include <cstdint>
#include <cstdio>
#include <memory>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "common/openssl_ptr.hpp"

namespace cbagate::identity {
namespace {

upn_result reject(rejection r, std::string detail) {
  upn_result out;
  out.reason = r;
  out.detail = std::move(detail);
  return out;
}

std::string code_point_name(std::uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
  return buf;
}

// Decodes one well-formed UTF-8 sequence at s[i] (RFC 3629 section 4: no overlong forms, no
// surrogates, nothing above U+10FFFF). Returns its length, 0 when malformed.
std::size_t decode_utf8(std::string_view s, std::size_t i, std::uint32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  std::uint32_t min = 0;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2, min = 0x80, cp = b0 & 0x1Fu;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, min = 0x800, cp = b0 & 0x0Fu;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, min = 0x10000, cp = b0 & 0x07u;
  } else {
    return 0;  // continuation byte in lead position, or 0xF8..0xFF
  }
  if (s.size() - i < len) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

bool is_control(std::uint32_t cp) { return cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F); }

// Unicode White_Space (PropList.txt) plus invisible format characters (zero-width, bidi
// controls, BOM, soft hyphen): none has a place in a UPN, and each can make two different UPNs
// look identical in a log line or an admin's console ("Trojan Source", CVE-2021-42574).
bool is_space_or_invisible(std::uint32_t cp) {
  if (cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0xAD || cp == 0x1680 || cp == 0x180E)
    return true;
  if (cp >= 0x2000 && cp <= 0x200F) return true;  // spaces, ZWSP, ZWNJ, ZWJ, LRM, RLM
  if (cp >= 0x2028 && cp <= 0x202F) return true;  // line/paragraph separator, bidi, NNBSP
  if (cp >= 0x205F && cp <= 0x2064) return true;  // MMSP, word joiner, invisible operators
  if (cp >= 0x2066 && cp <= 0x2069) return true;  // bidi isolates
  return cp == 0x3000 || cp == 0xFEFF;
}

std::string_view bytes_of(const ASN1_STRING* s) {
  const int len = ASN1_STRING_length(s);
  if (len <= 0) return {};
  return {reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<std::size_t>(len)};
}

const char* asn1_type_name(int type) {
  switch (type) {
    case V_ASN1_BMPSTRING: return "BMPString";
    case V_ASN1_IA5STRING: return "IA5String";
    case V_ASN1_PRINTABLESTRING: return "PrintableString";
    case V_ASN1_T61STRING: return "TeletexString";
    case V_ASN1_UNIVERSALSTRING: return "UniversalString";
    case V_ASN1_VISIBLESTRING: return "VisibleString";
    case V_ASN1_OCTET_STRING: return "OCTET STRING";
    default: return nullptr;
  }
}

std::string not_utf8string(const char* where, int type) {
  std::string d = std::string(where) + " is ";
  if (const char* name = asn1_type_name(type)) {
    d += name;
  } else {
    d += "ASN.1 type " + std::to_string(type);
  }
  return d + ", not UTF8String";
}

upn_result accept_value(std::string_view value, const upn_options& options, const char* where) {
  std::string detail;
  if (check_upn(value, options.max_length, detail) != rejection::none)
    return reject(rejection::bad_upn_encoding, std::string(where) + ": " + detail);
  upn_result out;
  out.reason = rejection::none;
  out.upn.assign(value);
  return out;
}

// SAN otherName UPNs. `found` is false when the SAN holds none, so the caller may try the
// subject; any UPN present, good or bad, ends the search.
upn_result from_san(const X509* leaf, const upn_options& options, bool& found) {
  found = false;
  int crit = -1;
  ossl::general_names_ptr names{
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(leaf, NID_subject_alt_name, &crit, nullptr))};
  if (!names) {
    if (crit == -1) return reject(rejection::no_upn, "no subjectAltName extension");
    found = true;  // RFC 5280 4.2: an extension appears at most once; never guess which counts
    if (crit == -2) return reject(rejection::invalid, "more than one subjectAltName extension");
    return reject(rejection::invalid, "subjectAltName extension does not decode");
  }
  const ASN1_TYPE* value = nullptr;
  int count = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn == nullptr || gn->type != GEN_OTHERNAME || gn->d.otherName == nullptr) continue;
    if (OBJ_obj2nid(gn->d.otherName->type_id) != NID_ms_upn) continue;
    ++count;
    value = gn->d.otherName->value;
  }
  if (count == 0) return reject(rejection::no_upn, "no UPN otherName in subjectAltName");
  found = true;
  if (count > 1)
    return reject(rejection::multi_upn,
                  std::to_string(count) + " UPN otherNames in subjectAltName, exactly one allowed");
  if (value == nullptr) return reject(rejection::bad_upn_encoding, "SAN UPN has no value");
  // Windows and the FreeRDP/Node readers take UTF8String only; a BMPString or IA5String UPN is
  // someone else's encoder, and converting it would make two spellings of one name.
  if (value->type != V_ASN1_UTF8STRING)
    return reject(rejection::bad_upn_encoding, not_utf8string("SAN UPN", value->type));
  return accept_value(bytes_of(value->value.utf8string), options, "SAN UPN");
}

upn_result from_subject(const X509* leaf, const upn_options& options) {
  const X509_NAME* subject = X509_get_subject_name(leaf);
  if (subject == nullptr) return reject(rejection::no_upn, "no subject");
  int count = 0;
  const X509_NAME_ENTRY* cn = nullptr;
  for (int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1); i >= 0;
       i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) {
    ++count;
    cn = X509_NAME_get_entry(subject, i);
  }
  if (count == 0) return reject(rejection::no_upn, "no subject CN");
  if (count > 1)
    return reject(rejection::no_upn,
                  "subject has " + std::to_string(count) + " CNs, a subject UPN needs exactly one");
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(cn);
  if (data == nullptr || bytes_of(data).find('@') == std::string_view::npos)
    return reject(rejection::no_upn, "subject CN is not of the form local@domain");
  if (ASN1_STRING_type(data) != V_ASN1_UTF8STRING)
    return reject(rejection::bad_upn_encoding,
                  not_utf8string("subject CN", ASN1_STRING_type(data)));
  return accept_value(bytes_of(data), options, "subject CN");
}

}  // namespace

rejection check_upn(std::string_view upn, std::size_t max_length, std::string& detail) {
  if (upn.empty()) {
    detail = "UPN is empty";
    return rejection::bad_upn_encoding;
  }
  if (upn.size() > max_length) {
    detail = "UPN is " + std::to_string(upn.size()) + " bytes, limit " + std::to_string(max_length);
    return rejection::bad_upn_encoding;
  }
  std::size_t at = std::string_view::npos;
  int ats = 0;
  for (std::size_t i = 0; i < upn.size();) {
    std::uint32_t cp = 0;
    const std::size_t len = decode_utf8(upn, i, cp);
    if (len == 0) {
      detail = "UPN is not valid UTF-8 at byte " + std::to_string(i);
      return rejection::bad_upn_encoding;
    }
    if (is_control(cp)) {
      detail = "UPN has control character " + code_point_name(cp) + " at byte " + std::to_string(i);
      return rejection::bad_upn_encoding;
    }
    if (is_space_or_invisible(cp)) {
      detail = "UPN has whitespace or invisible character " + code_point_name(cp) + " at byte " +
               std::to_string(i);
      return rejection::bad_upn_encoding;
    }
    if (cp == '@') {
      ++ats;
      at = i;
    }
    i += len;
  }
  if (ats != 1) {
    detail = "UPN must have exactly one '@', found " + std::to_string(ats);
    return rejection::bad_upn_encoding;
  }
  if (at == 0 || at + 1 == upn.size()) {
    detail = at == 0 ? "UPN has an empty local part" : "UPN has an empty domain";
    return rejection::bad_upn_encoding;
  }
  detail.clear();
  return rejection::none;
}

upn_result extract_upn(const X509* leaf, const upn_options& options) {
  if (leaf == nullptr) return reject(rejection::no_certificate, "no certificate");
  // Decoding may queue OpenSSL errors; leave this thread's queue as we found it (the TLS
  // handshake that calls us reads the same queue).
  ERR_set_mark();
  upn_result out = reject(rejection::no_upn, "no UPN source configured");
  bool found = false;
  if (options.from_san) out = from_san(leaf, options, found);
  if (!found && options.from_subject) {
    upn_result subject = from_subject(leaf, options);
    if (options.from_san && subject.reason == rejection::no_upn)
      subject.detail = out.detail + "; " + subject.detail;
    out = std::move(subject);
  }
  ERR_pop_to_mark();
  return out;
}

upn_result extract_upn_der(std::span<const unsigned char> der, const upn_options& options) {
  if (der.empty() || der.size() > static_cast<std::size_t>(LONG_MAX))
    return reject(rejection::invalid, "certificate DER does not parse");
  ERR_set_mark();
  const unsigned char* p = der.data();
  ossl::x509_ptr cert{d2i_X509(nullptr, &p, static_cast<long>(der.size()))};
  ERR_pop_to_mark();
  if (!cert) return reject(rejection::invalid, "certificate DER does not parse");
  return extract_upn(cert.get(), options);
}

}  // namespace cbagate::identity
