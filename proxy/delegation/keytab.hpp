#pragma once
// The proxy's own Kerberos credential, checked before anything serves (issue 13): the keytab is
// a keytab, it holds a key for kerberos.principal, and the KDC gives the proxy a ticket with it.
// Used by `--check-config` and by start-up, so both refuse the same keytab with the same words.
// Blocking (file and KDC I/O): call from the main thread before the I/O threads run.
#include <cstdint>
#include <string>

#include "config/snapshot.hpp"

namespace cbagate::delegation {

/**
 * Reads kerberos.keytab and looks for a key of kerberos.principal (compared as krb5 unparses
 * it; a principal written without a realm matches any realm). No KDC traffic.
 * @return "" when the keytab holds such a key; else the message, naming the keytab and the
 *         principal (e.g. "kerberos: keytab /etc/cbagate/http.keytab has no key for
 *         HTTP/mail.corp.example.com@CORP.EXAMPLE.COM (it holds: ...)").
 */
std::string check_keytab(const config::kerberos_section& section);

/** The outcome of acquire_proxy_credential. */
struct credential_result {
  std::string error;        ///< "" on success; else krb5's reason with a hint
  bool unreachable = false; ///< the KDC could not be reached (may resolve itself; not the keytab's fault)
  std::int64_t expires = 0; ///< unix seconds of the ticket's end time on success

  bool ok() const noexcept { return error.empty(); }
};

/**
 * An AS exchange with the keytab for kerberos.principal (krb5_get_init_creds_keytab), into a
 * throw-away memory cache: proves the key is current and the KDC knows the principal.
 */
credential_result acquire_proxy_credential(const config::kerberos_section& section);

}  // namespace cbagate::delegation
