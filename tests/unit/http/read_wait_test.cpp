// The read-readiness wait of http/read_wait.hpp, on a real loopback TCP pair and a
// single-threaded io_context driven with poll(): poll() runs what is ready now and never
// blocks, so every check is about readiness, not time.
#include "http/read_wait.hpp"

#include <sys/socket.h>

#include <optional>
#include <string_view>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>

#if CBAGATE_HAS_READ_WAIT

namespace {

namespace net = boost::asio;
using net::ip::tcp;
using cbagate::http::detail::async_read_wait;
using cbagate::http::detail::recv_state;
using cbagate::http::detail::reactor_of;

struct pair_fixture {
  net::io_context ioc{1};
  tcp::socket server{ioc};  // the waited-on side, as a client connection in the proxy
  tcp::socket client{ioc};
  std::optional<boost::system::error_code> result;

  pair_fixture() {
    tcp::acceptor acc(ioc, tcp::endpoint(net::ip::address_v4::loopback(), 0));
    client.connect(acc.local_endpoint());
    acc.accept(server);
    server.non_blocking(true);
  }
  void wait(recv_state st) {
    result.reset();
    async_read_wait(server, reactor_of(server), st, /*sole_reader=*/true,
                    [this](boost::system::error_code ec) { result = ec; });
  }
  void send(const char* bytes, std::size_t n) { net::write(client, net::buffer(bytes, n)); }
  // Runs what is ready, a bounded number of times (each poll() harvests readiness once).
  void settle() {
    for (int i = 0; i < 4; ++i) ioc.poll();
    ioc.restart();
  }
  // The peer sends `bytes`, and what that makes ready runs.
  void arrive(std::string_view bytes) {
    send(bytes.data(), bytes.size());
    settle();
  }
  // The last wait completed, without an error.
  bool completed() const { return result && !*result; }
  std::size_t drain() {
    char buf[64];
    const ssize_t n = ::recv(server.native_handle(), buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }
};

TEST_CASE("read_wait: queued on an empty socket, completed by the next arrival") {
  pair_fixture f;
  f.wait(recv_state::drained);
  f.settle();
  CHECK_FALSE(f.result);  // nothing there: the wait is pending
  f.arrive("x");
  REQUIRE(f.completed());
  CHECK(f.drain() == 1);
}

TEST_CASE("read_wait: bytes that came while nobody waited complete the next wait at once") {
  pair_fixture f;
  // A first wait and its event, so that the descriptor is registered and exhausted.
  f.wait(recv_state::drained);
  f.arrive("a");
  REQUIRE(f.result);
  CHECK(f.drain() == 1);
  // Now bytes arrive and their event is harvested while no wait is pending (as while the
  // proxy talks to the backend): the next wait must not sleep on an edge already consumed.
  f.arrive("b");
  f.wait(recv_state::drained);
  f.settle();
  REQUIRE(f.completed());
  CHECK(f.drain() == 1);
}

TEST_CASE("read_wait: bytes left behind by a full read are seen only when the reader says so") {
  pair_fixture f;
  f.wait(recv_state::drained);
  f.arrive("ab");
  REQUIRE(f.result);
  // The reader took one byte of two (its buffer was full): the socket still holds one, and no
  // new event will come for it. A wait told so looks first and completes.
  char one = 0;
  REQUIRE(::recv(f.server.native_handle(), &one, 1, MSG_DONTWAIT) == 1);
  f.wait(recv_state::maybe_pending);
  f.settle();
  REQUIRE(f.completed());
  CHECK(f.drain() == 1);
}

TEST_CASE("read_wait: an end of stream that came with the last bytes is seen when the reader says so") {
  pair_fixture f;
  f.wait(recv_state::drained);
  f.settle();
  REQUIRE_FALSE(f.result);
  // A client that sends its last request and closes at once: the bytes and the FIN make one
  // readiness event, which this wait consumes.
  f.send("ab", 2);
  f.client.shutdown(tcp::socket::shutdown_send);
  f.settle();
  REQUIRE(f.result);
  // The reader's short read takes the bytes; the end of stream stays, and no new event will
  // come for it. Not waiting on it would keep a dead connection until its idle timeout.
  char two[8];
  REQUIRE(::recv(f.server.native_handle(), two, sizeof two, MSG_DONTWAIT) == 2);
  f.wait(recv_state::maybe_pending);
  f.settle();
  REQUIRE(f.completed());
  char byte = 0;
  CHECK(::recv(f.server.native_handle(), &byte, 1, MSG_DONTWAIT) == 0);
}

TEST_CASE("read_wait: after the waiter's own EAGAIN, an arrival completes the wait") {
  pair_fixture f;
  // An event harvested while nobody waited sets Asio's flag (as a backend's answer read
  // without a wait does); the bytes are then read to EAGAIN in the same handler run.
  f.wait(recv_state::drained);
  f.arrive("a");
  REQUIRE(f.result);
  f.arrive("b");
  CHECK(f.drain() == 2);
  REQUIRE(f.drain() == 0);  // EAGAIN: drained now
  f.wait(recv_state::drained_now);
  f.settle();
  CHECK_FALSE(f.result);  // queued: nothing there
  f.arrive("c");
  REQUIRE(f.completed());
  CHECK(f.drain() == 1);
}

TEST_CASE("read_wait: drained_now is trusted: the wait does not look") {
  pair_fixture f;
  f.wait(recv_state::drained);
  f.arrive("a");
  REQUIRE(f.result);
  // A byte is there, its event consumed by the wait above, and the caller claims EAGAIN: the
  // wait queues without a peek (what saves the system call) and sleeps until the next event.
  f.wait(recv_state::drained_now);
  f.settle();
  CHECK_FALSE(f.result);
  // The same socket and flag with `drained`: the reactor's flag makes it look, and it
  // completes at once.
  f.server.cancel();
  f.settle();
  REQUIRE(f.result);
  f.arrive("b");  // event harvested with no wait pending: Asio's flag is set
  f.wait(recv_state::drained);
  f.settle();
  REQUIRE(f.completed());
  CHECK(f.drain() == 2);
}

TEST_CASE("read_wait: a look that finds the socket empty queues the wait, and the next arrival completes it") {
  pair_fixture f;
  // Bytes read to the end by a full read (the reader cannot know it was the end): the look
  // says EAGAIN, and the wait must still complete on the next arrival although the reactor's
  // flag (set by the harvested event) is not consulted again.
  f.wait(recv_state::drained);
  f.arrive("ab");
  REQUIRE(f.result);
  char two[2];
  REQUIRE(::recv(f.server.native_handle(), two, sizeof two, MSG_DONTWAIT) == 2);
  f.wait(recv_state::maybe_pending);
  f.settle();
  CHECK_FALSE(f.result);
  f.arrive("c");
  REQUIRE(f.completed());
  CHECK(f.drain() == 1);
}

TEST_CASE("read_wait: on a socket Asio also reads, a reset that came with the event is seen by Asio's next read") {
  // A plain backend connection: the relay waits with async_wait_readable, reads what is there
  // with its own recv, and Beast reads the rest. The backend's last bytes and its reset make
  // one event, consumed by the wait; Asio's next read must still look at the socket.
  pair_fixture f;
  std::optional<boost::system::error_code> waited;
  cbagate::http::detail::async_wait_readable(
      f.server, recv_state::drained_now, [&waited](boost::system::error_code ec) { waited = ec; });
  f.settle();
  REQUIRE_FALSE(waited);
  f.send("ab", 2);
  f.client.set_option(net::socket_base::linger(true, 0));
  f.client.close();  // RST after the bytes
  f.settle();
  REQUIRE(waited);
  CHECK_FALSE(*waited);
  char two[8];
  REQUIRE(::recv(f.server.native_handle(), two, sizeof two, MSG_DONTWAIT) == 2);
  std::optional<boost::system::error_code> read;
  char more[8];
  f.server.async_read_some(net::buffer(more),
                           [&read](boost::system::error_code ec, std::size_t) { read = ec; });
  f.settle();
  REQUIRE(read);  // completed at once: not asleep on an event already consumed
  CHECK(*read);   // connection_reset (or eof)
}

TEST_CASE("read_wait: an end of stream completes the wait") {
  pair_fixture f;
  f.wait(recv_state::drained);
  f.settle();
  CHECK_FALSE(f.result);
  f.client.shutdown(tcp::socket::shutdown_send);
  f.settle();
  REQUIRE(f.completed());  // readable: the reader's recv returns 0
  char byte = 0;
  CHECK(::recv(f.server.native_handle(), &byte, 1, MSG_DONTWAIT) == 0);
}

TEST_CASE("read_wait: cancel and close abort a pending wait") {
  pair_fixture f;
  f.wait(recv_state::drained);
  f.settle();
  REQUIRE_FALSE(f.result);
  f.server.cancel();
  f.settle();
  REQUIRE(f.result);
  CHECK(*f.result == net::error::operation_aborted);

  f.wait(recv_state::drained);
  f.settle();
  REQUIRE_FALSE(f.result);
  f.server.close();
  f.settle();
  REQUIRE(f.result);
  CHECK(*f.result == net::error::operation_aborted);
}

TEST_CASE("read_wait: a cancellation slot aborts the wait (awaitable operators ||)") {
  pair_fixture f;
  net::cancellation_signal signal;
  async_read_wait(f.server, reactor_of(f.server), recv_state::drained, true,
                  net::bind_cancellation_slot(signal.slot(), [&f](boost::system::error_code ec) {
                    f.result = ec;
                  }));
  f.settle();
  REQUIRE_FALSE(f.result);
  signal.emit(net::cancellation_type::terminal);
  f.settle();
  REQUIRE(f.result);
  CHECK(*f.result == net::error::operation_aborted);
}

}  // namespace

#endif  // CBAGATE_HAS_READ_WAIT
