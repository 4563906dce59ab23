#pragma once
// The "map" phase of a request with auth.mapping = "directory" (issue 12, docs/directory.md):
// between authorize and delegate, the connection's certificate -> the directory's verdict, and
// what the session answers when it is not "allowed". The LDAP work is directory::service's.
#include <optional>
#include <span>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "directory/service.hpp"
#include "http/local_reply.hpp"
#include "identity/client_identity.hpp"

namespace cbagate::http {

struct account_mapping {
  directory::mapping_result result;
  /** Set when the request must not go on: 403.12 with the verdict's code, or 503 + Retry-After
   *  (directory_unavailable). Empty when the account is allowed. */
  std::optional<local_reply_info> refusal;
  bool from_cache = false;
};

/**
 * The verdict for `id` (an accepted identity): the cache first (no suspension), else a lookup on
 * the directory's workers, awaited on the caller's executor within directory.timeout.
 */
boost::asio::awaitable<account_mapping> map_account(directory::service& svc,
                                                    const identity::client_identity& id);

/** Who the backend sees for an account the directory located by the certificate's strong
 *  strings (a certificate without a UPN, auth.upn_sources "directory"): its userPrincipalName,
 *  under auth.upn_suffixes like a certificate's UPN; in Kerberos mode an account without one is
 *  still its sAMAccountName. `refusal` ("no_upn", "upn_suffix_not_allowed") means 403.12. */
struct located_user {
  std::string account;
  const char* refusal = nullptr;
};
located_user user_of_located_account(const directory::mapping_result& r, bool kerberos,
                                     std::span<const std::string> upn_suffixes);

/** The Kerberos principal to impersonate for a mapped account: sAMAccountName@realm (the realm
 *  of the proxy's own principal); "" when the account has no sAMAccountName. */
std::string account_principal(const directory::mapping_result& r, const std::string& realm);

}  // namespace cbagate::http
