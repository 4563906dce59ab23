#pragma once
// The Exchange namespace (issue 10): which methods and timeouts each virtual directory needs
// when its route does not say. Pure functions on values; the session asks them per request.
#include <chrono>
#include <span>
#include <string>
#include <string_view>

#include "config/snapshot.hpp"

namespace cbagate::routing {

/** An Exchange virtual directory and what its clients use. */
struct virtual_directory {
  std::string_view name;                       ///< "/rpc" (matched case-insensitively)
  std::span<const std::string_view> methods;   ///< route.methods default
  std::chrono::seconds response_timeout{0};    ///< route.response_timeout default; 0 = global
};

/**
 * The virtual directory named by the first path segment of a route prefix ("/rpc",
 * "/rpc/rpcproxy.dll" and "/RPC" are /rpc), or nullptr ("/", "/mock", unknown names).
 */
const virtual_directory* virtual_directory_of(std::string_view prefix) noexcept;

/** Whether the route restricts methods: route.methods given, or a known virtual directory. */
bool restricts_methods(const config::route& r) noexcept;

/**
 * Whether `method` (as sent, case-sensitive) may be forwarded on `r`. A route that restricts
 * methods allows exactly its list (the caller answers 405 with allow_header() otherwise); any
 * other route allows every method here (the caller still refuses CONNECT and methods it does not
 * know with 501, as before).
 */
bool method_allowed(const config::route& r, std::string_view method) noexcept;

/** The Allow header value of a 405 on a restricting route: its methods joined with ", ". */
std::string allow_header(const config::route& r);

/** The route's response timeout: its own, else its virtual directory's, else `global`. */
config::seconds_f response_timeout(const config::route& r, config::seconds_f global) noexcept;

/**
 * Whether a request is one of Outlook's long-lived channels: RPC_IN_DATA / RPC_OUT_DATA
 * (Outlook Anywhere, [MS-RPCH] 2.1.2.1: one direction streams for many minutes) or a MAPI over
 * HTTP NotificationWait ([MS-OXCMAPIHTTP] 2.2.4.4: held until an event). `request_type` is the
 * X-RequestType header ("" when absent).
 */
bool is_long_lived(std::string_view method, std::string_view request_type) noexcept;

/**
 * Whether the client's Authorization may reach the backend on `r` for a request that forwards
 * a certificate identity (`forwards_identity`) or not: never with an identity; otherwise
 * route.pass_authorization, absent = true on "none"/"optional" routes, false on "require".
 */
bool passes_authorization(const config::route& r, bool forwards_identity) noexcept;

/**
 * Whether normalized `path` is the one a redirect route (route.redirect, issue 13) answers with
 * 302: exactly its prefix, with or without one trailing "/" (case-insensitive, as matching is).
 * Other paths under the prefix get 404.
 */
bool is_redirect_target(const config::route& r, std::string_view path) noexcept;

}  // namespace cbagate::routing
