#pragma once
// The service manager's view of the process (config/systemd/cbagate.service, Type=notify):
// sd_notify(3) messages. Without a manager (NOTIFY_SOCKET unset) every call does nothing.
#include <string_view>

namespace cbagate::service {

/** READY=1 with a status line: every listener is bound and accepting. */
void ready(std::string_view status) noexcept;

/** RELOADING=1 (with MONOTONIC_USEC): a SIGHUP reload starts; ready() again when it is done,
 *  whether it was applied or refused (the running configuration serves either way). */
void reloading() noexcept;

/** STOPPING=1: a drain started (no new connections). */
void stopping(std::string_view status) noexcept;

/** STATUS=...: a line `systemctl status` shows. */
void status(std::string_view text) noexcept;

}  // namespace cbagate::service
