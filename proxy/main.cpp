// cbagate: client-certificate authentication in front of Microsoft Exchange.
// Command line in the manner of nginx: -c FILE to run, -t/--check-config to test a file.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <string_view>

#include "config/load.hpp"
#include "config/schema.hpp"
#include "explain.hpp"
#include "observability/log.hpp"
#include "preflight.hpp"
#include "server.hpp"
#include "tls/ticket_keys.hpp"

namespace {

constexpr const char* default_config = "/etc/cbagate/cbagate.toml";

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: cbagate [-c FILE] [--ready-file PATH]\n"
               "       cbagate --check-config FILE   (or -t [-c FILE])\n"
               "       cbagate --new-ticket-keys FILE\n"
               "       cbagate --explain-certificate CERT [--config FILE]\n"
               "       cbagate --print-schema | --version | --help\n"
               "\n"
               "  -c, --config FILE     configuration to run (default %s)\n"
               "  -t, --check-config    load and validate the configuration, bind nothing;\n"
               "                        exit 0 when valid, 2 when not (like nginx -t)\n"
               "      --explain-certificate CERT  what cbagate and AD make of a client certificate:\n"
               "                        UPN, SID extension, the strong altSecurityIdentities\n"
               "                        strings to paste into AD; with --config also the chain\n"
               "                        verdict and the directory's (exit 0 accepted, 1 not)\n"
               "      --print-schema    every configuration key with type, default and meaning\n"
               "      --ready-file PATH once listening, write the bound addresses there (JSON)\n"
               "      --new-ticket-keys FILE\n"
               "                        write a session-ticket key file for tls.ticket_keys\n"
               "                        (mode 0600); an existing FILE gets a new first key and\n"
               "                        keeps its previous ones (rotation in one command)\n"
               "  -v, --version         print the version\n"
               "  -h, --help            this text\n"
               "\n"
               "Signals: SIGHUP reloads the configuration and certificates, SIGTERM or SIGINT\n"
               "drains (no new connections, in-flight requests finish within timeouts.drain).\n",
               default_config);
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = default_config;
  std::string ready_file;
  bool check = false;
  std::string explain;
  bool config_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string& out) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "cbagate: %s needs a value\n", argv[i]);
        std::exit(2);
      }
      out = argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else if (a == "-v" || a == "--version") {
      std::printf("cbagate %s\n", CBAGATE_VERSION);
      return 0;
    } else if (a == "--print-schema") {
      cbagate::config::print_schema(std::cout);
      return 0;
    } else if (a == "-c" || a == "--config") {
      value(config_path);
      config_given = true;
    } else if (a == "--explain-certificate") {
      value(explain);
    } else if (a == "-t") {
      check = true;
    } else if (a == "--check-config") {
      check = true;
      if (i + 1 < argc && argv[i + 1][0] != '-') config_path = argv[++i];
    } else if (a == "--new-ticket-keys") {
      std::string file;
      value(file);
      std::string message;
      const bool ok = cbagate::tls::write_new_ticket_key_file(file, message);
      std::fprintf(ok ? stdout : stderr, "cbagate: %s\n", message.c_str());
      return ok ? 0 : 1;
    } else if (a == "--ready-file") {
      value(ready_file);
    } else {
      std::fprintf(stderr, "cbagate: unknown argument '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }

  // libldap writes to its sockets with write(): a domain controller that closed the connection
  // must cost an error code, never the process (Asio and OpenSSL already avoid SIGPIPE).
  std::signal(SIGPIPE, SIG_IGN);
  if (!explain.empty()) {
    return cbagate::explain_certificate(explain, config_given ? config_path : std::string(),
                                        std::cout, std::cerr);
  }
  if (check) return cbagate::check_config(config_path, std::cout, std::cerr);

  auto loaded = cbagate::config::load_file(config_path);
  if (!loaded.ok()) {
    for (const auto& d : loaded.errors) std::cerr << d.to_string() << "\n";
    std::cerr << "cbagate: configuration file " << config_path << " test failed\n";
    return 2;
  }
  const auto& cfg = *loaded.value;
  if (auto r = cbagate::observability::init_logging(cfg.log.level, cfg.log.path); !r) {
    std::fprintf(stderr, "cbagate: log: %s\n", r.error().message().c_str());
    return 2;
  }
  // Everything --check-config does, before anything is bound: a broken file or a keytab that
  // gets no ticket stops here with the same message; warnings (expiry, missing chain) are logged.
  auto& log = *cbagate::observability::logger("main");
  const std::int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  const auto pre = cbagate::preflight(cfg, now);
  for (const auto& w : pre.warnings) log.warn("startup: {}", w);
  if (!pre.ok()) {
    for (const auto& e : pre.errors) {
      log.critical("startup: {}", e);
      std::fprintf(stderr, "cbagate: %s\n", e.c_str());
    }
    return 1;
  }
  if (pre.kerberos_ticket_expires != 0)
    log.info("kerberos: ticket for {} acquired with keytab {} (expires {})", cfg.kerberos.principal,
             cfg.kerberos.keytab, cbagate::tls::relative(pre.kerberos_ticket_expires, now));
  return cbagate::run_server(loaded.value, {config_path, ready_file, pre.kerberos});
}
