#include "routing/namespace.hpp"

#include <array>

#include "config/validate.hpp"

namespace cbagate::routing {
namespace {

using namespace std::string_view_literals;

constexpr std::array read_write{"GET"sv, "HEAD"sv, "POST"sv};
constexpr std::array read_only{"GET"sv, "HEAD"sv};
// RPC over HTTP v2: the two channel methods; GET/HEAD for /rpc/healthcheck.htm (load balancers).
constexpr std::array rpc{"GET"sv, "HEAD"sv, "RPC_IN_DATA"sv, "RPC_OUT_DATA"sv};
// MS-ASHTTP: OPTIONS (protocol discovery) and POST (commands); GET/HEAD answered by Exchange.
constexpr std::array activesync{"GET"sv, "HEAD"sv, "OPTIONS"sv, "POST"sv};

// Channels and long polls wait for an hour (a quiet Outlook keeps them open that long).
constexpr std::chrono::seconds long_wait{3600};

constexpr std::array<virtual_directory, 9> directories{{
    {"/owa", read_write, {}},
    {"/ecp", read_write, {}},
    {"/Microsoft-Server-ActiveSync", activesync, {}},
    {"/Autodiscover", read_write, {}},
    {"/EWS", read_write, {}},
    {"/mapi", read_write, long_wait},
    {"/rpc", rpc, long_wait},
    {"/OAB", read_only, {}},
    {"/PowerShell", read_write, {}},
}};

std::string_view first_segment(std::string_view prefix) noexcept {
  if (prefix.size() < 2 || prefix.front() != '/') return {};
  const std::size_t end = prefix.find('/', 1);
  return prefix.substr(0, end);
}

}  // namespace

const virtual_directory* virtual_directory_of(std::string_view prefix) noexcept {
  const std::string_view seg = first_segment(prefix);
  if (seg.empty()) return nullptr;
  for (const virtual_directory& d : directories) {
    if (config::iequals(d.name, seg)) return &d;
  }
  return nullptr;
}

bool restricts_methods(const config::route& r) noexcept {
  return !r.methods.empty() || virtual_directory_of(r.prefix) != nullptr;
}

bool method_allowed(const config::route& r, std::string_view method) noexcept {
  if (!r.methods.empty()) {
    for (const std::string& m : r.methods) {
      if (m == method) return true;
    }
    return false;
  }
  const virtual_directory* d = virtual_directory_of(r.prefix);
  if (d == nullptr) return true;
  for (const std::string_view m : d->methods) {
    if (m == method) return true;
  }
  return false;
}

std::string allow_header(const config::route& r) {
  std::string out;
  auto add = [&out](std::string_view m) {
    if (!out.empty()) out += ", ";
    out += m;
  };
  if (!r.methods.empty()) {
    for (const std::string& m : r.methods) add(m);
  } else if (const virtual_directory* d = virtual_directory_of(r.prefix)) {
    for (const std::string_view m : d->methods) add(m);
  }
  return out;
}

config::seconds_f response_timeout(const config::route& r, config::seconds_f global) noexcept {
  if (r.response_timeout.count() > 0) return r.response_timeout;
  if (const virtual_directory* d = virtual_directory_of(r.prefix);
      d != nullptr && d->response_timeout.count() > 0)
    return d->response_timeout;
  return global;
}

bool is_long_lived(std::string_view method, std::string_view request_type) noexcept {
  return method == "RPC_IN_DATA" || method == "RPC_OUT_DATA" ||
         config::iequals(request_type, "NotificationWait");
}

bool passes_authorization(const config::route& r, bool forwards_identity) noexcept {
  if (forwards_identity) return false;
  if (r.pass_authorization) return *r.pass_authorization;
  return r.client_cert != config::route_cert_policy::require;
}

bool is_redirect_target(const config::route& r, std::string_view path) noexcept {
  const std::string_view prefix = r.prefix;
  auto same = [](std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      char x = a[i], y = b[i];
      if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
      if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
      if (x != y) return false;
    }
    return true;
  };
  if (same(path, prefix)) return true;
  return prefix != "/" && path.size() == prefix.size() + 1 && path.back() == '/' &&
         same(path.substr(0, prefix.size()), prefix);
}

}  // namespace cbagate::routing
