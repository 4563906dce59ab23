#pragma once
// One I/O thread of the composition root: its io_context, the per-thread session state and its
// listening sockets. Everything on it runs on that one thread.
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "http/runtime.hpp"

namespace cbagate {

// Destruction order matters: sessions still running at the drain deadline are coroutine frames
// suspended on `ioc`, destroyed by its destructor, and their destructors unregister from
// `state`. So `state` is declared before `ioc` (it outlives it), the acceptors after (they go
// first), and the pool, whose sockets belong to `ioc`, is dropped before `ioc` is destroyed
// (the integration test of a drain that cuts a held Ping crashed on exit with the old order).
struct io_thread {
  http::worker state;
  boost::asio::io_context ioc{1};
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors;  // listener.cpp
  ~io_thread() { state.pool.reset(); }
  io_thread() = default;
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;
};

}  // namespace cbagate
