#pragma once
// The composition root: builds everything from a configuration snapshot, runs the I/O threads,
// handles signals (SIGHUP reload, SIGTERM/SIGINT drain) and the admin listener. Holds no
// request logic.
#include <memory>
#include <string>

#include "config/snapshot.hpp"
#include "delegation/keytab.hpp"

namespace cbagate {

struct server_options {
  std::string config_path;  // reloaded from here on SIGHUP
  std::string ready_file;   // "" = none; else JSON with the bound addresses once listening
  delegation::credential_result kerberos;  // the start-up AS exchange (preflight), Kerberos mode
};

/**
 * Runs the proxy until a drain completes. Returns the process exit code: 0 after a clean drain,
 * 1 when startup failed (the reason is logged and printed).
 */
int run_server(std::shared_ptr<const config::snapshot> cfg, const server_options& options);

}  // namespace cbagate
