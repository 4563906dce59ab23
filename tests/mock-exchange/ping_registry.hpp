#pragma once
// The held long-poll requests (ActiveSync Ping, Sync with Wait/HeartbeatInterval) of the mock,
// indexed by user and by (user, device), plus the per-device heartbeat cache. Shared by every
// I/O thread behind one mutex; waking a request posts to the strand of its connection.
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace cbagate::mock {

/** Why a held request ended early: 0 = not woken (heartbeat expired). */
enum class wake_reason : int { none = 0, superseded = 1, changes = 2 };

/**
 * One held request. Owned jointly by its coroutine and the registry; the timer belongs to the
 * connection's strand and is touched only there (wake posts to it).
 */
struct held_request {
  held_request(boost::asio::any_io_executor strand, std::string user_key, std::string device_key)
      : timer(std::move(strand)), user(std::move(user_key)), device(std::move(device_key)) {}
  boost::asio::steady_timer timer;
  std::atomic<int> reason{0};
  bool socket_event = false;  ///< strand-only: the held connection became readable
  std::string user;
  std::string device;
};

/** Registry of held requests; every member is thread-safe. */
class ping_registry {
 public:
  /**
   * Registers a request that will be held: its timer must already carry its deadline. A request
   * already held for the same non-empty (user, device) is woken as `superseded` (Z-Push ends the
   * older Ping when a newer one arrives).
   */
  void add(const std::shared_ptr<held_request>& h);

  /** Removes a request (idempotent). */
  void remove(const std::shared_ptr<held_request>& h);

  /** Wakes every request held for `user` with `reason`; returns how many were woken. */
  std::size_t notify(const std::string& user, wake_reason reason);

  /** Number of requests held now. */
  [[nodiscard]] std::size_t held() const;

  /** The last HeartbeatInterval accepted for (user, device), if any. */
  [[nodiscard]] std::optional<unsigned> heartbeat(const std::string& user,
                                                  const std::string& device) const;
  /** Remembers the HeartbeatInterval of (user, device). */
  void remember_heartbeat(const std::string& user, const std::string& device, unsigned seconds);

 private:
  static bool wake(const std::shared_ptr<held_request>& h, wake_reason reason);

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<std::shared_ptr<held_request>>> by_user_;
  std::unordered_map<std::string, std::weak_ptr<held_request>> by_device_;
  std::unordered_map<std::string, unsigned> heartbeats_;
  std::size_t held_ = 0;
};

}  // namespace cbagate::mock
