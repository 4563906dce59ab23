#pragma once
// One client connection as the request phases see it (session.cpp) and the relay streams over
// it (relay.cpp): the TLS stream, its read buffer, the runtime it started with and what it keeps
// between its requests. Internal to http/ (not a public header of the module).
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "http/local_reply.hpp"
#include "http/runtime.hpp"
#include "http/tls_stream.hpp"
#include "identity/client_identity.hpp"
#include "observability/access_log.hpp"
#include "upstream/pinning.hpp"

namespace cbagate::http {

/**
 * Everything a client connection keeps between its requests. Lives in the connection's session
 * object (session.cpp), which is all that remains of an idle connection; the phases and the
 * relay get it by reference. State that must outlive one request
 * and belong to this client only (a backend connection pinned to it, a mapping verdict
 * re-checked after a TTL) is added here, never to the worker or the pool.
 */
struct connection {
  tls_stream& stream;
  boost::beast::flat_buffer& buf;  // bytes read from the client and not yet consumed
  const runtime& rt;
  worker& w;
  session_handle& handle;
  const identity::client_identity& id;  // from the handshake; immutable for the connection
  std::uint64_t conn_id;
  std::uint64_t requests = 0;
  std::string client;  // "ip:port"
  std::string client_ip;
  std::string sni;
  std::string tls_version;
  bool resumed = false;
  std::shared_ptr<upstream::pool> pool;  // of this connection's runtime
  // The backend connection private to this client (it carried NTLM, Negotiate or
  // Persistent-Auth: issue 10, upstream/pinning.hpp); closed with this connection.
  upstream::private_slot pinned{};

  tls_stream& tcp() { return stream; }
};

/** What one exchange with the backend ended with; decides keep-alive on both sides. */
struct outcome {
  bool client_keep_alive = false;
  bool upstream_reusable = false;  // the backend connection may go back to the pool
  bool upstream_bound = false;     // the response bound the backend connection (pinning.hpp)
  upstream::persistence persistent_auth = upstream::persistence::unsaid;  // its Persistent-Auth
  // A 401 to a request sent without a token on a Kerberos session (relay_plan::resend): not
  // relayed; the request is to be sent again with a token (relay_again).
  bool resend = false;
  // The request was parked unanswered (relay's `park`): nothing of it has ended yet.
  bool held = false;
};

namespace detail {

template <class D>
std::int64_t micros(D d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

inline std::chrono::milliseconds ms(config::seconds_f s) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(s);
}

}  // namespace detail

/**
 * Sends a local reply (the table row of `r`, `substatus`) to the client and fills `rec`'s
 * status, substatus and (when still empty) error code. The reply keeps the connection only
 * when `keep_alive` and the row allow it. `allow`, when not empty, is sent as the Allow header
 * (405). A failed write only marks `rec.error` ("client_closed"
 * when nothing else was recorded); the caller ends the connection anyway.
 */
boost::asio::awaitable<void> send_local(connection& c, observability::access_record& rec, reply r,
                                        int substatus, bool keep_alive, unsigned version = 11,
                                        std::string_view allow = {});

/** The same for a row built elsewhere (a certificate refusal, identity/refusal.hpp). Every local
 *  reply carries "request id: <conn_id>-<req_id>", the access-log line's ids (issue 13). */
boost::asio::awaitable<void> send_local(connection& c, observability::access_record& rec,
                                        const local_reply_info& info, bool keep_alive,
                                        unsigned version = 11, std::string_view allow = {});

/** 302 Found to a redirect route's location (route.redirect, issue 13): a constant of the
 *  configuration, never request input. */
boost::asio::awaitable<void> send_redirect(connection& c, observability::access_record& rec,
                                           std::string_view location, bool keep_alive,
                                           unsigned version = 11);

}  // namespace cbagate::http
