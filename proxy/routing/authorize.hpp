#pragma once
// Route policy x client identity -> allow or deny (DESIGN.md request flow step 5).
#include "config/snapshot.hpp"
#include "identity/client_identity.hpp"

namespace cbagate::routing {

/** What to do with one request on one route. */
struct decision {
  bool allow = false;
  bool forward_identity = false;  ///< delegate the UPN to the backend (only when allow)
  int status = 403;               ///< 0 when allowed, 403 when denied
  int substatus = 0;              ///< IIS 403 substatus when denied (7, 13, 16, 17), else 0
  identity::rejection reason = identity::rejection::none;  ///< why denied; none when allowed
};

/**
 * Applies a route's certificate policy to the connection's identity. Fails closed:
 *  - require:  allow with identity only when the identity is ok; otherwise 403 with
 *              identity::iis_substatus of the reason (no certificate -> 403.7, ...).
 *  - optional: no certificate presented -> allow without identity; presented and ok -> allow
 *              with identity; presented but rejected -> deny as `require` would (a bad
 *              certificate is never treated as anonymous).
 *  - none:     allow, never forward an identity (even a valid one).
 * An inconsistent identity is read in the safe direction: not `presented` counts as
 * no_certificate whatever its reason, and "ok" without a UPN counts as no_upn, unless
 * `upn_by_directory` (auth.upn_sources "directory": the map phase then has the directory locate
 * the account by the certificate's strong strings, and refuses when it cannot).
 * Pure and thread-safe.
 */
decision authorize(const config::route& route, const identity::client_identity& id,
                   bool upn_by_directory = false) noexcept;

}  // namespace cbagate::routing
