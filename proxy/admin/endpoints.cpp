#include "admin/endpoints.hpp"

#include "observability/metrics.hpp"

#include <exception>

namespace cbagate::admin {

namespace {

reply text(unsigned status, std::string body) {
  reply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

reply json_or_404(const std::function<std::string()>& source) {
  if (!source) {
    return text(404, "not found\n");
  }
  reply r;
  r.content_type = json_content_type;
  r.body = source();
  return r;
}

reply dispatch(std::string_view method, std::string_view path, const endpoint_sources& src) {
  // The admin surface is GET-only: any other method gets 405 on every path, known or not.
  if (method != "GET") {
    reply r = text(405, "method not allowed\n");
    r.allow = "GET";
    return r;
  }
  if (path == "/healthz") {
    return text(200, "ok\n");
  }
  if (path == "/readyz") {
    if (src.draining) {
      return text(503, "draining\n");
    }
    if (src.not_ready_reason != nullptr && *src.not_ready_reason) {
      const std::string why = (*src.not_ready_reason)();
      return why.empty() ? text(200, "ready\n") : text(503, "not ready: " + why + "\n");
    }
    const bool ready = src.ready && src.ready();
    return ready ? text(200, "ready\n") : text(503, "not ready\n");
  }
  if (path == "/metrics") {
    reply r;
    r.content_type = metrics_content_type;
    r.body = src.registry.render();
    return r;
  }
  if (path == "/config") {
    return json_or_404(src.config_json);
  }
  if (path == "/certs") {
    return json_or_404(src.certs_json);
  }
  return text(404, "not found\n");
}

}  // namespace

reply answer(std::string_view method, std::string_view target, const endpoint_sources& src) noexcept {
  const std::string_view path = target.substr(0, target.find('?'));
  try {
    return dispatch(method, path, src);
  } catch (const std::exception&) {
    // Callbacks belong to other modules; a failure there must not take the listener down.
  }
  try {
    return text(500, "internal error\n");
  } catch (const std::exception&) {
    return reply{500, "text/plain; charset=utf-8", {}, {}};
  }
}

}  // namespace cbagate::admin
