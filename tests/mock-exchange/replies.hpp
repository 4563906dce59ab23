#pragma once
// What the mock answers, as values: the ActiveSync command logic (which fixture, whether to hold
// the request and for how long), the OWA/ECP pages and the small test-hook replies. No I/O here:
// server.cpp reads the request, calls these, holds when asked and writes the reply.
#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cbagate::mock {

class ping_registry;

/** Extra response headers, in order. */
using header_list = std::vector<std::pair<std::string, std::string>>;

/** A complete small response. */
struct reply {
  unsigned status = 200;
  std::string content_type;  ///< "" = no Content-Type header
  std::string body;
  header_list headers;
};

/** The parts of a request the reply functions look at (views into the session's data). */
struct request_facts {
  std::string_view method;        ///< as received
  std::string_view path;          ///< target before '?'
  std::string_view query;         ///< target after '?'
  std::string_view content_type;  ///< Content-Type header value
  std::string_view identity;      ///< first identity header value, "" when absent
  std::string_view identity_echo; ///< all identity values joined with ", ", or "-"
  std::uint64_t body_bytes = 0;
  std::string_view body;          ///< the captured body (complete unless body_overflow)
  bool body_overflow = false;     ///< the body was larger than the capture limit
};

/** Settings the ActiveSync logic needs (from the command line). */
struct eas_settings {
  std::optional<unsigned> ping_cap;
  unsigned ping_min = 60;
  unsigned ping_max = 3540;
  unsigned ping_max_folders = 200;
};

/** A request to hold (Ping, or Sync with Wait/HeartbeatInterval) before answering. */
struct hold_plan {
  bool ping = true;         ///< Ping (else Sync)
  std::string user;         ///< registry key: identity, else the User parameter, else "-"
  std::string device;       ///< DeviceId ("" for Sync waits: they never supersede each other)
  unsigned seconds = 0;     ///< how long to hold (already capped)
  std::string sync_key;     ///< Sync only: the reply's SyncKey and CollectionId
  std::string collection;
};

/** How a hold ended. */
enum class hold_outcome { expired, superseded, changes, client_closed };

/** "expired", "superseded", "changes" or "client_closed". */
[[nodiscard]] std::string_view to_string(hold_outcome o);

/** The ActiveSync outcome of a request: a reply now, or a hold first. */
struct eas_plan {
  std::optional<reply> now;
  std::optional<hold_plan> hold;
  std::optional<std::string> cmd;  ///< the command, for the request log
};

/**
 * Decides the answer to a request on /Microsoft-Server-ActiveSync (OPTIONS, or POST with the
 * plain or base64 query), decoding a WBXML body with libwbxml2. Updates the heartbeat cache of
 * `pings` for Ping. When `log` is not null, the fields "eas", "wbxml" and "ping" are added to it.
 */
[[nodiscard]] eas_plan plan_eas(const request_facts& req, const eas_settings& settings,
                                ping_registry& pings, boost::json::object* log);

/** The reply once a hold ended (not for client_closed). */
[[nodiscard]] reply after_hold(const hold_plan& plan, hold_outcome outcome);

/** The OWA or ECP page (`app` = "owa" or "ecp"): HTML for GET/HEAD, else a small JSON object. */
[[nodiscard]] reply page_reply(const request_facts& req, std::string_view app);

/** A text/plain reply. */
[[nodiscard]] reply text_reply(unsigned status, std::string body);

/** The `MS-Server-ActiveSync` header every ActiveSync reply carries. */
[[nodiscard]] header_list eas_headers();

/** One frame of the /owa/ev.owa2 stream: a `<script>` naming the identity. */
[[nodiscard]] std::string owa_event_frame(unsigned index, std::string_view identity);

/** Valid UTF-8 is kept; anything else is read as Latin-1, so the log stays valid JSON. */
[[nodiscard]] std::string json_text(std::string_view s);

/** ASCII case-insensitive equality. */
[[nodiscard]] bool iequals(std::string_view a, std::string_view b);

/** ASCII case-insensitive prefix test. */
[[nodiscard]] bool istarts_with(std::string_view s, std::string_view prefix);

/** ASCII case-insensitive suffix test. */
[[nodiscard]] bool iends_with(std::string_view s, std::string_view suffix);

}  // namespace cbagate::mock
