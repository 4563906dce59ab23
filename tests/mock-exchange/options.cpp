#include "options.hpp"

#include <charconv>
#include <string_view>

namespace cbagate::mock {
namespace {

template <class T>
bool to_number(std::string_view s, T& out) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && p == s.data() + s.size();
}

std::optional<endpoint_spec> parse_endpoint(std::string_view s) {
  endpoint_spec ep;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return std::nullopt;
    }
    ep.host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    ep.host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  if (ep.host.empty() || !to_number(port, ep.port)) return std::nullopt;
  return ep;
}

}  // namespace

std::string usage() {
  return R"(usage: mock-exchange --listen HOST:PORT [--listen ...] [options]
  --listen HOST:PORT             plain HTTP listener (port 0 = ephemeral), repeatable
  --tls-listen HOST:PORT         HTTPS listener, repeatable; needs --cert and --key
  --cert FILE --key FILE         server certificate chain (PEM, leaf first) and key
  --tls-request-client-cert      ask for a client certificate (any accepted) and echo its subject
  --ready-file PATH              once bound, write {"http":[...],"https":[...]} (PATH.tmp + rename)
  --request-log PATH             one JSON line per request, flushed per line ("-" = stdout)
  --ping-heartbeat-cap SECONDS   test mode: hold Pings at most this long (also lowers the min to 1)
  --ping-heartbeat-min SECONDS   smallest accepted HeartbeatInterval (default 60)
  --ping-heartbeat-max SECONDS   largest accepted HeartbeatInterval (default 3540)
  --ping-max-folders N           Ping Status 6 above this many folders (default 200)
  --identity-header NAME         header echoed as X-Mock-Identity (default X-Client-UPN)
  --threads N                    I/O threads (default 1)
  --idle-timeout SECONDS         keep-alive idle and per-read deadline (default 120)
  --max-header-bytes N           request header limit (default 1048576)
  --owa-frames N                 chunks per /owa/ev.owa2 response (default 3)
  --owa-frame-interval-ms MS     spacing of those chunks (default: the Ping cap, else 1000)
  --verbose                      one stderr line per request
  --negotiate-keytab FILE        accept Authorization: Negotiate with this (the backend's) keytab
  --negotiate-principal NAME     acceptor name (HTTP/host[@REALM] or HTTP@host); default any key
  --negotiate-rcache SPEC        replay cache: temp (per-process, default), none, or TYPE:RESIDUAL
  --require-negotiate            /owa, /ecp, /Microsoft-Server-ActiveSync need a valid token (401)
  --negotiate-persist            IIS authPersistNonNTLM: a Kerberos token on /owa, /ecp, ActiveSync
                                 authenticates its connection (Persistent-Auth: true); later
                                 requests on it need no token
  --negotiate-persist-max N      at most N token-less requests per authentication, then 401
                                 (default 0 = unlimited)
  --negotiate-challenge-delay-ms MS  hold the 401 to a token-less request MS ms first (a
                                 backend slow to ask again; default 0)
  --notification-wait-seconds S  how long a MAPI NotificationWait is held (default 60)
  --mapi-pending-ms MS           PENDING keep-alive period of MAPI responses (default 15000; 0 = none)
  --channel-bindings MODE        ignore (default) | require: TLS tokens must carry RFC 5929
                                 tls-server-end-point bindings of the mock's certificate
)";
}

parse_result parse_options(int argc, char** argv) {
  parse_result r;
  options o;
  bool min_set = false;
  auto fail = [&](std::string msg) {
    r.opts.reset();
    r.message = "mock-exchange: " + msg + "\n" + usage();
    r.exit_code = 2;
    return r;
  };
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view& out) {
      if (i + 1 >= argc) return false;
      out = argv[++i];
      return true;
    };
    std::string_view v;
    if (arg == "-h" || arg == "--help") {
      r.message = usage();
      return r;
    }
    if (arg == "--verbose") {
      o.verbose = true;
      continue;
    }
    if (arg == "--tls-request-client-cert") {
      o.request_client_cert = true;
      continue;
    }
    if (arg == "--require-negotiate") {
      o.require_negotiate = true;
      continue;
    }
    if (arg == "--negotiate-persist") {
      o.negotiate_persist = true;
      continue;
    }
    if (!value(v)) return fail(std::string(arg) + ": missing value or unknown option");
    if (arg == "--listen" || arg == "--tls-listen") {
      auto ep = parse_endpoint(v);
      if (!ep) return fail(std::string(arg) + ": expected HOST:PORT, got '" + std::string(v) + "'");
      (arg == "--listen" ? o.listen : o.tls_listen).push_back(*ep);
    } else if (arg == "--cert") {
      o.cert = v;
    } else if (arg == "--key") {
      o.key = v;
    } else if (arg == "--ready-file") {
      o.ready_file = v;
    } else if (arg == "--request-log") {
      o.request_log = v;
    } else if (arg == "--identity-header") {
      if (v.empty()) return fail("--identity-header: empty name");
      o.identity_header = v;
    } else if (arg == "--ping-heartbeat-cap") {
      unsigned n = 0;
      if (!to_number(v, n) || n == 0) return fail("--ping-heartbeat-cap: expected seconds >= 1");
      o.ping_cap = n;
    } else if (arg == "--ping-heartbeat-min") {
      if (!to_number(v, o.ping_min) || o.ping_min == 0) {
        return fail("--ping-heartbeat-min: expected seconds >= 1");
      }
      min_set = true;
    } else if (arg == "--ping-heartbeat-max") {
      if (!to_number(v, o.ping_max) || o.ping_max == 0) {
        return fail("--ping-heartbeat-max: expected seconds >= 1");
      }
    } else if (arg == "--ping-max-folders") {
      if (!to_number(v, o.ping_max_folders)) return fail("--ping-max-folders: expected a number");
    } else if (arg == "--threads") {
      if (!to_number(v, o.threads) || o.threads == 0 || o.threads > 256) {
        return fail("--threads: expected 1..256");
      }
    } else if (arg == "--idle-timeout") {
      unsigned n = 0;
      if (!to_number(v, n) || n == 0) return fail("--idle-timeout: expected seconds >= 1");
      o.idle_timeout = std::chrono::seconds(n);
    } else if (arg == "--max-header-bytes") {
      if (!to_number(v, o.max_header_bytes) || o.max_header_bytes < 1024 ||
          o.max_header_bytes > (std::size_t{1} << 30)) {
        return fail("--max-header-bytes: expected 1024..1073741824");
      }
    } else if (arg == "--owa-frames") {
      if (!to_number(v, o.owa_frames) || o.owa_frames == 0 || o.owa_frames > 1000) {
        return fail("--owa-frames: expected 1..1000");
      }
    } else if (arg == "--owa-frame-interval-ms") {
      unsigned n = 0;
      if (!to_number(v, n)) return fail("--owa-frame-interval-ms: expected milliseconds");
      o.owa_interval_ms = n;
    } else if (arg == "--negotiate-keytab") {
      if (v.empty()) return fail("--negotiate-keytab: empty path");
      o.negotiate_keytab = v;
    } else if (arg == "--negotiate-principal") {
      o.negotiate_principal = v;
    } else if (arg == "--negotiate-rcache") {
      if (v != "temp" && v != "none" && v.find(':') == std::string_view::npos) {
        return fail("--negotiate-rcache: expected temp, none or TYPE:RESIDUAL");
      }
      o.negotiate_rcache = v;
    } else if (arg == "--negotiate-persist-max") {
      if (!to_number(v, o.negotiate_persist_max)) return fail("--negotiate-persist-max: expected a number");
    } else if (arg == "--negotiate-challenge-delay-ms") {
      if (!to_number(v, o.negotiate_challenge_delay_ms) || o.negotiate_challenge_delay_ms > 600000) {
        return fail("--negotiate-challenge-delay-ms: expected 0..600000");
      }
    } else if (arg == "--notification-wait-seconds") {
      if (!to_number(v, o.notification_wait_s) || o.notification_wait_s > 3600) {
        return fail("--notification-wait-seconds: expected 0..3600");
      }
    } else if (arg == "--mapi-pending-ms") {
      if (!to_number(v, o.mapi_pending_ms)) return fail("--mapi-pending-ms: expected milliseconds");
    } else if (arg == "--channel-bindings") {
      if (v != "require" && v != "ignore") return fail("--channel-bindings: expected require or ignore");
      o.require_channel_bindings = v == "require";
    } else {
      return fail("unknown option " + std::string(arg));
    }
  }
  if (o.listen.empty() && o.tls_listen.empty()) return fail("give at least one --listen or --tls-listen");
  if (!o.tls_listen.empty() && (o.cert.empty() || o.key.empty())) {
    return fail("--tls-listen needs --cert and --key");
  }
  if (o.negotiate_keytab.empty() &&
      (o.require_negotiate || o.require_channel_bindings || !o.negotiate_principal.empty() ||
       o.negotiate_persist)) {
    return fail("--require-negotiate, --channel-bindings require, --negotiate-principal and "
                "--negotiate-persist need --negotiate-keytab");
  }
  if (o.ping_cap && !min_set) o.ping_min = 1;
  if (o.ping_min > o.ping_max) return fail("--ping-heartbeat-min is above --ping-heartbeat-max");
  r.opts = std::move(o);
  return r;
}

}  // namespace cbagate::mock
