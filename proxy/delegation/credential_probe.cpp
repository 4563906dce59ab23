#include "delegation/credential_probe.hpp"

namespace cbagate::delegation {

credential_probe::credential_probe(config::kerberos_section section, credential_result initial,
                                   std::chrono::seconds retry, std::chrono::seconds recheck,
                                   std::function<void(const credential_result&)> on_change)
    : section_(std::move(section)),
      last_(std::move(initial)),
      retry_(retry),
      recheck_(recheck),
      on_change_(std::move(on_change)),
      thread_([this] { run(); }) {}

credential_probe::~credential_probe() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

std::string credential_probe::problem() const {
  std::lock_guard lock(mutex_);
  return last_.error;
}

void credential_probe::set_section(config::kerberos_section section) {
  {
    std::lock_guard lock(mutex_);
    section_ = std::move(section);
  }
  wake_.notify_all();  // probe the new keytab now
}

void credential_probe::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    const auto wait = last_.ok() ? recheck_ : retry_;
    const config::kerberos_section before = section_;
    wake_.wait_for(lock, wait, [&] { return stop_ || !(section_ == before); });
    if (stop_) return;
    const config::kerberos_section section = section_;
    lock.unlock();
    credential_result r = acquire_proxy_credential(section);  // blocking: KDC I/O, no lock held
    lock.lock();
    if (stop_) return;
    const bool changed = r.ok() != last_.ok();
    last_ = std::move(r);
    if (changed && on_change_) {
      const credential_result copy = last_;
      lock.unlock();
      on_change_(copy);
      lock.lock();
    }
  }
}

}  // namespace cbagate::delegation
