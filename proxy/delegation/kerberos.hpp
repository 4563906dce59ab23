#pragma once
// Kerberos constrained delegation: the certificate's user -> `Authorization: Negotiate <token>`
// for the backend, by S4U2Self (protocol transition) + S4U2Proxy (constrained delegation) with
// the proxy's keytab. MIT krb5 GSSAPI; all KDC I/O is synchronous, so `async_token` runs it on a
// bounded worker pool with its own deadline and never on the caller's (I/O) thread.
#include "common/expected.hpp"
#include "config/snapshot.hpp"
#include "delegation/errc.hpp"

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::delegation {

/** Tuning that is not in the configuration file (defaults fit the proxy). */
struct kerberos_options {
  std::size_t workers = 4;             ///< worker threads doing GSSAPI calls (>= 1)
  std::size_t max_pending = 256;       ///< queued + running async requests; beyond: kdc_unreachable
  std::size_t cache_capacity = 10000;  ///< users whose delegated credential is kept (LRU)
  std::chrono::milliseconds deadline{5000};  ///< async_token gives up (kdc_unreachable) after this
  std::chrono::seconds renew_before{300};    ///< a cached credential is dropped this long before it expires
  /// A user the KDC refused (unknown, disabled, delegation refused) is answered from memory for
  /// this long: phones retry every few seconds and must not turn into a KDC flood. 0 = off.
  std::chrono::seconds refusal_ttl{60};
};

/** Counters since construction (monotonic, relaxed reads). */
struct kerberos_stats {
  std::uint64_t tokens = 0;            ///< tokens made
  std::uint64_t cache_hits = 0;        ///< tokens made from a cached delegated credential
  std::uint64_t cache_misses = 0;      ///< S4U2Self + S4U2Proxy exchanges started
  std::uint64_t evictions = 0;         ///< cache entries dropped (LRU or lifetime)
  std::uint64_t deadline_expired = 0;  ///< async_token answers given at the deadline
  std::uint64_t rejected_busy = 0;     ///< async_token answers given because max_pending was reached
  std::uint64_t errors[7] = {};        ///< by errc value (index 0 unused)
  std::uint64_t s4u_count = 0;         ///< completed cold exchanges ...
  std::uint64_t s4u_micros_total = 0;  ///< ... and their total duration
  /// GSS handles acquired on users' delegated credentials: one per cold exchange; a warm token
  /// reuses its cache entry's handle and acquires none.
  std::uint64_t credential_acquires = 0;
};

/**
 * Sets KRB5_CONFIG from `kerberos.krb5_config` when it is not empty. The variable is process
 * global: call this once at startup, before any thread or GSSAPI call exists.
 */
expected<void> apply_krb5_config(const config::kerberos_section& section);

/**
 * Maps a UPN to the Kerberos principal name to impersonate:
 * `realm`: "alice@lab.test" -> "alice@LAB.TEST" (the UPN suffix upper-cased; a bare name gets
 * `default_realm`); `enterprise`: the UPN unchanged (imported as an enterprise name).
 * Errors: internal for an empty or malformed UPN.
 */
expected<std::string> upn_to_principal(std::string_view upn, config::upn_mapping mapping,
                                       std::string_view default_realm);

/**
 * Makes per-request SPNEGO tokens for one (proxy principal, target SPN) pair.
 *
 * Cold user: the worker re-acquires its own proxy credential from the keytab (an AS exchange only
 * when the proxy TGT is due), S4U2Self for the user, S4U2Proxy to the target (both through the
 * krb5 mech, so failures carry raw krb5 codes), then stores the delegated credential in a private
 * MEMORY ccache cached per principal, with one GSS handle on it. Warm user: a new Kerberos
 * context on that shared handle, SPNEGO-wrapped; no KDC request, nothing acquired. Entries leave
 * the cache at the credential's lifetime (minus renew_before) or by LRU.
 *
 * Thread-safe. `negotiate_token` blocks (KDC I/O); `async_token` does not. Destroying the
 * delegator waits for running worker calls (a hung KDC can hold one for ~27 s).
 */
class kerberos_delegator {
 public:
  /**
   * Checks the section (keytab readable, names importable); does not contact the KDC.
   * Errors: keytab (unreadable keytab), internal (bad principal/SPN).
   */
  static expected<std::unique_ptr<kerberos_delegator>> create(const config::kerberos_section& section,
                                                             kerberos_options options = {});

  kerberos_delegator(const kerberos_delegator&) = delete;
  kerberos_delegator& operator=(const kerberos_delegator&) = delete;
  ~kerberos_delegator();

  /**
   * The base64 token for `Authorization: Negotiate <token>` acting as `upn` towards target_spn.
   * `channel_bindings`: the RFC 5929 tls-server-end-point hash of the upstream TLS connection
   * (the certificate's hash, not prefixed); empty for plain http. The token carries
   * application data "tls-server-end-point:" + hash. Blocks; each call yields a fresh token.
   */
  expected<std::string> negotiate_token(const std::string& upn,
                                        std::span<const unsigned char> channel_bindings);

  /**
   * negotiate_token on the worker pool; resumes on the awaiting coroutine's executor. At the
   * deadline it answers kdc_unreachable while the worker finishes in the background (its result
   * still fills the cache). Also kdc_unreachable at once when max_pending requests are in flight.
   * The awaiting executor's execution context must outlive this delegator (a worker posts its
   * completion there, possibly after the deadline).
   */
  boost::asio::awaitable<expected<std::string>> async_token(std::string upn,
                                                           std::vector<unsigned char> channel_bindings);

  /**
   * async_token for a principal named by the caller instead of one derived from a UPN: with
   * auth.mapping = "directory" the account the directory returned ("alice@LAB.TEST", issue 12).
   * Same pool, deadline, cache and errors.
   */
  boost::asio::awaitable<expected<std::string>> async_token_for_principal(
      std::string principal, std::vector<unsigned char> channel_bindings);

  /** The realm of the proxy's own principal (kerberos.principal after its '@'). */
  std::string realm() const;

  /** The principal a UPN maps to under this delegator's configuration. */
  expected<std::string> principal_for(std::string_view upn) const;

  /** Whether a usable delegated credential for `principal` is cached (no KDC request needed). */
  bool cached(const std::string& principal) const;

  /** Until when the delegated credential cached for `principal` stays usable; nullopt when none
   *  is cached. */
  std::optional<std::chrono::steady_clock::time_point> cached_until(const std::string& principal) const;

  /** Drops every cached credential (e.g. on configuration reload). */
  void clear_cache();

  kerberos_stats stats() const;

 private:
  struct impl;
  explicit kerberos_delegator(std::unique_ptr<impl> p);
  boost::asio::awaitable<expected<std::string>> async_token_impl(
      std::string name, std::vector<unsigned char> channel_bindings, bool is_principal);
  std::unique_ptr<impl> impl_;
};

}  // namespace cbagate::delegation
