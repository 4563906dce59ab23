#include "negotiate.hpp"

#include "eas.hpp"  // base64_decode

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>

namespace cbagate::mock {
namespace {

// RAII for the GSSAPI handles used here.
struct name_handle {
  gss_name_t h = GSS_C_NO_NAME;
  name_handle() = default;
  name_handle(const name_handle&) = delete;
  name_handle& operator=(const name_handle&) = delete;
  ~name_handle() {
    OM_uint32 m = 0;
    if (h != GSS_C_NO_NAME) gss_release_name(&m, &h);
  }
};
struct ctx_handle {
  gss_ctx_id_t h = GSS_C_NO_CONTEXT;
  ctx_handle() = default;
  ctx_handle(const ctx_handle&) = delete;
  ctx_handle& operator=(const ctx_handle&) = delete;
  ~ctx_handle() {
    OM_uint32 m = 0;
    if (h != GSS_C_NO_CONTEXT) gss_delete_sec_context(&m, &h, GSS_C_NO_BUFFER);
  }
};
struct cred_handle {
  gss_cred_id_t h = GSS_C_NO_CREDENTIAL;
  cred_handle() = default;
  cred_handle(const cred_handle&) = delete;
  cred_handle& operator=(const cred_handle&) = delete;
  ~cred_handle() {
    OM_uint32 m = 0;
    if (h != GSS_C_NO_CREDENTIAL) gss_release_cred(&m, &h);
  }
};
struct buffer_handle {
  gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
  buffer_handle() = default;
  buffer_handle(const buffer_handle&) = delete;
  buffer_handle& operator=(const buffer_handle&) = delete;
  ~buffer_handle() {
    OM_uint32 m = 0;
    gss_release_buffer(&m, &b);
  }
  [[nodiscard]] std::string str() const {
    return b.value == nullptr ? std::string{} : std::string(static_cast<const char*>(b.value), b.length);
  }
};

std::string status_text(OM_uint32 code, int type) {
  std::string out;
  OM_uint32 more = 0;
  do {
    OM_uint32 m = 0;
    buffer_handle t;
    if (GSS_ERROR(gss_display_status(&m, code, type, GSS_C_NO_OID, &more, &t.b))) break;
    if (!out.empty()) out += "; ";
    out += t.str();
  } while (more != 0);
  return out;
}

// "gss_accept_sec_context: major 0x000d0000 (Unspecified GSS failure...), minor ... (text)".
std::string gss_error(const char* what, OM_uint32 major, OM_uint32 minor) {
  char code[32];
  std::snprintf(code, sizeof code, "0x%08x", major);
  std::string out = std::string(what) + ": major " + code + " (" +
                    status_text(major, GSS_C_GSS_CODE) + ")";
  if (minor != 0) {
    out += ", minor " + std::to_string(minor) + " (" + status_text(minor, GSS_C_MECH_CODE) + ")";
  }
  return out;
}

constexpr std::string_view b64_alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// DER of the OIDs (without tag and length).
constexpr std::array<unsigned char, 6> spnego_oid{0x2b, 0x06, 0x01, 0x05, 0x05, 0x02};
constexpr std::array<unsigned char, 9> krb5_oid{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02};

bool oid_is(gss_const_OID oid, const unsigned char* der, std::size_t n) {
  return oid != GSS_C_NO_OID && oid->length == n && std::memcmp(oid->elements, der, n) == 0;
}

}  // namespace

std::vector<std::string> flag_names(std::uint32_t flags) {
  static constexpr std::pair<std::uint32_t, const char*> names[] = {
      {GSS_C_DELEG_FLAG, "deleg"},       {GSS_C_MUTUAL_FLAG, "mutual"},
      {GSS_C_REPLAY_FLAG, "replay"},     {GSS_C_SEQUENCE_FLAG, "sequence"},
      {GSS_C_CONF_FLAG, "conf"},         {GSS_C_INTEG_FLAG, "integ"},
      {GSS_C_ANON_FLAG, "anon"},         {GSS_C_PROT_READY_FLAG, "prot_ready"},
      {GSS_C_TRANS_FLAG, "trans"},       {GSS_C_DELEG_POLICY_FLAG, "deleg_policy"},
      {GSS_C_CHANNEL_BOUND_FLAG, "channel_bound"},
  };
  std::vector<std::string> out;
  for (const auto& [bit, name] : names) {
    if ((flags & bit) != 0) out.emplace_back(name);
  }
  return out;
}

std::optional<std::string_view> negotiate_token(std::string_view v) {
  constexpr std::string_view scheme = "negotiate";
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  if (v.size() < scheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(v[i])) != scheme[i]) return std::nullopt;
  }
  v.remove_prefix(scheme.size());
  if (!v.empty() && v.front() != ' ' && v.front() != '\t') return std::nullopt;  // "NegotiateX"
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    auto v = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16 |
             static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8 |
             static_cast<unsigned char>(in[i + 2]);
    out += b64_alphabet[(v >> 18) & 63];
    out += b64_alphabet[(v >> 12) & 63];
    out += b64_alphabet[(v >> 6) & 63];
    out += b64_alphabet[v & 63];
  }
  if (i < in.size()) {
    auto v = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    out += b64_alphabet[(v >> 18) & 63];
    out += b64_alphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? b64_alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string token_mech(std::string_view t) {
  // [APPLICATION 0] IMPLICIT SEQUENCE { thisMech OID, ... }: 0x60 len 0x06 oidlen oid.
  auto u = [&](std::size_t i) { return static_cast<unsigned char>(t[i]); };
  if (t.size() < 4 || u(0) != 0x60) return "unknown";
  std::size_t i = 1;
  if ((u(i) & 0x80) != 0) {
    i += 1 + (u(i) & 0x7fU);
  } else {
    ++i;
  }
  if (i + 2 > t.size() || u(i) != 0x06) return "unknown";
  std::size_t n = u(i + 1);
  i += 2;
  if (i + n > t.size()) return "unknown";
  auto oid = t.substr(i, n);
  auto same = [&](const auto& der) {
    return oid.size() == der.size() && std::memcmp(oid.data(), der.data(), der.size()) == 0;
  };
  if (same(spnego_oid)) return "spnego";
  if (same(krb5_oid)) return "krb5";
  return "unknown";
}

std::vector<unsigned char> tls_server_end_point(X509* cert) {
  if (cert == nullptr) return {};
  int md_nid = NID_undef;
  int pk_nid = NID_undef;
  if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid) == 0) md_nid = NID_undef;
  const EVP_MD* md = nullptr;
  if (md_nid == NID_undef || md_nid == NID_md5 || md_nid == NID_sha1) {
    md = EVP_sha256();
  } else {
    md = EVP_get_digestbynid(md_nid);
    if (md == nullptr) md = EVP_sha256();
  }
  std::vector<unsigned char> out(EVP_MAX_MD_SIZE);
  unsigned len = 0;
  if (X509_digest(cert, md, out.data(), &len) != 1) return {};
  out.resize(len);
  return out;
}

struct negotiate_acceptor::impl {
  cred_handle cred;
};

negotiate_acceptor::negotiate_acceptor(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
negotiate_acceptor::~negotiate_acceptor() = default;

std::unique_ptr<negotiate_acceptor> negotiate_acceptor::create(const std::string& keytab,
                                                               const std::string& principal,
                                                               const std::string& rcache,
                                                               std::string& error) {
  OM_uint32 minor = 0;
  name_handle name;
  if (!principal.empty()) {
    gss_buffer_desc b{principal.size(), const_cast<char*>(principal.data())};
    // "HTTP@exchange.lab.test" is host-based; "HTTP/exchange.lab.test[@REALM]" a principal.
    bool hostbased = principal.find('/') == std::string::npos;
    OM_uint32 major = gss_import_name(
        &minor, &b, hostbased ? GSS_C_NT_HOSTBASED_SERVICE : GSS_KRB5_NT_PRINCIPAL_NAME, &name.h);
    if (GSS_ERROR(major)) {
      error = gss_error("gss_import_name", major, minor);
      return nullptr;
    }
  }
  std::array<gss_key_value_element_desc, 2> elements{};
  OM_uint32 count = 0;
  elements[count++] = {"keytab", keytab.c_str()};
  if (!rcache.empty()) elements[count++] = {"rcache", rcache.c_str()};
  gss_key_value_set_desc store{count, elements.data()};
  auto p = std::make_unique<impl>();
  OM_uint32 major = gss_acquire_cred_from(&minor, name.h, GSS_C_INDEFINITE, GSS_C_NO_OID_SET,
                                          GSS_C_ACCEPT, &store, &p->cred.h, nullptr, nullptr);
  if (GSS_ERROR(major)) {
    error = gss_error("gss_acquire_cred_from(keytab)", major, minor);
    return nullptr;
  }
  return std::unique_ptr<negotiate_acceptor>(new negotiate_acceptor(std::move(p)));
}

// Acceptor-side gss_accept_sec_context does no network I/O: it decrypts the AP-REQ with a key
// from the local keytab and records the authenticator in the (local file or disabled) replay
// cache, in well under a millisecond. The mock therefore calls it on the I/O thread; the proxy's
// initiator side (which talks to the KDC) is the one that needs a worker pool.
negotiate_outcome negotiate_acceptor::accept(std::string_view base64_token,
                                             const std::vector<unsigned char>* cb_hash,
                                             bool require_binding) const {
  negotiate_outcome out;
  auto raw = base64_decode(base64_token);
  if (!raw || raw->empty()) {
    out.error = "the Negotiate token is not base64 (or empty)";
    out.mech = "unknown";
    return out;
  }
  out.mech = token_mech(*raw);

  std::string app_data;
  gss_channel_bindings_struct cb{};
  gss_channel_bindings_t bindings = GSS_C_NO_CHANNEL_BINDINGS;
  if (cb_hash != nullptr && !cb_hash->empty()) {
    app_data = "tls-server-end-point:";
    app_data.append(reinterpret_cast<const char*>(cb_hash->data()), cb_hash->size());
    cb.initiator_addrtype = GSS_C_AF_UNSPEC;
    cb.acceptor_addrtype = GSS_C_AF_UNSPEC;
    cb.application_data.length = app_data.size();
    cb.application_data.value = app_data.data();
    bindings = &cb;
  }

  OM_uint32 minor = 0;
  ctx_handle ctx;
  name_handle src;
  gss_OID mech = GSS_C_NO_OID;
  gss_buffer_desc in{raw->size(), raw->data()};
  buffer_handle reply;
  OM_uint32 flags = 0;
  cred_handle delegated;
  OM_uint32 major = gss_accept_sec_context(&minor, &ctx.h, impl_->cred.h, &in, bindings, &src.h,
                                           &mech, &reply.b, &flags, nullptr, &delegated.h);
  out.flags = flags;
  if (reply.b.length > 0) out.output_token = base64_encode(reply.str());
  if (GSS_ERROR(major)) {
    out.error = gss_error("gss_accept_sec_context", major, minor);
    return out;
  }
  if (oid_is(mech, krb5_oid.data(), krb5_oid.size())) {
    out.inner_mech = "krb5";
  } else if (mech != GSS_C_NO_OID) {
    buffer_handle t;
    if (!GSS_ERROR(gss_oid_to_str(&minor, mech, &t.b))) out.inner_mech = t.str();
  }
  out.delegated = (flags & GSS_C_DELEG_FLAG) != 0 && delegated.h != GSS_C_NO_CREDENTIAL;
  out.channel_bound = (flags & GSS_C_CHANNEL_BOUND_FLAG) != 0;
  if (major & GSS_S_CONTINUE_NEEDED) {
    out.continue_needed = true;
    out.error = "gss_accept_sec_context: GSS_S_CONTINUE_NEEDED (one leg expected)";
    return out;
  }
  if (src.h != GSS_C_NO_NAME) {
    buffer_handle d;
    if (!GSS_ERROR(gss_display_name(&minor, src.h, &d.b, nullptr))) out.principal = d.str();
  }
  if (require_binding && !out.channel_bound) {
    // MIT accepts a token without bindings even when the acceptor passes some (compatibility);
    // only GSS_C_CHANNEL_BOUND_FLAG tells that the initiator's bindings matched.
    out.error = "channel bindings required: the token carries no tls-server-end-point bindings";
    return out;
  }
  out.authenticated = true;
  return out;
}

}  // namespace cbagate::mock
