#include "identity/ad_certificate.hpp"

#include <climits>
#include <memory>

#include <openssl/asn1.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "common/openssl_ptr.hpp"

namespace cbagate::identity {
namespace {

// Created once, read-only afterwards (OBJ_cmp only reads): thread-safe statics.
const ASN1_OBJECT* object(const char* dotted) {
  return OBJ_txt2obj(dotted, 1);  // leaked on purpose: process lifetime, one per OID
}
const ASN1_OBJECT* template_v2_oid() {
  static const ASN1_OBJECT* o = object("1.3.6.1.4.1.311.21.7");
  return o;
}
const ASN1_OBJECT* template_v1_oid() {
  static const ASN1_OBJECT* o = object("1.3.6.1.4.1.311.20.2");
  return o;
}
const ASN1_OBJECT* sid_extension_oid() {
  static const ASN1_OBJECT* o = object("1.3.6.1.4.1.311.25.2");
  return o;
}
const ASN1_OBJECT* sid_othername_oid() {
  static const ASN1_OBJECT* o = object("1.3.6.1.4.1.311.25.2.1");
  return o;
}

// The keywords of Windows' CertNameToStr ([MS-OSCO] table); anything else is "OID.n.n.n".
std::string keyword(const ASN1_OBJECT* type) {
  switch (OBJ_obj2nid(type)) {
    case NID_commonName: return "CN";
    case NID_organizationName: return "O";
    case NID_organizationalUnitName: return "OU";
    case NID_countryName: return "C";
    case NID_localityName: return "L";
    case NID_stateOrProvinceName: return "S";
    case NID_streetAddress: return "STREET";
    case NID_domainComponent: return "DC";
    case NID_pkcs9_emailAddress: return "E";
    case NID_title: return "T";
    case NID_givenName: return "G";
    case NID_initials: return "I";
    case NID_surname: return "SN";
    case NID_serialNumber: return "SERIALNUMBER";
    default: break;
  }
  char buf[128];
  const int n = OBJ_obj2txt(buf, sizeof buf, type, 1);
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf) return "OID.?";
  return "OID." + std::string(buf, static_cast<std::size_t>(n));
}

void append_hex_byte(std::string& out, unsigned char c) {
  static constexpr char hex[] = "0123456789ABCDEF";
  out += hex[c >> 4];
  out += hex[c & 0x0F];
}

std::string value_text(const ASN1_STRING* data) {
  unsigned char* utf8 = nullptr;
  const int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return "?";
  std::string raw(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  bool quote = raw.empty() ? false : (raw.front() == ' ' || raw.back() == ' ');
  for (const char c : raw)
    if (c == ',' || c == '+' || c == '=' || c == '"' || c == ';' || c == '<' || c == '>' ||
        c == '#' || c == '\n' || c == '\r')
      quote = true;
  std::string out;
  out.reserve(raw.size() + 2);
  if (quote) out += '"';
  for (const char c : raw) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      out += '\\';
      append_hex_byte(out, u);
    } else if (c == '"' && quote) {
      out += "\"\"";
    } else {
      out += c;
    }
  }
  if (quote) out += '"';
  return out;
}

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool is_dotted_oid(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  bool dot = false;
  for (const char c : s) {
    if (c == '.') {
      if (dot) return false;
      dot = true;
    } else if (c >= '0' && c <= '9') {
      dot = false;
    } else {
      return false;
    }
  }
  return s.find('.') != std::string_view::npos;
}

struct asn1_type_stack_free {
  void operator()(STACK_OF(ASN1_TYPE) * s) const noexcept { sk_ASN1_TYPE_pop_free(s, ASN1_TYPE_free); }
};
struct asn1_type_free {
  void operator()(ASN1_TYPE* t) const noexcept { ASN1_TYPE_free(t); }
};

// The one extension of type `oid`: nullptr when absent; `repeated` when there are two.
X509_EXTENSION* single_extension(const X509* x, const ASN1_OBJECT* oid, bool& repeated) {
  repeated = false;
  const int idx = X509_get_ext_by_OBJ(x, oid, -1);
  if (idx < 0) return nullptr;
  if (X509_get_ext_by_OBJ(x, oid, idx) >= 0) repeated = true;
  return X509_get_ext(x, idx);
}

std::string printable_or_empty(std::string_view s) {
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) return {};
  }
  return std::string(s);
}

}  // namespace

std::string ad_dn(const X509_NAME* name) {
  std::string out;
  if (name == nullptr) return out;
  const int count = X509_NAME_entry_count(name);
  int previous_set = -1;
  for (int i = 0; i < count; ++i) {
    const X509_NAME_ENTRY* e = X509_NAME_get_entry(name, i);
    const int set = X509_NAME_ENTRY_set(e);
    if (i > 0) out += set == previous_set ? '+' : ',';
    previous_set = set;
    out += keyword(X509_NAME_ENTRY_get_object(e));
    out += '=';
    out += value_text(X509_NAME_ENTRY_get_data(e));
  }
  return out;
}

template_info read_template(const X509* leaf) {
  template_info t;
  ERR_set_mark();
  bool repeated = false;
  if (X509_EXTENSION* ext = single_extension(leaf, template_v2_oid(), repeated)) {
    // CertificateTemplate ::= SEQUENCE { templateID OID, major INTEGER OPTIONAL, minor OPTIONAL }
    const ASN1_OCTET_STRING* os = X509_EXTENSION_get_data(ext);
    const unsigned char* p = ASN1_STRING_get0_data(os);
    const long len = ASN1_STRING_length(os);
    std::unique_ptr<STACK_OF(ASN1_TYPE), asn1_type_stack_free> seq{
        d2i_ASN1_SEQUENCE_ANY(nullptr, &p, len)};
    if (repeated) {
      t.error = "the certificate template extension appears twice";
    } else if (!seq || p != ASN1_STRING_get0_data(os) + len || sk_ASN1_TYPE_num(seq.get()) < 1 ||
               sk_ASN1_TYPE_num(seq.get()) > 3 ||
               sk_ASN1_TYPE_value(seq.get(), 0)->type != V_ASN1_OBJECT) {
      t.error = "the certificate template extension (1.3.6.1.4.1.311.21.7) does not decode";
    } else {
      char buf[128];
      const int n = OBJ_obj2txt(buf, sizeof buf, sk_ASN1_TYPE_value(seq.get(), 0)->value.object, 1);
      if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf)
        t.error = "the certificate template OID is too long";
      else
        t.oid.assign(buf, static_cast<std::size_t>(n));
    }
  }
  if (X509_EXTENSION* ext = single_extension(leaf, template_v1_oid(), repeated)) {
    // A BMPString with the template's name ("User"); other string types are read as UTF-8.
    const ASN1_OCTET_STRING* os = X509_EXTENSION_get_data(ext);
    const unsigned char* p = ASN1_STRING_get0_data(os);
    const long len = ASN1_STRING_length(os);
    std::unique_ptr<ASN1_TYPE, asn1_type_free> v{d2i_ASN1_TYPE(nullptr, &p, len)};
    unsigned char* utf8 = nullptr;
    int n = -1;
    if (!repeated && v && p == ASN1_STRING_get0_data(os) + len &&
        (v->type == V_ASN1_BMPSTRING || v->type == V_ASN1_UTF8STRING ||
         v->type == V_ASN1_PRINTABLESTRING || v->type == V_ASN1_IA5STRING))
      n = ASN1_STRING_to_UTF8(&utf8, v->value.asn1_string);
    if (n > 0) {
      t.name = printable_or_empty(
          std::string_view(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n)));
      OPENSSL_free(utf8);
    }
    if (t.name.empty() && t.error.empty())
      t.error = repeated ? "the certificate template name extension appears twice"
                         : "the certificate template name extension (1.3.6.1.4.1.311.20.2) does "
                           "not decode";
  }
  ERR_pop_to_mark();
  return t;
}

bool template_allowed(const template_info& t, std::span<const std::string> allowed) {
  if (!t.error.empty()) return false;
  for (const std::string& a : allowed) {
    if (is_dotted_oid(a)) {
      if (!t.oid.empty() && t.oid == a) return true;
    } else if (!t.name.empty() && lower_ascii(t.name) == lower_ascii(a)) {
      return true;
    }
  }
  return false;
}

bool upn_suffix_allowed(std::string_view upn, std::span<const std::string> suffixes) {
  const std::size_t at = upn.rfind('@');
  if (at == std::string_view::npos) return false;
  const std::string domain = lower_ascii(upn.substr(at + 1));
  for (const std::string& s : suffixes)
    if (!s.empty() && lower_ascii(s) == domain) return true;
  return false;
}

sid_extension read_sid_extension(const X509* leaf) {
  sid_extension out;
  ERR_set_mark();
  bool repeated = false;
  X509_EXTENSION* ext = single_extension(leaf, sid_extension_oid(), repeated);
  if (ext == nullptr) {
    ERR_pop_to_mark();
    return out;
  }
  out.present = true;
  const ASN1_OCTET_STRING* os = X509_EXTENSION_get_data(ext);
  const unsigned char* p = ASN1_STRING_get0_data(os);
  const long len = ASN1_STRING_length(os);
  ossl::general_names_ptr gns{d2i_GENERAL_NAMES(nullptr, &p, len)};
  if (repeated) {
    out.error = "the SID extension appears twice";
  } else if (!gns || p != ASN1_STRING_get0_data(os) + len) {
    out.error = "the SID extension does not decode as GeneralNames";
  } else if (sk_GENERAL_NAME_num(gns.get()) != 1) {
    out.error = "the SID extension holds " + std::to_string(sk_GENERAL_NAME_num(gns.get())) +
                " names, exactly one expected";
  } else {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(gns.get(), 0);
    if (gn->type != GEN_OTHERNAME || gn->d.otherName == nullptr ||
        OBJ_cmp(gn->d.otherName->type_id, sid_othername_oid()) != 0) {
      out.error = "the SID extension's name is not an otherName 1.3.6.1.4.1.311.25.2.1";
    } else if (gn->d.otherName->value == nullptr ||
               gn->d.otherName->value->type != V_ASN1_OCTET_STRING) {
      out.error = "the SID extension's value is not an OCTET STRING";
    } else {
      const ASN1_OCTET_STRING* v = gn->d.otherName->value->value.octet_string;
      const std::string_view sid(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                                 static_cast<std::size_t>(ASN1_STRING_length(v)));
      out.sid = printable_or_empty(sid);
      if (out.sid.empty() || out.sid.size() > 184) {
        out.sid.clear();
        out.error = "the SID extension's value is not a printable SID string";
      }
    }
  }
  ERR_pop_to_mark();
  return out;
}

std::string hex_upper(std::span<const unsigned char> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const unsigned char b : bytes) append_hex_byte(out, b);
  return out;
}

ad_facts read_ad_facts(const X509* leaf) {
  ad_facts f;
  if (leaf == nullptr) return f;
  ERR_set_mark();
  f.issuer_dn = ad_dn(X509_get_issuer_name(leaf));
  f.subject_dn = ad_dn(X509_get_subject_name(leaf));
  if (const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(const_cast<X509*>(leaf)))
    f.ski = hex_upper({ASN1_STRING_get0_data(ski), static_cast<std::size_t>(ASN1_STRING_length(ski))});
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(leaf, EVP_sha1(), md, &n) == 1) f.sha1 = hex_upper({md, n});
  ERR_pop_to_mark();
  sid_extension sid = read_sid_extension(leaf);
  f.sid = std::move(sid.sid);
  f.sid_error = std::move(sid.error);
  return f;
}

std::optional<issuer_id> issuer_id_of_der(std::span<const unsigned char> der) {
  if (der.empty() || der.size() > static_cast<std::size_t>(LONG_MAX)) return std::nullopt;
  ERR_set_mark();
  const unsigned char* p = der.data();
  ossl::x509_ptr x{d2i_X509(nullptr, &p, static_cast<long>(der.size()))};
  ERR_pop_to_mark();
  if (!x) return std::nullopt;
  return issuer_id_of(x.get());
}

bool same_ca(const X509* a, const X509* b) {
  if (a == nullptr || b == nullptr) return false;
  if (X509_NAME_cmp(X509_get_subject_name(a), X509_get_subject_name(b)) != 0) return false;
  const EVP_PKEY* ka = X509_get0_pubkey(a);
  const EVP_PKEY* kb = X509_get0_pubkey(b);
  return ka != nullptr && kb != nullptr && EVP_PKEY_eq(ka, kb) == 1;
}

}  // namespace cbagate::identity
