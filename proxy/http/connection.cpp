#include "http/connection.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/write.hpp>

namespace cbagate::http {

namespace net = boost::asio;
namespace bhttp = boost::beast::http;

net::awaitable<void> send_local(connection& c, observability::access_record& rec, reply r,
                                int substatus, bool keep_alive, unsigned version,
                                std::string_view allow) {
  // 403.12 has a code per cause (issue 12): the one the phase put in the access record.
  const local_reply_info info = r == reply::forbidden && substatus == 12
                                    ? mapping_denied(rec.error)
                                    : info_for(r, substatus);
  co_await send_local(c, rec, info, keep_alive, version, allow);
}

net::awaitable<void> send_local(connection& c, observability::access_record& rec,
                                const local_reply_info& info, bool keep_alive, unsigned version,
                                std::string_view allow) {
  keep_alive = keep_alive && !info.must_close;
  const std::string request_id = std::to_string(rec.conn_id) + "-" + std::to_string(rec.req_id);
  auto res = make_local_reply(info, version, keep_alive, request_id);
  if (!allow.empty()) res.set(bhttp::field::allow, allow);
  if (c.rt.custom_pages && c.rt.custom_pages->has(info.status)) {  // [errors] (issue 13)
    std::string_view type;
    res.body() = c.rt.custom_pages->render(info, request_id, type);
    res.set(bhttp::field::content_type, type);
    res.prepare_payload();
  }
  rec.status = static_cast<int>(res.result_int());
  rec.substatus = info.substatus;
  if (rec.error.empty()) rec.error = std::string(info.code);
  c.tcp().expires_after(detail::ms(c.rt.cfg->timeouts.body_idle));
  auto [ec, n] = co_await bhttp::async_write(c.stream, res, net::as_tuple(net::use_awaitable));
  (void)n;
  if (ec) rec.error = rec.error.empty() ? "client_closed" : rec.error;
}

net::awaitable<void> send_redirect(connection& c, observability::access_record& rec,
                                   std::string_view location, bool keep_alive, unsigned version) {
  bhttp::response<bhttp::string_body> res{bhttp::status::found, version};
  res.set(bhttp::field::location, location);
  res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
  res.set(bhttp::field::cache_control, "no-store");
  res.body() = "302 Found: " + std::string(location) + "\n";
  res.keep_alive(keep_alive);
  res.prepare_payload();
  rec.status = 302;
  c.tcp().expires_after(detail::ms(c.rt.cfg->timeouts.body_idle));
  auto [ec, n] = co_await bhttp::async_write(c.stream, res, net::as_tuple(net::use_awaitable));
  (void)n;
  if (ec) rec.error = "client_closed";
}

}  // namespace cbagate::http
