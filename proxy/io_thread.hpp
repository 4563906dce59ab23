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
// Every operation on the sockets and timers of `ioc` starts on its own thread (other threads
// post to it: the drain, the directory and Kerberos workers, the revocation fetcher), so the
// reactor needs no lock per I/O operation (Asio's UNSAFE_IO hint: its scheduler and
// registrations still lock, posting from another thread stays safe).
struct io_thread {
  http::worker state;
  boost::asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  std::vector<std::unique_ptr<boost::asio::ip::tcp::acceptor>> acceptors;  // listener.cpp
  ~io_thread() { state.pool.reset(); }
  io_thread() = default;
  io_thread(const io_thread&) = delete;
  io_thread& operator=(const io_thread&) = delete;
};

}  // namespace cbagate
