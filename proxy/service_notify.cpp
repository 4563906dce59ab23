#include "service_notify.hpp"

#include <time.h>

#include <string>

#include <systemd/sd-daemon.h>

namespace cbagate::service {
namespace {

void send(const std::string& message) noexcept {
  // unset_environment = 0: a reload notifies again. The result is ignored on purpose: no
  // manager (< 0 or 0) is the normal case outside systemd.
  (void)sd_notify(0, message.c_str());
}

std::string status_line(std::string_view text) {
  std::string s(text);
  for (char& c : s)
    if (c == '\n') c = ' ';
  return "STATUS=" + s;
}

}  // namespace

void ready(std::string_view text) noexcept {
  try {
    send("READY=1\n" + status_line(text));
  } catch (...) {
  }
}

void reloading() noexcept {
  try {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    const unsigned long long usec =
        static_cast<unsigned long long>(ts.tv_sec) * 1'000'000ULL + static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
    send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=reloading");
  } catch (...) {
  }
}

void stopping(std::string_view text) noexcept {
  try {
    send("STOPPING=1\n" + status_line(text));
  } catch (...) {
  }
}

void status(std::string_view text) noexcept {
  try {
    send(status_line(text));
  } catch (...) {
  }
}

}  // namespace cbagate::service
