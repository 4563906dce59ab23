#pragma once
// The streaming relay (STYLE.md 4 step 7): the request header and body to the backend, the
// response header (held as long as the route allows, watching the client), the response body
// back, piece by piece with a deadline per piece. Bodies are never buffered whole.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "http/connection.hpp"
#include "http/flat_parser.hpp"
#include "observability/access_log.hpp"
#include "upstream/pool.hpp"

namespace cbagate::http {

/** What the phases before the relay decided about one exchange. */
struct relay_plan {
  bool request_has_body = false;
  bool send_continue = false;  // the client sent Expect: 100-continue
  bool head = false;
  std::uint64_t max_body = 0;  // 0 = unlimited
  std::chrono::milliseconds response_timeout{0};
  // The longest pause in either body: timeouts.body_idle, or for Outlook's long-lived requests
  // (RPC_IN_DATA/RPC_OUT_DATA, MAPI NotificationWait) the route's response timeout. 0 =
  // timeouts.body_idle.
  std::chrono::milliseconds body_idle{0};
  // The client's own version and keep-alive wish, taken before the request is rewritten for
  // the backend (HTTP/1.1, keep-alive, Connection removed): the response is framed for these.
  unsigned client_version = 11;
  bool client_keep_alive = false;
  std::string_view hsts;  // route.hsts (the route outlives the relay), "" = none
};

/** A request as it was sent to the backend (header, then its whole body), kept to be sent again.
 *  Only a request whose body was at hand (body_at_hand) is kept. */
struct sent_request {
  std::unique_ptr<char[]> bytes;  // null: nothing kept
  std::size_t header = 0;         // bytes of the header, its final empty line included
  std::size_t body = 0;           // bytes of body after it
};

/**
 * A request held by the backend (an ActiveSync Ping, an OWA or MAPI notification wait: minutes,
 * up to an hour) whose coroutines have ended (issue 14): what the relay keeps of the exchange
 * while the request waits with nothing but its waits registered (the backend, the client, the
 * response timeout). Opaque outside relay.cpp.
 */
struct held_exchange {
  held_exchange() = default;
  held_exchange(const held_exchange&) = delete;
  held_exchange& operator=(const held_exchange&) = delete;
  virtual ~held_exchange() = default;
};
using held_exchange_ptr = std::unique_ptr<held_exchange>;

/** What owns a parked request (session.cpp: the client connection's whole state, the request
 *  and its held_exchange in it) while it waits, and continues it when the wait ends. */
struct held_owner {
  virtual ~held_owner() = default;
  /** The wait has ended (the backend spoke, the client showed a sign of life or the response
   *  timeout passed): continue the request, in a new coroutine, with relay_resume. Called once;
   *  `self` is this owner. */
  virtual void resume(std::unique_ptr<held_owner> self) noexcept = 0;
};

/**
 * Whether the request in `req_p` has no body, or a body that may go with its header in one
 * write: a Content-Length body of at most one relay chunk (16 KiB), all of it already read into
 * c.buf, within plan.max_body, the client not waiting for 100 Continue. Such a request is sent
 * whole in one write and can be kept (sent_request). False for chunked, large or still-arriving
 * bodies (they are streamed).
 */
bool body_at_hand(const connection& c,
                  const flat_request_parser<boost::beast::http::buffer_body>& req_p,
                  const relay_plan& plan);

/**
 * Streams the request in `req_p` (its header parsed, already rewritten for the backend; its
 * body still in the client stream) to `uc`, and the response back to the client. Sends the
 * local error reply itself while nothing of the response has gone to the client yet.
 * @param t0 when the request began (for rec.upstream_first_byte_us).
 * @param park where a request still unanswered after `park_after` on a plain backend leaves
 *   its exchange (the outcome then says `held`: the caller keeps the request and its
 *   connection alive, calls hold_parked and, once resumed, relay_resume); null: the request
 *   is held in this coroutine however long it takes.
 * @return whether the client connection and the backend connection may be reused; `rec` gets
 *   status, bytes and the error code. The caller releases or drops `uc`.
 * Runs on the client connection's thread; `c`, `uc`, `req_p`, `plan` and `rec` must outlive
 * the returned awaitable, and the exchange when it is parked.
 */
boost::asio::awaitable<outcome> relay(connection& c, upstream::connection& uc,
                                      flat_request_parser<boost::beast::http::buffer_body>& req_p,
                                      const relay_plan& plan, observability::access_record& rec,
                                      std::chrono::steady_clock::time_point t0,
                                      held_exchange_ptr* park = nullptr);

/** How long an unanswered request is held in its coroutines before it is parked. */
inline constexpr std::chrono::seconds park_after{1};

/**
 * Leaves a parked request (outcome::held) to its waits: `owner`, which holds `held`, goes with
 * the wait on the backend and comes back through owner->resume() when that wait ends.
 */
void hold_parked(held_exchange& held, std::unique_ptr<held_owner> owner);

/** Continues a parked request where relay(), relay_keeping() or relay_again() left it, to the
 *  same outcome they would have given (it may park again: an interim response, then a hold). */
boost::asio::awaitable<outcome> relay_resume(held_exchange_ptr& held);

/**
 * relay() for a request sent without a token on a backend connection the backend keeps
 * authenticated (kerberos.persistent_auth). The request must have its body at hand
 * (body_at_hand); it is kept in `sent`. A 401 answer is not relayed: it is read (its body when
 * small, so the connection can carry more) and the outcome says `resend`; nothing has gone to
 * the client then, and the caller sends `sent` again with a token (relay_again). Any other
 * answer is relayed as by relay().
 */
boost::asio::awaitable<outcome> relay_keeping(connection& c, upstream::connection& uc,
                                              flat_request_parser<boost::beast::http::buffer_body>& req_p,
                                              const relay_plan& plan, observability::access_record& rec,
                                              std::chrono::steady_clock::time_point t0,
                                              sent_request& sent, held_exchange_ptr* park = nullptr);

/**
 * Sends `sent` (a request relay_keeping kept) again on `uc` with `Authorization: <authorization>`
 * added to its header, then relays the answer as relay() does (a 401 included).
 */
boost::asio::awaitable<outcome> relay_again(connection& c, upstream::connection& uc,
                                            flat_request_parser<boost::beast::http::buffer_body>& req_p,
                                            const relay_plan& plan, observability::access_record& rec,
                                            std::chrono::steady_clock::time_point t0,
                                            const sent_request& sent, std::string_view authorization,
                                            held_exchange_ptr* park = nullptr);

}  // namespace cbagate::http
