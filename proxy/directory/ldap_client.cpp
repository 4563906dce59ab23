#include "directory/ldap_client.hpp"

#include <sys/time.h>

#include <strings.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <mutex>

#include <ldap.h>
#include <sasl/sasl.h>

#include "directory/mapping.hpp"

namespace cbagate::directory {
namespace {

// What decide() reads (docs/directory.md "Attributes"). msDS-User-Account-Control-Computed is
// constructed: AD returns it only when asked for by name.
const char* const account_attributes[] = {"userPrincipalName",
                                          "sAMAccountName",
                                          "objectSid",
                                          "userAccountControl",
                                          "msDS-User-Account-Control-Computed",
                                          "accountExpires",
                                          "lockoutTime",
                                          "altSecurityIdentities",
                                          nullptr};

struct ldap_deleter {
  void operator()(LDAP* ld) const noexcept { ldap_unbind_ext_s(ld, nullptr, nullptr); }
};
using ldap_ptr = std::unique_ptr<LDAP, ldap_deleter>;

struct message_deleter {
  void operator()(LDAPMessage* m) const noexcept { ldap_msgfree(m); }
};
using message_ptr = std::unique_ptr<LDAPMessage, message_deleter>;

struct values_deleter {
  void operator()(berval** v) const noexcept { ldap_value_free_len(v); }
};
using values_ptr = std::unique_ptr<berval*, values_deleter>;

timeval to_timeval(std::chrono::milliseconds d) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

// Directory text goes into logs and 403 details: no control characters.
std::string printable(const char* data, std::size_t len) {
  std::string out(data, len);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) c = '?';
  return out;
}

// SASL asks nothing for GSSAPI; answer any prompt with its default (or nothing).
extern "C" int sasl_quiet(LDAP*, unsigned, void*, void* in) {
  for (auto* i = static_cast<sasl_interact_t*>(in); i != nullptr && i->id != SASL_CB_LIST_END; ++i) {
    i->result = i->defresult != nullptr ? i->defresult : "";
    i->len = static_cast<unsigned>(std::strlen(static_cast<const char*>(i->result)));
  }
  return LDAP_SUCCESS;
}

// Errors after which the connection is useless (the next server is tried).
bool connection_lost(int rc) {
  return rc == LDAP_SERVER_DOWN || rc == LDAP_TIMEOUT || rc == LDAP_CONNECT_ERROR ||
         rc == LDAP_UNAVAILABLE || rc == LDAP_BUSY || rc == LDAP_LOCAL_ERROR ||
         rc == LDAP_UNWILLING_TO_PERFORM || rc == LDAP_OTHER;
}

std::optional<std::int64_t> integer_of(const berval* v) {
  if (v == nullptr || v->bv_len == 0 || v->bv_len > 20) return std::nullopt;
  std::int64_t out = 0;
  bool negative = false;
  for (std::size_t i = 0; i < v->bv_len; ++i) {
    const char c = v->bv_val[i];
    if (i == 0 && c == '-') {
      negative = true;
      continue;
    }
    if (c < '0' || c > '9') return std::nullopt;
    if (out > (std::numeric_limits<std::int64_t>::max() - (c - '0')) / 10) return std::nullopt;
    out = out * 10 + (c - '0');
  }
  return negative ? -out : out;
}

}  // namespace

struct ldap_client::impl {
  ldap_options options;
  ldap_ptr ld;
  std::size_t current = 0;  // index of the connected URI
  std::size_t start = 0;    // where the next connection attempt begins (after a failover)
  mutable std::mutex uri_mutex;
  std::string uri;          // connected ("" = none)

  std::string fail_text(const std::string& where, int rc) const {
    std::string m = where + ": " + ldap_err2string(rc);
    if (ld) {
      char* diag = nullptr;
      if (ldap_get_option(ld.get(), LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag) == LDAP_OPT_SUCCESS &&
          diag != nullptr) {
        if (*diag != '\0') m += " (" + printable(diag, std::strlen(diag)) + ")";
        ldap_memfree(diag);
      }
    }
    return m;
  }

  // Connects and binds to options.uris[i]; on failure sets `message`.
  bool connect_one(std::size_t i, std::string& message) {
    ld.reset();
    set_uri("");
    const std::string& u = options.uris[i];
    LDAP* raw = nullptr;
    int rc = ldap_initialize(&raw, u.c_str());
    if (rc != LDAP_SUCCESS || raw == nullptr) {
      message = u + ": ldap_initialize: " + ldap_err2string(rc);
      return false;
    }
    ld.reset(raw);
    const int version = LDAP_VERSION3;
    const timeval tv = to_timeval(options.timeout);
    ldap_set_option(ld.get(), LDAP_OPT_PROTOCOL_VERSION, &version);
    ldap_set_option(ld.get(), LDAP_OPT_REFERRALS, LDAP_OPT_OFF);  // never chase (docs: 1e)
    ldap_set_option(ld.get(), LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld.get(), LDAP_OPT_TIMEOUT, &tv);
    // SASL GSSAPI asks for ldap/<host as written>, not a reverse-resolved name.
    ldap_set_option(ld.get(), LDAP_OPT_X_SASL_NOCANON, LDAP_OPT_ON);
    if (options.tls != config::directory_tls::none) {
      const int demand = LDAP_OPT_X_TLS_DEMAND;
      ldap_set_option(ld.get(), LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
      if (!options.ca.empty()) ldap_set_option(ld.get(), LDAP_OPT_X_TLS_CACERTFILE, options.ca.c_str());
      const int server = 0;  // a TLS context of this handle's own, with the options above
      ldap_set_option(ld.get(), LDAP_OPT_X_TLS_NEWCTX, &server);
    }
    if (options.tls == config::directory_tls::starttls) {
      rc = ldap_start_tls_s(ld.get(), nullptr, nullptr);
      if (rc != LDAP_SUCCESS) {
        message = fail_text(u + ": StartTLS", rc);
        ld.reset();
        return false;
      }
    }
    if (options.bind == config::directory_bind::simple) {
      berval cred{};
      cred.bv_val = const_cast<char*>(options.password.data());
      cred.bv_len = options.password.size();
      rc = ldap_sasl_bind_s(ld.get(), options.bind_dn.c_str(), LDAP_SASL_SIMPLE, &cred, nullptr,
                            nullptr, nullptr);
    } else {
      rc = ldap_sasl_interactive_bind_s(ld.get(), nullptr, "GSSAPI", nullptr, nullptr,
                                        LDAP_SASL_QUIET, &sasl_quiet, nullptr);
    }
    if (rc != LDAP_SUCCESS) {
      message = fail_text(u + (options.bind == config::directory_bind::simple
                                   ? ": simple bind as " + options.bind_dn
                                   : std::string(": SASL GSSAPI bind")),
                          rc);
      ld.reset();
      return false;
    }
    current = i;
    set_uri(u);
    return true;
  }

  void set_uri(const std::string& u) {
    std::lock_guard lock(uri_mutex);
    uri = u;
  }

  // A bound connection: the current one, else the URIs in order.
  bool ensure(ldap_failure& failure, failure_hook hook, void* ctx) {
    if (ld) return true;
    std::string all;
    const std::size_t n = options.uris.size();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (start + k) % n;
      std::string message;
      if (connect_one(i, message)) return true;
      if (hook) hook(ctx, i);
      all += (all.empty() ? "" : "; ") + message;
    }
    start = 0;  // none answered: the next lookup starts with the first again
    failure = {options.uris.empty() ? std::string() : options.uris.back(),
               all.empty() ? std::string("no directory URI configured") : all};
    return false;
  }

  // One search on the bound connection. rc is LDAP's; entries are parsed into `out`.
  int search(const std::string& base, int scope, const std::string& filter, const char* const* attrs,
             int size_limit, message_ptr& res) {
    timeval tv = to_timeval(options.timeout);
    LDAPMessage* raw = nullptr;
    const int rc = ldap_search_ext_s(ld.get(), base.c_str(), scope, filter.c_str(),
                                     const_cast<char**>(attrs), 0, nullptr, nullptr, &tv,
                                     size_limit, &raw);
    res.reset(raw);
    return rc;
  }

  std::vector<account> accounts_of(LDAPMessage* res) {
    std::vector<account> out;
    for (LDAPMessage* e = ldap_first_entry(ld.get(), res); e != nullptr && out.size() < 2;
         e = ldap_next_entry(ld.get(), e)) {
      account a;
      if (char* dn = ldap_get_dn(ld.get(), e)) {
        a.dn = printable(dn, std::strlen(dn));
        ldap_memfree(dn);
      }
      auto values = [&](const char* attr) {
        return values_ptr{ldap_get_values_len(ld.get(), e, attr)};
      };
      auto first = [&](const char* attr) -> std::optional<std::string> {
        values_ptr v = values(attr);
        if (!v || v.get()[0] == nullptr) return std::nullopt;
        return printable(v.get()[0]->bv_val, v.get()[0]->bv_len);
      };
      a.upn = first("userPrincipalName").value_or("");
      a.sam_account_name = first("sAMAccountName").value_or("");
      if (values_ptr v = values("objectSid"); v && v.get()[0] != nullptr) {
        const berval* b = v.get()[0];
        a.object_sid.assign(reinterpret_cast<const std::uint8_t*>(b->bv_val),
                            reinterpret_cast<const std::uint8_t*>(b->bv_val) + b->bv_len);
      }
      auto integer = [&](const char* attr) -> std::optional<std::int64_t> {
        values_ptr v = values(attr);
        if (!v || v.get()[0] == nullptr) return std::nullopt;
        return integer_of(v.get()[0]);
      };
      // A missing or unreadable userAccountControl counts as disabled (fail closed).
      a.user_account_control = integer("userAccountControl").value_or(0x2);
      a.uac_computed = integer("msDS-User-Account-Control-Computed");
      a.account_expires = integer("accountExpires").value_or(0);
      a.lockout_time = integer("lockoutTime").value_or(0);
      if (values_ptr v = values("altSecurityIdentities")) {
        for (berval** p = v.get(); *p != nullptr; ++p)
          a.alt_security_identities.push_back(printable((*p)->bv_val, (*p)->bv_len));
      }
      out.push_back(std::move(a));
    }
    return out;
  }

  // One subtree search for accounts under base_dn, at most two entries: a size limit of 2
  // reached means two accounts match, which is what `ambiguous` needs.
  int search_accounts(const std::string& filter, std::vector<account>& out,
                      std::string& message) {
    message_ptr res;
    const int rc = search(options.base_dn, LDAP_SCOPE_SUBTREE, filter, account_attributes, 2, res);
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
      message = fail_text(options.uris[current] + ": search " + options.base_dn, rc);
      return rc;
    }
    out = accounts_of(res.get());
    return LDAP_SUCCESS;
  }

  // Runs `op` on a bound connection; a lost connection is dropped and `op` tried once more on
  // the next server that binds.
  template <class Op>
  bool with_connection(Op op, ldap_failure& failure, failure_hook hook, void* ctx) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!ensure(failure, hook, ctx)) return false;
      const std::size_t used = current;
      std::string message;
      const int rc = op(message);
      if (rc == LDAP_SUCCESS) return true;
      failure = {options.uris[used], message};
      if (hook) hook(ctx, used);
      if (!connection_lost(rc)) return false;
      ld.reset();
      set_uri("");
      // The next attempt starts at the server after the one that failed.
      start = (used + 1) % options.uris.size();
    }
    return false;
  }
};

ldap_client::ldap_client(ldap_options options) : impl_(std::make_unique<impl>()) {
  impl_->options = std::move(options);
}

ldap_client::~ldap_client() = default;

std::string ldap_client::connected_uri() const {
  std::lock_guard lock(impl_->uri_mutex);
  return impl_->uri;
}

bool ldap_client::find_by_upn(const std::string& upn, std::vector<account>& out,
                              ldap_failure& failure) {
  const std::string filter = upn_filter(upn);
  return impl_->with_connection(
      [&](std::string& message) { return impl_->search_accounts(filter, out, message); },
      failure, hook_, hook_context_);
}

bool ldap_client::find_by_strong_strings(const std::vector<std::string>& strings,
                                         std::vector<account>& out, ldap_failure& failure) {
  const std::string filter = strong_filter(strings);
  return impl_->with_connection(
      [&](std::string& message) { return impl_->search_accounts(filter, out, message); },
      failure, hook_, hook_context_);
}

bool ldap_client::read_ntauth(std::vector<std::vector<std::uint8_t>>& out, ldap_failure& failure) {
  return impl_->with_connection(
      [&](std::string& message) {
        const char* const root_attrs[] = {"configurationNamingContext", nullptr};
        message_ptr res;
        int rc = impl_->search("", LDAP_SCOPE_BASE, "(objectClass=*)", root_attrs, 1, res);
        if (rc != LDAP_SUCCESS) {
          message = impl_->fail_text(impl_->options.uris[impl_->current] + ": rootDSE", rc);
          return rc;
        }
        std::string config_nc;
        if (LDAPMessage* e = ldap_first_entry(impl_->ld.get(), res.get())) {
          values_ptr v{ldap_get_values_len(impl_->ld.get(), e, "configurationNamingContext")};
          if (v && v.get()[0] != nullptr)
            config_nc = printable(v.get()[0]->bv_val, v.get()[0]->bv_len);
        }
        // AD always publishes it; a directory without it (a lab's slapd) keeps the store
        // under CN=Configuration of the base DN.
        if (config_nc.empty()) config_nc = "CN=Configuration," + impl_->options.base_dn;
        const std::string dn =
            "CN=NTAuthCertificates,CN=Public Key Services,CN=Services," + config_nc;
        const char* const attrs[] = {"cACertificate", nullptr};
        rc = impl_->search(dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 1, res);
        if (rc != LDAP_SUCCESS) {
          message = impl_->fail_text(impl_->options.uris[impl_->current] + ": read " + dn, rc);
          return rc;
        }
        out.clear();
        if (LDAPMessage* e = ldap_first_entry(impl_->ld.get(), res.get())) {
          // AD returns "cACertificate"; OpenLDAP "cACertificate;binary" (RFC 4523 transfer).
          BerElement* ber = nullptr;
          for (char* name = ldap_first_attribute(impl_->ld.get(), e, &ber); name != nullptr;
               name = ldap_next_attribute(impl_->ld.get(), e, ber)) {
            const bool ca = strncasecmp(name, "cACertificate", 13) == 0 &&
                            (name[13] == '\0' || name[13] == ';');
            if (ca) {
              values_ptr v{ldap_get_values_len(impl_->ld.get(), e, name)};
              for (berval** p = v.get(); v && *p != nullptr; ++p)
                out.emplace_back(reinterpret_cast<const std::uint8_t*>((*p)->bv_val),
                                 reinterpret_cast<const std::uint8_t*>((*p)->bv_val) + (*p)->bv_len);
            }
            ldap_memfree(name);
          }
          if (ber != nullptr) ber_free(ber, 0);
        }
        return LDAP_SUCCESS;
      },
      failure, hook_, hook_context_);
}

}  // namespace cbagate::directory
