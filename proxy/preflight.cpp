#include "preflight.hpp"

#include <chrono>
#include <ostream>

#include "admin/admin_server.hpp"
#include "config/load.hpp"
#include "delegation/kerberos.hpp"
#include "directory/service.hpp"
#include "http/error_pages.hpp"
#include "identity/trust_audit.hpp"
#include "identity/verifier.hpp"
#include "revocation/checker.hpp"
#include "routing/route_table.hpp"
#include "tls/server_context.hpp"
#include "tls/ticket_keys.hpp"
#include "upstream/pool.hpp"

namespace cbagate {

preflight_result preflight(const config::snapshot& cfg, std::int64_t now) {
  preflight_result r;
  // 1. Every file on its own, all of them (one message per broken file).
  r.files = tls::inspect(cfg, now);
  r.errors = r.files.errors;
  r.warnings = r.files.warnings;

  // Where each client CA certificate belongs (issue 12): one that is not self-signed can never
  // be an anchor. A client_ca without any root is also the verifier's error below.
  for (const auto& f : identity::audit_trust(cfg.tls.client_ca, cfg.tls.client_intermediates,
                                             cfg.auth.issuing_cas))
    (f.fatal && !r.errors.empty() ? r.errors : r.warnings).push_back(f.message);

  // 2. The objects start-up builds from them, only when the files read: a broken file would
  //    otherwise be reported twice, once more in OpenSSL's words.
  if (r.errors.empty()) {
    auto issuers = std::make_shared<identity::issuer_registry>();
    identity::verifier_options vo;
    vo.client_ca_file = cfg.tls.client_ca;
    vo.client_intermediates_file = cfg.tls.client_intermediates;
    vo.issuers = issuers;
    vo.upn.from_san = cfg.auth.upn_from_san;
    vo.upn.from_subject = cfg.auth.upn_from_subject;
    vo.upn.from_directory = cfg.auth.upn_from_directory;
    vo.upn.max_length = cfg.auth.max_upn_length;
    vo.verify_depth = cfg.tls.verify_depth;
    vo.issuing_cas_file = cfg.auth.issuing_cas;  // the trust limits of [auth] (issue 12)
    vo.upn_suffixes = cfg.auth.upn_suffixes;
    vo.certificate_templates = cfg.auth.certificate_templates;
    std::string detail;
    auto verifier = identity::verifier::make(vo, &detail);
    if (!verifier) {
      r.errors.push_back("identity: " + (detail.empty() ? verifier.error().message() : detail));
    } else {
      if (!cfg.tls.crl.empty()) {
        detail.clear();
        auto files = revocation::crl_files::load(cfg.tls.crl, *issuers, &detail);
        if (!files) r.errors.push_back(detail.empty() ? "crl: " + files.error().message() : detail);
      }
      std::string error;
      if (!tls::server_context::make(cfg, *verifier, error)) r.errors.push_back(error);
    }
  }
  if (cfg.auth.mapping == config::mapping_mode::directory) {
    directory::service_options so;
    std::string error;
    if (!directory::options_from_config(cfg, so, error)) r.errors.push_back(error);
  }
  if (auto routes = routing::route_table::make(cfg.routes); !routes)
    r.errors.push_back("routing: " + routes.error().message());
  {
    std::string error;
    if (!http::error_pages::load(cfg, error) && !error.empty()) r.errors.push_back(error);
  }
  bool any_tls_upstream = false;
  for (const auto& s : cfg.upstream.servers) any_tls_upstream |= s.tls;
  if (any_tls_upstream) {
    std::string error;
    if (!upstream::client_tls::make(cfg.upstream, error)) r.errors.push_back(error);
  }
  if (!cfg.server.admin_listen.empty() && !admin::parse_endpoint(cfg.server.admin_listen))
    r.errors.push_back("server.admin_listen: '" + cfg.server.admin_listen +
                       "' is not an IP literal with a port");
  if (!cfg.tls.ticket_keys.empty()) {
    std::vector<tls::ticket_key> keys;
    std::string error;
    if (!tls::load_ticket_key_file(cfg.tls.ticket_keys, keys, error)) r.errors.push_back(error);
  }

  // 3. Kerberos: the keytab holds the principal's key, then the KDC gives us a ticket with it.
  if (cfg.identity.mode == config::identity_mode::kerberos) {
    if (auto kr = delegation::apply_krb5_config(cfg.kerberos); !kr) {
      r.errors.push_back("kerberos: krb5_config " + cfg.kerberos.krb5_config + ": " +
                         kr.error().message());
    } else if (std::string e = delegation::check_keytab(cfg.kerberos); !e.empty()) {
      r.errors.push_back(e);
    } else if (auto cred = r.kerberos = delegation::acquire_proxy_credential(cfg.kerberos);
               cred.unreachable) {
      // A KDC outage is not the configuration's fault and ends by itself: start (requests get
      // 503 "kdc_unavailable" meanwhile), but say so.
      r.warnings.push_back(cred.error + " (starting anyway: requests get 503 until the KDC answers)");
    } else if (!cred.ok()) {
      r.errors.push_back(cred.error);
    } else {
      r.kerberos_ticket_expires = cred.expires;
    }
  }
  return r;
}

int check_config(const std::string& path, std::ostream& out, std::ostream& err) {
  const config::load_result loaded = config::load_file(path);
  if (!loaded.ok()) {
    for (const config::diagnostic& d : loaded.errors) err << d.to_string() << '\n';
    err << "cbagate: configuration file " << path << " test failed\n";
    return 2;
  }
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  const preflight_result r = preflight(*loaded.value, now);
  for (const std::string& w : r.warnings) err << "cbagate: warning: " << w << '\n';
  if (r.ok()) {
    out << "cbagate: configuration file " << path << " test is successful\n";
    return 0;
  }
  for (const std::string& e : r.errors) err << "cbagate: " << e << '\n';
  err << "cbagate: configuration file " << path << " test failed\n";
  return 2;
}

}  // namespace cbagate
