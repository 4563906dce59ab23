#include "explain.hpp"

#include <memory>
#include <ostream>

#include <openssl/bn.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/openssl_ptr.hpp"
#include "config/load.hpp"
#include "directory/mapping.hpp"
#include "directory/service.hpp"
#include "identity/ad_certificate.hpp"
#include "identity/upn.hpp"
#include "identity/verifier.hpp"

namespace cbagate {

int explain_certificate(const std::string& cert_path, const std::string& config_path,
                        std::ostream& out, std::ostream& err) {
  ossl::bio_ptr bio{BIO_new_file(cert_path.c_str(), "rb")};
  if (!bio) {
    err << "cbagate: cannot open certificate file " << cert_path << "\n";
    return 2;
  }
  ossl::x509_ptr leaf{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)};
  if (!leaf) {
    BIO_reset(bio.get());
    leaf.reset(d2i_X509_bio(bio.get(), nullptr));
  }
  if (!leaf) {
    err << "cbagate: " << cert_path << " holds no certificate (PEM or DER)\n";
    return 2;
  }
  ossl::x509_stack_ptr sent{sk_X509_new_null()};
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))
    if (sk_X509_push(sent.get(), x) <= 0) X509_free(x);

  std::shared_ptr<const config::snapshot> cfg;
  if (!config_path.empty()) {
    auto loaded = config::load_file(config_path);
    if (!loaded.ok()) {
      for (const auto& d : loaded.errors) err << d.to_string() << "\n";
      err << "cbagate: configuration file " << config_path << " test failed\n";
      return 2;
    }
    cfg = loaded.value;
  }

  identity::upn_options upn_opts;
  if (cfg) {
    upn_opts.from_san = cfg->auth.upn_from_san;
    upn_opts.from_subject = cfg->auth.upn_from_subject;
    upn_opts.from_directory = cfg->auth.upn_from_directory;
    upn_opts.max_length = cfg->auth.max_upn_length;
  }
  const identity::ad_facts facts = identity::read_ad_facts(leaf.get());
  const identity::upn_result upn = identity::extract_upn(leaf.get(), upn_opts);
  const identity::template_info tmpl = identity::read_template(leaf.get());
  identity::client_identity id = identity::verifier::no_certificate();

  out << "certificate  " << cert_path << "\n";
  int rc = 0;
  if (cfg) {
    identity::verifier_options vo;
    vo.client_ca_file = cfg->tls.client_ca;
    vo.client_intermediates_file = cfg->tls.client_intermediates;
    vo.crl_files = cfg->tls.crl;
    vo.upn = upn_opts;
    vo.verify_depth = cfg->tls.verify_depth;
    vo.issuing_cas_file = cfg->auth.issuing_cas;
    vo.upn_suffixes = cfg->auth.upn_suffixes;
    vo.certificate_templates = cfg->auth.certificate_templates;
    std::string detail;
    auto v = identity::verifier::make(vo, &detail);
    if (!v) {
      err << "cbagate: " << detail << "\n";
      return 2;
    }
    id = (*v)->verify(leaf.get(), sent.get());
    out << "chain        " << (id.ok() ? "accepted" : "refused: " + std::string(identity::to_string(id.reason)))
        << " (" << config_path << ")\n";
    if (!id.ok()) {
      out << "  403." << identity::iis_substatus(id.reason) << ": " << id.detail << "\n";
      rc = 1;
    }
  } else {
    out << "chain        not checked (give --config FILE for the trust material and limits)\n";
  }
  out << "subject      " << facts.subject_dn << "\n"
      << "issuer       " << facts.issuer_dn << "\n";
  out << "UPN          " << (upn.ok() ? upn.upn : "none (" + std::string(identity::to_string(upn.reason)) + ": " + upn.detail + ")")
      << "\n";
  out << "template     "
      << (!tmpl.error.empty() ? tmpl.error
          : tmpl.oid.empty() && tmpl.name.empty()
              ? std::string("none")
              : tmpl.oid + (tmpl.oid.empty() || tmpl.name.empty() ? "" : " / ") + tmpl.name)
      << "\n";
  out << "SID extension "
      << (!facts.sid_error.empty() ? "malformed: " + facts.sid_error
          : facts.sid.empty()     ? std::string("none")
                                  : facts.sid)
      << "\n";

  directory::certificate_view view;
  view.upn = upn.ok() ? upn.upn : std::string();
  view.issuer_dn = facts.issuer_dn;
  view.subject_dn = facts.subject_dn;
  {
    // client_identity::serial's form (upper-case hex of the serial number).
    const ASN1_INTEGER* serial = X509_get0_serialNumber(leaf.get());
    std::unique_ptr<BIGNUM, ossl::deleter<BN_free>> bn{ASN1_INTEGER_to_BN(serial, nullptr)};
    if (bn) {
      char* hex = BN_bn2hex(bn.get());
      if (hex) {
        view.serial = hex;
        OPENSSL_free(hex);
      }
    }
  }
  view.ski = facts.ski;
  view.sha1 = facts.sha1;
  view.sid = facts.sid;
  view.sid_error = facts.sid_error;
  out << "serial       " << view.serial << "\n"
      << "SHA-1        " << view.sha1 << "\n";
  out << "\nstrong altSecurityIdentities values for this certificate (any one binds it; KB5014754):\n";
  for (const std::string& s : directory::strong_strings(view)) out << "  " << s << "\n";
  out << "weak values (never sufficient since KB5014754 full enforcement):\n";
  for (const std::string& s : directory::weak_strings(view)) out << "  " << s << "\n";

  if (cfg && cfg->auth.mapping == config::mapping_mode::directory) {
    out << "\ndirectory    ";
    if (!id.ok()) {
      out << "not asked (the chain is refused)\n";
      return rc == 0 ? 1 : rc;
    }
    directory::service_options so;
    std::string error;
    if (!directory::options_from_config(*cfg, so, error)) {
      err << "cbagate: " << error << "\n";
      return 2;
    }
    directory::apply_gssapi_environment(*cfg);
    so.connections = 1;
    directory::service svc(so, nullptr);
    const directory::mapping_result r = svc.lookup_now(id);
    out << directory::to_string(r.outcome);
    if (r.outcome == directory::verdict::unavailable) {
      out << " (503): " << r.detail << "\n";
      return 1;
    }
    if (!r.allowed()) {
      out << " (403.12): " << r.detail << "\n";
      if (!r.dn.empty()) out << "  account    " << r.dn << "\n";
      return 1;
    }
    out << "\n  account    " << r.dn << "\n"
        << "  sAMAccountName " << r.sam_account_name << "\n"
        << "  bound by   " << r.via << "\n";
  } else if (cfg) {
    out << "\ndirectory    not used (auth.mapping = \"upn\": the UPN alone names the user)\n";
  }
  return rc;
}

}  // namespace cbagate
