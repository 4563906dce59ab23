#include "delegation/keytab.hpp"

#include <krb5/krb5.h>

#include <vector>

namespace cbagate::delegation {
namespace {

struct context {
  krb5_context ctx = nullptr;
  krb5_error_code init = krb5_init_context(&ctx);
  context() = default;
  context(const context&) = delete;
  context& operator=(const context&) = delete;
  ~context() {
    if (ctx != nullptr) krb5_free_context(ctx);
  }
  std::string message(krb5_error_code code) const {
    if (ctx == nullptr) return "krb5 error " + std::to_string(code);
    const char* m = krb5_get_error_message(ctx, code);
    std::string out = m != nullptr ? m : "krb5 error " + std::to_string(code);
    krb5_free_error_message(ctx, m);
    return out;
  }
};

std::string without_realm(const std::string& name) {
  const auto at = name.rfind('@');
  return at == std::string::npos ? name : name.substr(0, at);
}

}  // namespace

std::string check_keytab(const config::kerberos_section& section) {
  const std::string& path = section.keytab;
  context k;
  if (k.init != 0) return "kerberos: cannot initialise krb5: " + k.message(k.init);
  krb5_keytab kt = nullptr;
  const std::string name = "FILE:" + path;
  if (krb5_error_code e = krb5_kt_resolve(k.ctx, name.c_str(), &kt); e != 0)
    return "kerberos: keytab " + path + ": " + k.message(e);
  krb5_kt_cursor cursor{};
  if (krb5_error_code e = krb5_kt_start_seq_get(k.ctx, kt, &cursor); e != 0) {
    krb5_kt_close(k.ctx, kt);
    return "kerberos: " + path + " is not a usable keytab: " + k.message(e) +
           " (make one with ktpass or msktutil, see docs/production.md)";
  }
  const bool with_realm = section.principal.find('@') != std::string::npos;
  std::vector<std::string> seen;
  bool found = false;
  krb5_error_code e = 0;
  krb5_keytab_entry entry{};
  while ((e = krb5_kt_next_entry(k.ctx, kt, &entry, &cursor)) == 0) {
    char* unparsed = nullptr;
    if (krb5_unparse_name(k.ctx, entry.principal, &unparsed) == 0) {
      const std::string p = unparsed;
      krb5_free_unparsed_name(k.ctx, unparsed);
      if (with_realm ? p == section.principal : without_realm(p) == section.principal) found = true;
      bool known = false;
      for (const auto& s : seen) known |= s == p;
      if (!known && seen.size() < 8) seen.push_back(p);
    }
    krb5_free_keytab_entry_contents(k.ctx, &entry);
  }
  krb5_kt_end_seq_get(k.ctx, kt, &cursor);
  krb5_kt_close(k.ctx, kt);
  if (e != KRB5_KT_END) {
    return "kerberos: " + path + " is not a usable keytab: " + k.message(e) +
           " (make one with ktpass or msktutil, see docs/production.md)";
  }
  if (found) return {};
  std::string held;
  for (const auto& s : seen) held += (held.empty() ? "" : ", ") + s;
  return "kerberos: keytab " + path + " has no key for " + section.principal +
         (held.empty() ? std::string(" (it is empty)") : " (it holds: " + held + ")");
}

credential_result acquire_proxy_credential(const config::kerberos_section& section) {
  credential_result r;
  context k;
  if (k.init != 0) {
    r.error = "kerberos: cannot initialise krb5: " + k.message(k.init);
    return r;
  }
  krb5_principal client = nullptr;
  if (krb5_error_code e = krb5_parse_name(k.ctx, section.principal.c_str(), &client); e != 0) {
    r.error = "kerberos: kerberos.principal " + section.principal + ": " + k.message(e);
    return r;
  }
  krb5_keytab kt = nullptr;
  const std::string name = "FILE:" + section.keytab;
  krb5_error_code e = krb5_kt_resolve(k.ctx, name.c_str(), &kt);
  std::string& out = r.error;
  if (e != 0) {
    out = "kerberos: keytab " + section.keytab + ": " + k.message(e);
  } else {
    krb5_get_init_creds_opt* opt = nullptr;
    krb5_get_init_creds_opt_alloc(k.ctx, &opt);
    krb5_creds creds{};
    e = krb5_get_init_creds_keytab(k.ctx, &creds, client, kt, 0, nullptr, opt);
    if (e == 0) {
      r.expires = static_cast<std::int64_t>(creds.times.endtime);
      krb5_free_cred_contents(k.ctx, &creds);
    } else {
      std::string hint;
      switch (e) {
        case KRB5_KDC_UNREACH:
        case KRB5_REALM_CANT_RESOLVE:
        case KRB5_REALM_UNKNOWN:
          hint = "; is the KDC reachable (krb5.conf [realms], DNS SRV records, port 88)?";
          r.unreachable = true;
          break;
        case KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN:
          hint = "; does the service account exist with this userPrincipalName / SPN?";
          break;
        case KRB5KRB_AP_ERR_BAD_INTEGRITY:
        case KRB5KDC_ERR_PREAUTH_FAILED:
          hint = "; the keytab's key is outdated (password reset since the keytab was made?): "
                 "make a new keytab";
          break;
        default: break;
      }
      out = "kerberos: cannot get a ticket for " + section.principal + " with keytab " +
            section.keytab + ": " + k.message(e) + hint;
    }
    krb5_get_init_creds_opt_free(k.ctx, opt);
    krb5_kt_close(k.ctx, kt);
  }
  krb5_free_principal(k.ctx, client);
  return r;
}

}  // namespace cbagate::delegation
