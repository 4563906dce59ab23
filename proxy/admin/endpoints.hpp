#pragma once
// The admin endpoints as a pure function of (method, target) and the server's read-only sources,
// so they are testable without sockets.
#include <functional>
#include <string>
#include <string_view>

namespace cbagate::observability {
class registry;
}

namespace cbagate::admin {

/** What the admin endpoints read. The callbacks are called on the admin strand: they must be
 *  cheap, non-blocking and thread-safe. An empty callback means "not available" (404). */
struct endpoint_sources {
  const observability::registry& registry;
  const std::function<bool()>& ready;
  const std::function<std::string()>& config_json;  ///< redacted configuration, JSON
  const std::function<std::string()>& certs_json;   ///< certificates and their expiry, JSON
  bool draining = false;
  /// Why the process is not ready ("" = ready); when set, it decides /readyz instead of `ready`.
  const std::function<std::string()>* not_ready_reason = nullptr;
};

/** A local reply of the admin listener. */
struct reply {
  unsigned status = 200;
  std::string_view content_type = "text/plain; charset=utf-8";
  std::string body;
  std::string_view allow;  ///< the Allow header on 405, "" otherwise
};

inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";
inline constexpr std::string_view json_content_type = "application/json";

/**
 * Answers one admin request. The query string is ignored; paths match exactly.
 *   GET /healthz -> 200 "ok"                       (the process is alive)
 *   GET /readyz  -> 200 "ready", 503 "draining" (draining wins), 503 "not ready", or with
 *                   not_ready_reason: 503 "not ready: <reason>"
 *   GET /metrics -> 200 registry.render(), metrics_content_type
 *   GET /config  -> 200 config_json(), or 404 when the callback is empty
 *   GET /certs   -> 200 certs_json(), or 404 when the callback is empty
 *   other paths  -> 404; a method other than GET on any path -> 405 with "Allow: GET"
 * A callback that throws gives 500 "internal error" (the exception text is not echoed).
 * Never throws; thread-safety as the sources'.
 */
reply answer(std::string_view method, std::string_view target, const endpoint_sources& src) noexcept;

}  // namespace cbagate::admin
