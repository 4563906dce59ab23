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
  rec.status = static_cast<int>(res.result_int());
  rec.substatus = info.substatus;
  if (rec.error.empty()) rec.error = std::string(info.code);
  c.tcp().expires_after(detail::ms(c.rt.cfg->timeouts.body_idle));
  auto [ec, n] = co_await bhttp::async_write(c.stream, res, net::as_tuple(net::use_awaitable));
  (void)n;
  if (ec) rec.error = rec.error.empty() ? "client_closed" : rec.error;
}

}  // namespace cbagate::http
