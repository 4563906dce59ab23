#pragma once
// What start-up does before it binds, as one function that `--check-config` runs too (issue 13):
// the configuration file, then every file it names read the way start-up reads it (certificates,
// keys, chains, CRLs, client CAs: tls/inspect.hpp), the verifier, the CRL index, the TLS contexts,
// the routes, the upstream TLS context, and in Kerberos mode the keytab and the proxy's own
// ticket from the KDC. Nothing is bound and nothing stays running.
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "config/snapshot.hpp"
#include "delegation/keytab.hpp"
#include "tls/inspect.hpp"

namespace cbagate {

struct preflight_result {
  std::vector<std::string> errors;    ///< each names the key and the file; any = refuse to start
  std::vector<std::string> warnings;  ///< start anyway, but say so
  tls::inspection files;              ///< lifetimes of the certificates and CRLs read
  std::int64_t kerberos_ticket_expires = 0;  ///< unix seconds; 0 = not Kerberos mode or no ticket
  delegation::credential_result kerberos;    ///< the AS exchange's outcome (Kerberos mode)

  bool ok() const noexcept { return errors.empty(); }
};

/**
 * Runs every start-up step short of binding for a loaded snapshot, at time `now` (unix seconds).
 * Blocking (files, KDC): call on the main thread before the I/O threads exist. In Kerberos mode
 * it sets KRB5_CONFIG (kerberos.krb5_config) first, as start-up does; a keytab without the
 * principal's key or a KDC that refuses it is an error, an unreachable KDC a warning (it may come
 * back; requests get 503 meanwhile). Never throws.
 */
preflight_result preflight(const config::snapshot& cfg, std::int64_t now);

/**
 * `cbagate --check-config PATH`: load_file, then preflight. Success: the warnings on `err`
 * ("cbagate: warning: ..."), "cbagate: configuration file PATH test is successful" on `out`,
 * returns 0. Failure: every problem on `err`, then "... test failed", returns 2.
 */
int check_config(const std::string& path, std::ostream& out, std::ostream& err);

}  // namespace cbagate
