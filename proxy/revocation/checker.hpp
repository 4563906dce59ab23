#pragma once
// Revocation status of verified client chains: CRL files, CRLs downloaded from CRL
// Distribution Points, OCSP (issue 5; contract in docs/revocation.md).
//
// Two objects:
//  - crl_files: the CRLs named by tls.crl, loaded and indexed by one runtime (rebuilt on
//    reload, immutable afterwards).
//  - checker: process-wide (survives reloads). Owns the CDP CRL cache, the OCSP cache and one
//    thread with its own io_context on which every download and OCSP exchange runs. I/O
//    threads only look up (a hash lookup and a binary search per certificate) and, when a
//    status needs a fetch, wait asynchronously for it.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "common/expected.hpp"
#include "identity/cert_ref.hpp"
#include "observability/metrics.hpp"

namespace cbagate::revocation {

enum class mode : std::uint8_t { off, crl, ocsp, crl_and_ocsp };
enum class status : std::uint8_t { good, revoked, unknown };
enum class source : std::uint8_t { none, crl_file, cdp, ocsp };

std::string_view to_string(status s) noexcept;   // "good", "revoked", "unknown"
std::string_view to_string(source s) noexcept;   // "none", "crl_file", "cdp", "ocsp"

/** The outcome for a whole chain. */
struct verdict {
  status state = status::unknown;
  source from = source::none;  ///< the source that decided (revoked/good), or that failed
  std::size_t index = 0;       ///< which certificate of the chain decided (0 = leaf)
  std::string reason;          ///< unknown: "no_crl", "stale_crl", "ocsp_unknown",
                               ///< "cdp <url>: timeout", "ocsp <url>: connect: ...", ...;
                               ///< revoked: the reason name ("keyCompromise") or "revoked"
};

class crl_files;

/** One server certificate to keep an OCSP response for (tls.ocsp_stapling = "auto"). */
struct staple_target {
  std::string leaf_der;    ///< the server certificate (DER)
  std::string issuer_der;  ///< its issuer (DER), which signs or delegates the response
  std::string url;         ///< the OCSP responder (http://, from the certificate's AIA)
  std::string name;        ///< for log lines: the certificate's subject
};

/** Receives each new DER OCSPResponse to staple, or nullptr when there is none any more (the
 *  last good one expired, or the certificate is revoked). Called on the fetch thread. */
using staple_publish = std::function<void(std::shared_ptr<const std::string>)>;

/** A running OCSP stapling refresh; destroying it stops the refresh, and `publish` is never
 *  called once the destructor has returned. Destroying it never blocks on I/O. */
class staple_feed {
 public:
  struct state;
  explicit staple_feed(std::shared_ptr<state> s) noexcept : state_(std::move(s)) {}
  ~staple_feed();
  staple_feed(const staple_feed&) = delete;
  staple_feed& operator=(const staple_feed&) = delete;

 private:
  std::shared_ptr<state> state_;
};

/** Per-runtime policy (config [revocation] plus the runtime's CRL files). */
struct policy {
  mode checks = mode::crl;
  /** crl mode: every certificate needs a status (explicit mode, or tls.crl non-empty). When
   *  false, a certificate without a file CRL for its issuer and without an http CDP (or with
   *  fetch_cdp false) is not checked (counts as good, source none). */
  bool strict = true;
  bool fetch_cdp = true;
  std::string ocsp_responder;  ///< "" = AIA of each certificate
  std::shared_ptr<const crl_files> files;  ///< may be null (no tls.crl)
};

/** Process-wide settings of the checker (config [revocation]; taken at startup, and
 *  replaced on reload through `checker::set_options`). */
struct options {
  std::chrono::milliseconds timeout{5000};
  std::size_t max_crl_bytes = 32u << 20;
  std::size_t max_ocsp_bytes = 64u << 10;
  std::chrono::seconds refresh_ahead{300};
  std::chrono::seconds retry_after{30};
  std::chrono::seconds default_lifetime{3600};
  std::chrono::seconds max_clock_skew{300};
  std::size_t cache_max_crls = 64;
  std::size_t cache_max_ocsp = 100000;
};

/** Errors of the revocation module (category "proxy.revocation"). Values are stable. */
enum class errc {
  crl_load_failed = 1,  ///< a tls.crl file: unreadable, unparsable, unknown issuer, bad signature,
                        ///< or an unsupported CRL (delta CRL, unhandled critical extension)
};

/** The "proxy.revocation" category. Thread-safe. */
const boost::system::error_category& revocation_category() noexcept;
boost::system::error_code make_error_code(errc e) noexcept;

namespace detail {
struct crl_index;
struct crl_set;
}  // namespace detail

/**
 * The CRLs of tls.crl: every CRL of each file (PEM, several, or one DER), its signature
 * verified against its issuer found in `issuers` (configured anchors and intermediates), then
 * indexed by issuer_id with a sorted serial list. A CRL whose issuer is not found, whose
 * signature fails, that cannot be parsed, or that is a delta CRL or carries an unhandled
 * critical extension is a load error naming the file (the reload keeps the previous runtime).
 * A CRL past nextUpdate loads (it is reported stale when used). When two CRLs of one issuer
 * are given, the one with the later thisUpdate is kept.
 *
 * Immutable after load; thread-safe.
 */
class crl_files {
 public:
  /**
   * @param error_detail when not null, receives the message on failure:
   *        "crl '<path>': <reason>".
   * @return errc::crl_load_failed on failure.
   */
  static expected<std::shared_ptr<const crl_files>> load(
      const std::vector<std::string>& paths, const identity::issuer_registry& issuers,
      std::string* error_detail);

  /** Number of CRLs loaded (for the cache gauge). */
  std::size_t size() const noexcept;

 private:
  friend class checker;
  std::shared_ptr<const detail::crl_set> impl_;
};

/**
 * Revocation status of chains from file CRLs, CDP CRLs and OCSP, with the caches and the
 * fetch thread. Thread-safe: every member may be called from any thread.
 */
class checker {
 public:
  /** Starts the fetch thread. `issuers` is the process-wide registry the verifier fills;
   *  `metrics` must outlive the checker. */
  checker(options opts, std::shared_ptr<const identity::issuer_registry> issuers,
          observability::registry& metrics);
  ~checker();  // stops and joins the fetch thread; pending waiters complete as unknown

  checker(const checker&) = delete;
  checker& operator=(const checker&) = delete;

  /** Replaces the options (reload). Thread-safe. */
  void set_options(const options& opts);

  /**
   * Non-blocking: the verdict when every certificate's status is known from the caches
   * (or unknown for a reason that waiting cannot change, e.g. no source at all, or a URL in
   * its retry_after window). std::nullopt when a fetch is needed: the fetch has been started
   * (or joined) and `async_check` should be awaited. Never allocates when the chain is good
   * and everything it needs is cached. May start a background refresh (the cached answer is
   * still returned).
   * @param now unix seconds (tests pass their own).
   */
  std::optional<verdict> try_check(const identity::chain_refs& chain, const policy& p,
                                   std::int64_t now) const;

  /**
   * Waits (asynchronously, on `ex`) for the fetches the chain needs, at most options.timeout,
   * then returns the verdict (unknown with reason "<kind> <url>: timeout" when a fetch did not
   * finish). Safe to call when try_check would have answered (it then does not suspend).
   * Precondition: `ex` is serialized (a strand or a single-threaded io_context): fetch
   * completions are posted to it. The chain and policy are copied into the coroutine.
   */
  boost::asio::awaitable<verdict> async_check(identity::chain_refs chain, policy p,
                                              boost::asio::any_io_executor ex);

  /** Counts one request's outcome (cbagate_revocation_checks_total{source,outcome});
   *  outcome "unknown_allowed" when `allowed_by_fail_open` and the verdict is unknown. */
  void count(const verdict& v, bool allowed_by_fail_open) noexcept;

  /** Sets cbagate_revocation_cache_entries{kind="crl_file"} (the running runtime's
   *  crl_files::size(); called at startup and reload). */
  void set_file_crl_count(std::size_t n) noexcept;

  /**
   * OCSP stapling: fetches the status of `target` from its responder on the fetch thread
   * (never on an I/O thread), now and then again before the response's nextUpdate
   * (refresh_ahead before it, or halfway through its validity if that comes first), and
   * publishes each good response (signature, CertID and times checked like a client
   * certificate's). When the responder is down or answers badly, the last good response is
   * kept until its nextUpdate and the fetch is retried after retry_after; a revoked or
   * unknown status withdraws the staple. Thread-safe.
   */
  std::unique_ptr<staple_feed> keep_stapled(staple_target target, staple_publish publish);

  /** Entries in the CDP and OCSP caches (also exported as the cache gauges). */
  std::size_t cdp_entries() const;
  std::size_t ocsp_entries() const;

 private:
  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace cbagate::revocation

template <>
struct boost::system::is_error_code_enum<cbagate::revocation::errc> : std::true_type {};
