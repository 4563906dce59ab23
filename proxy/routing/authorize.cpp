#include "routing/authorize.hpp"

namespace cbagate::routing {
namespace {

using identity::rejection;

// The reason that counts, whatever produced `id`: an identity is only as good as all its parts.
rejection effective_reason(const identity::client_identity& id, bool upn_by_directory) noexcept {
  if (!id.presented) return rejection::no_certificate;
  if (id.reason == rejection::none && id.upn.empty() && !upn_by_directory) return rejection::no_upn;
  return id.reason;
}

decision allow(bool forward_identity) noexcept {
  return decision{true, forward_identity, 0, 0, rejection::none};
}

decision deny(rejection reason) noexcept {
  return decision{false, false, 403, identity::iis_substatus(reason), reason};
}

}  // namespace

decision authorize(const config::route& route, const identity::client_identity& id,
                   bool upn_by_directory) noexcept {
  const rejection reason = effective_reason(id, upn_by_directory);
  switch (route.client_cert) {
    case config::route_cert_policy::none:
      return allow(false);
    case config::route_cert_policy::optional:
      if (!id.presented) return allow(false);
      return reason == rejection::none ? allow(true) : deny(reason);
    case config::route_cert_policy::require:
      return reason == rejection::none ? allow(true) : deny(reason);
  }
  return deny(reason == rejection::none ? rejection::invalid : reason);  // unknown policy value
}

}  // namespace cbagate::routing
