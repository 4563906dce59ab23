// mock-exchange: a loopback stand-in for Exchange behind cbagate in integration and load tests.
// See README.md next to this file for the command line, the request log and the test hooks.
#include "options.hpp"
#include "server.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  auto parsed = cbagate::mock::parse_options(argc, argv);
  if (!parsed.opts) {
    std::fputs(parsed.message.c_str(), parsed.exit_code == 0 ? stdout : stderr);
    return parsed.exit_code;
  }
  return cbagate::mock::run_server(*parsed.opts);
}
