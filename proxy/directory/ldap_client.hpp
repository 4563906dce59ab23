#pragma once
// One bound LDAP connection to the first domain controller of directory.uris that answers
// (OpenLDAP libldap, synchronous calls with deadlines). Used by one worker thread at a time;
// the service (service.hpp) keeps one per worker. No OpenLDAP types in this header.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/snapshot.hpp"
#include "directory/verdict.hpp"

namespace cbagate::directory {

/** Why a directory operation failed (never a verdict: the caller answers 503). */
struct ldap_failure {
  std::string uri;      ///< the server concerned ("" = none could be tried)
  std::string message;  ///< "ldap://dc1:389: connect: Can't contact LDAP server", ...
};

/** How the client reaches and authenticates to the directory (from config [directory]). */
struct ldap_options {
  std::vector<std::string> uris;
  std::string base_dn;
  config::directory_bind bind = config::directory_bind::sasl_gssapi;
  std::string bind_dn;
  std::string password;  ///< read from directory.password_file by the caller
  config::directory_tls tls = config::directory_tls::starttls;
  std::string ca;        ///< "" = libldap's default (the system store)
  std::chrono::milliseconds timeout{5000};
};

/** Per-URI failure counter, called for each failed attempt (metrics). */
using failure_hook = void (*)(void* context, std::size_t uri_index);

class ldap_client {
 public:
  explicit ldap_client(ldap_options options);
  ~ldap_client();
  ldap_client(const ldap_client&) = delete;
  ldap_client& operator=(const ldap_client&) = delete;

  /**
   * The user accounts whose userPrincipalName is `upn` (escaped filter, subtree of base_dn,
   * size limit 2, no referrals), with the attributes `decide` reads. Connects (or reconnects)
   * first, trying the URIs in order; a server that fails during the search is dropped and the
   * search repeated once on the next one.
   * @return false and `failure` when no server answered.
   */
  bool find_by_upn(const std::string& upn, std::vector<account>& out, ldap_failure& failure);

  /** Same, locating by the certificate's strong altSecurityIdentities strings (no UPN). */
  bool find_by_strong_strings(const std::vector<std::string>& strings, std::vector<account>& out,
                              ldap_failure& failure);

  /**
   * The DER certificates of the NTAuth store: cACertificate of CN=NTAuthCertificates,
   * CN=Public Key Services,CN=Services,<configurationNamingContext of the rootDSE>.
   */
  bool read_ntauth(std::vector<std::vector<std::uint8_t>>& out, ldap_failure& failure);

  /** Counts failed attempts per URI (index into options.uris). */
  void on_failure(failure_hook hook, void* context) {
    hook_ = hook;
    hook_context_ = context;
  }

  /** The URI currently connected to ("" = none). */
  std::string connected_uri() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
  failure_hook hook_ = nullptr;
  void* hook_context_ = nullptr;
};

}  // namespace cbagate::directory
