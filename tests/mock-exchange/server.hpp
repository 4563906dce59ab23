#pragma once
// The mock Exchange backend's server: listeners, one coroutine per connection, the request
// handlers (ActiveSync, OWA, ECP, health check, test hooks) and the request log.
#include "options.hpp"

namespace cbagate::mock {

/**
 * Binds every listener, writes the ready file, serves until SIGINT/SIGTERM, then returns.
 * @return the process exit code: 0 after a signal, 1 when a listener, the TLS context, the
 *         request log or the ready file cannot be set up (the reason is printed on stderr).
 */
int run_server(const options& opts);

}  // namespace cbagate::mock
