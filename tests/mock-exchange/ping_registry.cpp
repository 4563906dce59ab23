#include "ping_registry.hpp"

#include <boost/asio/post.hpp>

#include <algorithm>

namespace cbagate::mock {
namespace {

std::string device_key(const std::string& user, const std::string& device) {
  return user + '\n' + device;
}

}  // namespace

bool ping_registry::wake(const std::shared_ptr<held_request>& h, wake_reason reason) {
  int expected = 0;
  if (!h->reason.compare_exchange_strong(expected, static_cast<int>(reason))) return false;
  // expires_at (not cancel): if the coroutine has not started its wait yet, the wait still
  // completes at once instead of missing the wake-up.
  boost::asio::post(h->timer.get_executor(), [h] {
    h->timer.expires_at(std::chrono::steady_clock::time_point::min());
  });
  return true;
}

void ping_registry::add(const std::shared_ptr<held_request>& h) {
  std::shared_ptr<held_request> older;
  {
    std::lock_guard lock(mu_);
    by_user_[h->user].push_back(h);
    ++held_;
    if (!h->device.empty()) {
      auto& slot = by_device_[device_key(h->user, h->device)];
      older = slot.lock();
      slot = h;
    }
  }
  if (older && older != h) wake(older, wake_reason::superseded);
}

void ping_registry::remove(const std::shared_ptr<held_request>& h) {
  std::lock_guard lock(mu_);
  auto it = by_user_.find(h->user);
  if (it == by_user_.end()) return;
  auto& v = it->second;
  auto pos = std::find(v.begin(), v.end(), h);
  if (pos == v.end()) return;
  v.erase(pos);
  --held_;
  if (v.empty()) by_user_.erase(it);
  if (!h->device.empty()) {
    auto d = by_device_.find(device_key(h->user, h->device));
    if (d != by_device_.end() && d->second.lock() == h) by_device_.erase(d);
  }
}

std::size_t ping_registry::notify(const std::string& user, wake_reason reason) {
  std::vector<std::shared_ptr<held_request>> targets;
  {
    std::lock_guard lock(mu_);
    if (auto it = by_user_.find(user); it != by_user_.end()) targets = it->second;
  }
  std::size_t n = 0;
  for (const auto& h : targets) {
    if (wake(h, reason)) ++n;
  }
  return n;
}

std::size_t ping_registry::held() const {
  std::lock_guard lock(mu_);
  return held_;
}

std::optional<unsigned> ping_registry::heartbeat(const std::string& user,
                                                 const std::string& device) const {
  std::lock_guard lock(mu_);
  auto it = heartbeats_.find(device_key(user, device));
  if (it == heartbeats_.end()) return std::nullopt;
  return it->second;
}

void ping_registry::remember_heartbeat(const std::string& user, const std::string& device,
                                       unsigned seconds) {
  std::lock_guard lock(mu_);
  heartbeats_[device_key(user, device)] = seconds;
}

}  // namespace cbagate::mock
