#pragma once
// detail of tls/: the verified identity carried inside a session ticket (ticket app data), so a
// resumed session has exactly the identity of the full handshake that created it. Only this
// server (or a cluster sharing tls.ticket_keys) can seal a ticket, so the bytes are trusted as
// far as the ticket key is; the decoder still checks every bound (it is fuzzed:
// tests/fuzz/fuzz_ticket_identity.cpp).
#include <cstddef>
#include <string>

#include "identity/client_identity.hpp"

namespace cbagate::tls::detail {

/** The ticket app data for `id` (format 3), or the one-byte "not resumable" record when its
 *  chain exceeds the bounds (then the session cannot resume). Never throws but bad_alloc. */
std::string encode_ticket_identity(const identity::client_identity& id);

/** Reads what encode_ticket_identity wrote. False (and `id` untouched) for any other bytes:
 *  another format version, a truncated record or trailing bytes, a bound exceeded (a field
 *  over 4096 bytes, more than 10 chain refs, ...), or a rejected identity that carries chain
 *  refs. For every record it accepts, encoding the result gives the same bytes back. */
bool decode_ticket_identity(const void* data, std::size_t len, identity::client_identity& id);

}  // namespace cbagate::tls::detail
