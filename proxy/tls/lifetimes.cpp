#include "tls/lifetimes.hpp"

#include <algorithm>

namespace cbagate::tls {
namespace {

int level_at(std::int64_t end, std::int64_t now) {
  if (end <= now) return 3;
  if (end - now <= 86400) return 2;
  if (end - now <= 7 * 86400) return 1;
  return 0;
}

}  // namespace

void lifetimes::update(const inspection& files, std::int64_t now) {
  std::lock_guard lock(mutex_);
  certificates_ = files.certificates;
  crls_ = files.crls;
  announced_.clear();
  for (const auto& c : certificates_)
    announced_[key{"certificate", c.file, c.subject, c.not_after}] = level_at(c.not_after, now);
  for (const auto& c : crls_)
    if (c.next_update != 0)
      announced_[key{"CRL", c.file, c.issuer, c.next_update}] = level_at(c.next_update, now);
}

void lifetimes::register_metrics(observability::registry& r) {
  r.add_sampled_gauge(
      "cbagate_certificate_expiry_seconds",
      "notAfter (unix seconds) of the server, SNI and CA certificates of the running configuration",
      [this] {
        std::map<std::pair<std::string, std::string>, std::int64_t> earliest;
        {
          std::lock_guard lock(mutex_);
          for (const auto& c : certificates_) {
            auto [it, fresh] = earliest.emplace(std::pair{c.kind, c.subject}, c.not_after);
            if (!fresh) it->second = std::min(it->second, c.not_after);
          }
        }
        std::vector<observability::registry::sample> out;
        for (const auto& [k, v] : earliest)
          out.push_back({{{"kind", k.first}, {"subject", k.second}}, static_cast<double>(v)});
        return out;
      });
  r.add_sampled_gauge(
      "cbagate_crl_next_update_seconds",
      "nextUpdate (unix seconds) of the CRLs of tls.crl; past it a CRL is stale",
      [this] {
        std::map<std::string, std::int64_t> earliest;
        {
          std::lock_guard lock(mutex_);
          for (const auto& c : crls_) {
            if (c.next_update == 0) continue;
            auto [it, fresh] = earliest.emplace(c.issuer, c.next_update);
            if (!fresh) it->second = std::min(it->second, c.next_update);
          }
        }
        std::vector<observability::registry::sample> out;
        for (const auto& [issuer, v] : earliest)
          out.push_back({{{"issuer", issuer}}, static_cast<double>(v)});
        return out;
      });
}

std::string lifetimes::every_issuer_blocked_by_stale_crls(std::int64_t now) const {
  std::lock_guard lock(mutex_);
  std::map<std::string, std::int64_t> stale;  // issuer -> the latest nextUpdate of its CRLs
  std::map<std::string, bool> fresh;
  for (const auto& c : crls_) {
    if (c.next_update != 0 && c.next_update <= now)
      stale[c.issuer] = std::max(stale[c.issuer], c.next_update);
    else
      fresh[c.issuer] = true;
  }
  for (const auto& [issuer, _] : fresh) stale.erase(issuer);  // a current CRL of the same issuer
  if (stale.empty()) return {};
  std::map<std::string, std::string> parent;  // CA subject -> its issuer
  std::vector<std::string> cas;
  for (const auto& c : certificates_) {
    if (c.kind != "client_ca" && c.kind != "client_intermediate") continue;
    if (parent.emplace(c.subject, c.issuer).second) cas.push_back(c.subject);
  }
  if (cas.empty()) return {};
  std::size_t issuing = 0;
  for (const auto& ca : cas) {
    bool issues_a_ca = false;
    for (const auto& other : cas) issues_a_ca |= other != ca && parent[other] == ca;
    if (issues_a_ca) continue;
    ++issuing;
    bool blocked = false;
    std::string at = ca;
    for (std::size_t depth = 0; depth < 16 && !blocked; ++depth) {
      blocked = stale.count(at) != 0;
      auto up = parent.find(at);
      if (up == parent.end() || up->second == at) break;
      at = up->second;
    }
    if (!blocked) return {};
  }
  if (issuing == 0) return {};
  std::string names;
  for (const auto& [issuer, next] : stale)
    names += (names.empty() ? "" : ", ") + issuer + " (nextUpdate " + relative(next, now) + ")";
  return "revocation status unknown for every client certificate: stale CRL of " + names;
}

std::vector<std::string> lifetimes::due(std::int64_t now) {
  std::vector<std::string> out;
  std::lock_guard lock(mutex_);
  auto check = [&](const char* what, const std::string& file, const std::string& name,
                   std::int64_t end, const char* verb_future, const char* verb_past) {
    if (end == 0) return;
    const int level = level_at(end, now);
    int& seen = announced_[key{what, file, name, end}];
    if (level <= seen) return;
    seen = level;
    out.push_back(std::string(what) + " " + name + " (" + file + ") " +
                  (level == 3 ? std::string(verb_past) + " " + relative(end, now)
                              : std::string(verb_future) + " " + relative(end, now)));
  };
  for (const auto& c : certificates_) check("certificate", c.file, c.subject, c.not_after, "expires", "expired");
  for (const auto& c : crls_)
    check("CRL", c.file, c.issuer, c.next_update, "runs out (nextUpdate)",
          "is stale: revocation status unknown for what it covers; its nextUpdate passed");
  return out;
}

}  // namespace cbagate::tls
