#pragma once
// auth.mapping = "directory" (issue 12, docs/directory.md): the certificate of a request ->
// the Active Directory account strongly bound to it, or a 403.12 verdict, or "unavailable".
//
// LDAP runs on worker threads of this service (one bound connection each), never on an I/O
// thread. Concurrent requests for one certificate share one lookup; verdicts are cached per
// certificate (SHA-256) for directory.cache_ttl (allowed) or negative_ttl (refused), so a
// kept-alive connection is re-checked at its first request after the TTL. "Unavailable" is
// never cached.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "common/expected.hpp"
#include "config/snapshot.hpp"
#include "directory/ldap_client.hpp"
#include "directory/mapping.hpp"
#include "directory/verdict.hpp"
#include "identity/client_identity.hpp"
#include "observability/metrics.hpp"

namespace cbagate::directory {

struct service_options {
  ldap_options ldap;
  std::size_t connections = 2;               ///< worker threads, one LDAP connection each
  std::chrono::milliseconds cache_ttl{300000};
  std::chrono::milliseconds negative_ttl{60000};
  std::size_t cache_max = 100000;
  bool ntauth = false;
  std::chrono::milliseconds ntauth_refresh{3600000};
  std::chrono::seconds lockout_duration{1800};
  std::size_t max_pending = 1024;            ///< distinct certificates queued; beyond: unavailable
};

/** The service options of a snapshot's [directory]; reads directory.password_file.
 *  @return false and `error` ("directory.password_file '...': ...") on failure. */
bool options_from_config(const config::snapshot& cfg, service_options& out, std::string& error);

/**
 * For bind = "sasl_gssapi": points MIT Kerberos at the keytab (KRB5_CLIENT_KTNAME, initiator
 * credentials from the keytab, no kinit), at a private MEMORY credential cache when none is set,
 * and at kerberos.krb5_config when given. Process-global environment: call at startup before
 * any thread exists. No-op for a simple bind.
 */
void apply_gssapi_environment(const config::snapshot& cfg);

/** What the view of a verified identity offers to the directory. */
certificate_view view_of(const identity::client_identity& id);

class service {
 public:
  /**
   * Starts `options.connections` workers (they connect lazily, at the first lookup).
   * @param metrics registry to export to; null = a private one (tools, tests).
   */
  service(service_options options, observability::registry* metrics);
  ~service();  // stops and joins the workers (each may finish its current LDAP call first)
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  /** The cached verdict of this certificate when still fresh (a hash lookup); counts a hit. */
  std::optional<mapping_result> try_lookup(const identity::client_identity& id);

  /**
   * The verdict, from the cache or from the directory: joins a lookup already running for the
   * same certificate, else queues one. Waits (asynchronously, on the awaiting coroutine's
   * executor, which must outlive the service) at most `timeout` (directory.timeout); then, or
   * when max_pending lookups are queued, `unavailable`. The lookup itself continues and fills
   * the cache.
   */
  boost::asio::awaitable<mapping_result> async_lookup(identity::client_identity id);

  /** A lookup on the calling thread, bypassing the cache (cbagate --explain-certificate). */
  mapping_result lookup_now(const identity::client_identity& id);

  /** Lookups currently cached / queued or running (tests, gauges). */
  std::size_t cached() const;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace cbagate::directory
