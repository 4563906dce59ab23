#pragma once
// One downstream connection: TLS handshake, then requests until the connection ends. The whole
// request flow reads as one straight line in session.cpp (STYLE.md 1.1, DESIGN.md steps 2-9).
#include <memory>

#include <boost/asio/ip/tcp.hpp>

#include "http/runtime.hpp"
#include "tls/edge.hpp"

namespace cbagate::http {

/**
 * Serves one accepted connection to its end, on `w`'s I/O thread (spawned there; returns at
 * once): the edge step (tls/edge.hpp: PROXY header, per-address limits), the TLS handshake,
 * then requests until the connection ends. Never throws; every failure is answered (when the
 * connection still allows it), logged and counted; an exception that escapes (a bug) is logged.
 * Between requests the connection holds no coroutine frame, only its state (issue 14).
 * @param socket the accepted TCP socket, on `w`'s io_context.
 * @param rt the runtime current at accept time; kept for the connection's life.
 * @param w the I/O thread's state; the session runs on that thread only.
 * @param edge the process-wide edge step; the admitted connection (the client address, the
 *        PROXY header's behind a balancer, for the access log and X-Forwarded-For, and its
 *        per-address connection count) is held until the session ends.
 */
void spawn_session(boost::asio::ip::tcp::socket socket, std::shared_ptr<const runtime> rt,
                   worker& w, tls::edge& edge);

}  // namespace cbagate::http
