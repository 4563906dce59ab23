#include "admin/admin_server.hpp"

#include "admin/endpoints.hpp"
#include "admin/error.hpp"
#include "observability/metrics.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <doctest/doctest.h>

#include <chrono>
#include <exception>
#include <functional>
#include <string>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace admin = cbagate::admin;
namespace obs = cbagate::observability;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

namespace {

using response = http::response<http::string_body>;

constexpr auto client_deadline = 5s;

// A client stream connected to the admin server, with a deadline on every operation.
net::awaitable<beast::tcp_stream> connect(tcp::endpoint ep) {
  beast::tcp_stream s(co_await net::this_coro::executor);
  s.expires_after(client_deadline);
  co_await s.async_connect(ep, net::use_awaitable);
  co_return s;
}

net::awaitable<response> exchange(beast::tcp_stream& s, http::verb verb, std::string target,
                                  bool keep_alive = true) {
  http::request<http::string_body> req{verb, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.keep_alive(keep_alive);
  if (verb == http::verb::post) {
    req.body() = "x=1";
  }
  req.prepare_payload();
  s.expires_after(client_deadline);
  co_await http::async_write(s, req, net::use_awaitable);
  beast::flat_buffer buffer;
  response res;
  co_await http::async_read(s, buffer, res, net::use_awaitable);
  co_return res;
}

net::awaitable<response> get(tcp::endpoint ep, std::string target,
                             http::verb verb = http::verb::get) {
  auto s = co_await connect(ep);
  co_return co_await exchange(s, verb, std::move(target), false);
}

// True when the server closes the connection before sending anything.
net::awaitable<bool> closed_by_server(beast::tcp_stream& s) {
  char byte = 0;
  s.expires_after(client_deadline);
  auto [ec, n] = co_await s.async_read_some(net::buffer(&byte, 1), net::as_tuple(net::use_awaitable));
  co_return ec == net::error::eof || ec == net::error::connection_reset;
}

// The admin server and its sources, on an io_context run by the test thread.
struct fixture {
  net::io_context ioc;
  obs::registry registry;
  bool ready = false;
  std::function<std::string()> config_json = [] { return std::string(R"({"server":{"threads":2}})"); };
  std::function<std::string()> certs_json = [] { return std::string(R"([{"not_after":"2030-01-01"}])"); };
  admin::admin_options options;

  // Runs `test` against a fresh server; the server stops when the test coroutine ends.
  void run(std::function<net::awaitable<void>(admin::admin_server&, tcp::endpoint)> test) {
    admin::admin_server server(ioc.get_executor(), "127.0.0.1:0", registry, [this] { return ready; },
                               config_json, certs_json, options);
    REQUIRE(server.listen().has_value());
    const auto ep = server.local_endpoint();
    REQUIRE(ep.port() != 0);
    server.start();
    std::exception_ptr failure;
    bool finished = false;
    net::co_spawn(ioc, test(server, ep), [&](std::exception_ptr e) {
      failure = e;
      finished = true;
      server.stop();
    });
    ioc.run_for(20s);
    REQUIRE(finished);
    CHECK_MESSAGE(ioc.stopped(), "admin server left work behind after stop()");
    if (failure) {
      std::rethrow_exception(failure);
    }
  }
};

}  // namespace

TEST_CASE("admin: healthz, metrics, config and certs answer with status, type and body") {
  fixture f;
  f.registry.add_counter("cbagate_requests_total", "Requests.", {{"status", "200"}}).inc(5);
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto health = co_await get(ep, "/healthz");
    CHECK(health.result_int() == 200);
    CHECK(health.body() == "ok\n");
    CHECK(health[http::field::content_type] == "text/plain; charset=utf-8");

    auto metrics = co_await get(ep, "/metrics");
    CHECK(metrics.result_int() == 200);
    CHECK(metrics[http::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
    CHECK(metrics.body() ==
          "# HELP cbagate_requests_total Requests.\n"
          "# TYPE cbagate_requests_total counter\n"
          "cbagate_requests_total{status=\"200\"} 5\n");

    auto config = co_await get(ep, "/config");
    CHECK(config.result_int() == 200);
    CHECK(config[http::field::content_type] == "application/json");
    CHECK(config.body() == R"({"server":{"threads":2}})");

    auto certs = co_await get(ep, "/certs?verbose=1");
    CHECK(certs.result_int() == 200);
    CHECK(certs.body() == R"([{"not_after":"2030-01-01"}])");
  });
}

TEST_CASE("admin: readyz follows the callback and draining") {
  fixture f;
  f.run([&f](admin::admin_server& server, tcp::endpoint ep) -> net::awaitable<void> {
    auto r = co_await get(ep, "/readyz");
    CHECK(r.result_int() == 503);
    CHECK(r.body() == "not ready\n");
    f.ready = true;
    r = co_await get(ep, "/readyz");
    CHECK(r.result_int() == 200);
    CHECK(r.body() == "ready\n");
    server.set_draining(true);
    r = co_await get(ep, "/readyz");
    CHECK(r.result_int() == 503);
    CHECK(r.body() == "draining\n");
    r = co_await get(ep, "/healthz");
    CHECK(r.result_int() == 200);  // alive while draining
  });
}

TEST_CASE("admin: unknown path is 404 and a method other than GET is 405") {
  fixture f;
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto r = co_await get(ep, "/nope");
    CHECK(r.result_int() == 404);
    r = co_await get(ep, "/healthz/");
    CHECK(r.result_int() == 404);
    r = co_await get(ep, "/metrics", http::verb::post);
    CHECK(r.result_int() == 405);
    CHECK(r[http::field::allow] == "GET");
    r = co_await get(ep, "/nope", http::verb::delete_);
    CHECK(r.result_int() == 405);
  });
}

TEST_CASE("admin: config and certs are 404 without callbacks") {
  fixture f;
  f.config_json = nullptr;
  f.certs_json = nullptr;
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    CHECK((co_await get(ep, "/config")).result_int() == 404);
    CHECK((co_await get(ep, "/certs")).result_int() == 404);
  });
}

TEST_CASE("admin: a throwing callback gives 500 and the listener keeps serving") {
  fixture f;
  f.config_json = []() -> std::string { throw std::runtime_error("secret detail"); };
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto r = co_await get(ep, "/config");
    CHECK(r.result_int() == 500);
    CHECK(r.body().find("secret") == std::string::npos);
    CHECK((co_await get(ep, "/healthz")).result_int() == 200);
  });
}

TEST_CASE("admin: keep-alive serves several requests on one connection") {
  fixture f;
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto s = co_await connect(ep);
    for (int i = 0; i < 3; ++i) {
      auto r = co_await exchange(s, http::verb::get, "/healthz");
      CHECK(r.result_int() == 200);
      CHECK(r.keep_alive());
    }
    // A request with a body is answered, then the connection is closed (the body is not read).
    auto r = co_await exchange(s, http::verb::post, "/healthz");
    CHECK(r.result_int() == 405);
    CHECK_FALSE(r.keep_alive());
    CHECK(co_await closed_by_server(s));
  });
}

TEST_CASE("admin: a header over 8 KiB gets 431") {
  fixture f;
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto s = co_await connect(ep);
    http::request<http::string_body> req{http::verb::get, "/healthz", 11};
    req.set(http::field::host, "127.0.0.1");
    req.set("X-Filler", std::string(admin::admin_header_limit, 'a'));
    s.expires_after(client_deadline);
    co_await http::async_write(s, req, net::use_awaitable);
    beast::flat_buffer buffer;
    response res;
    co_await http::async_read(s, buffer, res, net::use_awaitable);
    CHECK(res.result_int() == 431);
    CHECK_FALSE(res.keep_alive());
  });
}

TEST_CASE("admin: an idle connection is closed after the read timeout") {
  fixture f;
  f.options.io_timeout = 50ms;
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto s = co_await connect(ep);
    const auto start = std::chrono::steady_clock::now();
    CHECK(co_await closed_by_server(s));
    CHECK(std::chrono::steady_clock::now() - start < client_deadline);
  });
}

TEST_CASE("admin: connections beyond the limit are closed") {
  fixture f;
  f.options.max_connections = 1;
  f.run([](admin::admin_server&, tcp::endpoint ep) -> net::awaitable<void> {
    auto first = co_await connect(ep);
    CHECK((co_await exchange(first, http::verb::get, "/healthz")).result_int() == 200);
    auto second = co_await connect(ep);
    CHECK(co_await closed_by_server(second));
    CHECK((co_await exchange(first, http::verb::get, "/healthz")).result_int() == 200);
  });
}

TEST_CASE("admin: stop closes open keep-alive connections") {
  fixture f;
  f.run([](admin::admin_server& server, tcp::endpoint ep) -> net::awaitable<void> {
    auto s = co_await connect(ep);
    CHECK((co_await exchange(s, http::verb::get, "/healthz")).result_int() == 200);
    server.stop();
    CHECK(co_await closed_by_server(s));
    auto late = co_await net::co_spawn(co_await net::this_coro::executor,
                                       [ep]() -> net::awaitable<boost::system::error_code> {
                                         beast::tcp_stream c(co_await net::this_coro::executor);
                                         c.expires_after(client_deadline);
                                         auto [ec] = co_await c.async_connect(
                                             ep, net::as_tuple(net::use_awaitable));
                                         co_return ec;
                                       },
                                       net::use_awaitable);
    CHECK(late == net::error::connection_refused);
  });
}

TEST_CASE("admin: parse_endpoint takes IP literals with a port") {
  CHECK(admin::parse_endpoint("127.0.0.1:9100").value() ==
        tcp::endpoint(net::ip::make_address("127.0.0.1"), 9100));
  CHECK(admin::parse_endpoint("[::1]:0").value() == tcp::endpoint(net::ip::make_address("::1"), 0));
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "localhost:9100",
                          "::1:9100", "[::1]", "[::1]9100", "127.0.0.1:9x"}) {
    CAPTURE(bad);
    CHECK(admin::parse_endpoint(bad).error() == admin::errc::bad_endpoint);
  }
}

TEST_CASE("admin: listen reports a bad endpoint and an address in use") {
  net::io_context ioc;
  obs::registry registry;
  admin::admin_server bad(ioc.get_executor(), "localhost:1", registry, [] { return true; });
  CHECK(bad.listen().error() == admin::errc::bad_endpoint);

  admin::admin_server first(ioc.get_executor(), "127.0.0.1:0", registry, [] { return true; });
  REQUIRE(first.listen().has_value());
  const auto port = first.local_endpoint().port();
  admin::admin_server second(ioc.get_executor(), "127.0.0.1:" + std::to_string(port), registry,
                             [] { return true; });
  CHECK(second.listen().error() == boost::system::errc::address_in_use);
}

TEST_CASE("admin: endpoints answer without sockets") {
  obs::registry registry;
  const std::function<bool()> ready = [] { return true; };
  const std::function<std::string()> none;
  const admin::endpoint_sources src{registry, ready, none, none, false};
  CHECK(admin::answer("GET", "/readyz?x=1", src).status == 200);
  CHECK(admin::answer("HEAD", "/healthz", src).status == 405);
  CHECK(admin::answer("GET", "/config", src).status == 404);
  CHECK(admin::answer("GET", "/metrics", src).content_type == admin::metrics_content_type);
}

TEST_CASE("admin: readyz says why it is not ready, draining still wins") {
  obs::registry registry;
  const std::function<bool()> ready = [] { return true; };  // ignored once a reason source is set
  const std::function<std::string()> none;
  std::string why = "no upstream server is healthy";
  const std::function<std::string()> reason = [&] { return why; };
  admin::endpoint_sources src{registry, ready, none, none, false, &reason};
  auto r = admin::answer("GET", "/readyz", src);
  CHECK(r.status == 503);
  CHECK(r.body == "not ready: no upstream server is healthy\n");
  why.clear();
  r = admin::answer("GET", "/readyz", src);
  CHECK(r.status == 200);
  CHECK(r.body == "ready\n");
  why = "kerberos";
  src.draining = true;
  CHECK(admin::answer("GET", "/readyz", src).body == "draining\n");
}
