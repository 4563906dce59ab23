#pragma once
// Command line of the mock Exchange backend (see README.md next to this file).
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace cbagate::mock {

/** A listen address as given ("127.0.0.1:0", "[::1]:8443"). */
struct endpoint_spec {
  std::string host;
  unsigned short port = 0;
};

/** Everything the command line sets. */
struct options {
  std::vector<endpoint_spec> listen;      ///< --listen (plain HTTP)
  std::vector<endpoint_spec> tls_listen;  ///< --tls-listen (HTTPS)
  std::string cert;                       ///< --cert: chain PEM, leaf first
  std::string key;                        ///< --key: private key PEM
  bool request_client_cert = false;       ///< --tls-request-client-cert: echo the peer's subject
  std::string ready_file;                 ///< --ready-file
  std::string request_log;                ///< --request-log ("-" = stdout)
  std::optional<unsigned> ping_cap;       ///< --ping-heartbeat-cap SECONDS
  unsigned ping_min = 60;                 ///< --ping-heartbeat-min (1 when a cap is set)
  unsigned ping_max = 3540;               ///< --ping-heartbeat-max
  unsigned ping_max_folders = 200;        ///< --ping-max-folders
  std::string identity_header = "X-Client-UPN";  ///< --identity-header
  unsigned threads = 1;                   ///< --threads
  std::chrono::seconds idle_timeout{120};  ///< --idle-timeout: keep-alive idle / read deadline
  std::size_t max_header_bytes = 1 << 20;  ///< --max-header-bytes
  unsigned owa_frames = 3;                ///< --owa-frames: chunks per ev.owa2 response
  std::optional<unsigned> owa_interval_ms;  ///< --owa-frame-interval-ms (default: cap or 1000)
  bool verbose = false;                   ///< --verbose: one stderr line per request
  std::string negotiate_keytab;           ///< --negotiate-keytab: the backend's keytab
  std::string negotiate_principal;        ///< --negotiate-principal ("" = any key in the keytab)
  std::string negotiate_rcache = "temp";  ///< --negotiate-rcache: temp | none | TYPE:RESIDUAL
  bool require_negotiate = false;         ///< --require-negotiate: 401 on /owa, /ecp, EAS
  bool require_channel_bindings = false;  ///< --channel-bindings require (default ignore)
  bool negotiate_persist = false;         ///< --negotiate-persist: IIS authPersistNonNTLM
  unsigned negotiate_persist_max = 0;     ///< --negotiate-persist-max: token-less requests per
                                          ///< authentication (0 = unlimited)
  unsigned negotiate_challenge_delay_ms = 0;  ///< --negotiate-challenge-delay-ms: hold the 401
                                              ///< to a token-less request this long
  unsigned notification_wait_s = 60;      ///< --notification-wait-seconds: MAPI NotificationWait hold
  unsigned mapi_pending_ms = 15000;       ///< --mapi-pending-ms: PENDING keep-alive period, 0 = none
};

/** The result of parsing: options, a message to print and exit 0 (help), or an error. */
struct parse_result {
  std::optional<options> opts;
  std::string message;
  int exit_code = 0;
};

/** Parses argv; never throws. */
[[nodiscard]] parse_result parse_options(int argc, char** argv);

/** The usage text. */
[[nodiscard]] std::string usage();

}  // namespace cbagate::mock
