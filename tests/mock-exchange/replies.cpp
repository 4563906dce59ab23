#include "replies.hpp"

#include "eas.hpp"
#include "mock_fixtures.hpp"
#include "ping_registry.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace cbagate::mock {
namespace {

namespace json = boost::json;

constexpr std::string_view wbxml_type = "application/vnd.ms-sync.wbxml";
constexpr std::string_view eas_server_version = "15.1";
constexpr std::string_view eas_versions = "2.0,2.1,2.5,12.0,12.1,14.0,14.1,16.0,16.1";
constexpr std::string_view eas_commands =
    "Sync,SendMail,SmartForward,SmartReply,GetAttachment,GetHierarchy,CreateCollection,"
    "DeleteCollection,MoveCollection,FolderSync,FolderCreate,FolderDelete,FolderUpdate,MoveItems,"
    "GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,Provision,"
    "ResolveRecipients,ValidateCert,Find";
constexpr std::size_t logged_xml_limit = 4096;  // decoded XML kept in the request log

template <class T>
std::optional<T> to_number(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

reply wbxml_reply(std::string_view bytes) {
  return reply{200, std::string(wbxml_type), std::string(bytes), eas_headers()};
}

reply options_reply() {
  return reply{200,
               "",
               "",
               {{"Allow", "OPTIONS,POST"},
                {"Public", "OPTIONS,POST"},
                {"Cache-Control", "private"},
                {"MS-Server-ActiveSync", std::string(eas_server_version)},
                {"MS-ASProtocolVersions", std::string(eas_versions)},
                {"MS-ASProtocolCommands", std::string(eas_commands)}}};
}

// The Ping logic of MS-ASCMD 2.2.1.13 as the README's mock spec (§7) describes it.
eas_plan plan_ping(const eas_query& q, const std::string& user, const wbxml_decoded& body,
                   const eas_settings& s, ping_registry& pings, json::object* log) {
  eas_plan plan;
  json::object ping;
  ping["user_key"] = json_text(user);
  auto finish = [&](std::string_view outcome, std::string_view bytes) {
    ping["outcome"] = outcome;
    plan.now = wbxml_reply(bytes);
    if (log != nullptr) (*log)["ping"] = std::move(ping);
    return std::move(plan);
  };
  std::optional<unsigned> hb;
  if (auto text = xml_element_text(body.xml, "HeartbeatInterval")) {
    hb = to_number<unsigned>(*text);
    if (!hb) return finish("syntax_error", ping_response(4));
    ping["heartbeat"] = *hb;
    if (*hb < s.ping_min || *hb > s.ping_max) {
      unsigned bound = *hb < s.ping_min ? s.ping_min : s.ping_max;
      return finish("heartbeat_out_of_range",
                    bound == 3540 ? std::string(fixtures::ping_resp_hbi_range)
                                  : ping_response(5, bound));
    }
    pings.remember_heartbeat(user, q.device_id, *hb);
  } else {
    hb = pings.heartbeat(user, q.device_id);
  }
  auto folders = xml_element_count(body.xml, "Folder");
  ping["folders"] = folders;
  if (folders > s.ping_max_folders) {
    return finish("too_many_folders", s.ping_max_folders == 200
                                          ? std::string(fixtures::ping_resp_toomany)
                                          : ping_response(6, {}, s.ping_max_folders));
  }
  if (!hb) return finish("missing_parameters", fixtures::ping_resp_missing);
  ping["heartbeat"] = *hb;
  unsigned seconds = s.ping_cap ? std::min(*hb, *s.ping_cap) : *hb;
  ping["hold_s"] = seconds;
  if (log != nullptr) (*log)["ping"] = std::move(ping);
  plan.hold = hold_plan{true, user, q.device_id, seconds, {}, {}};
  return plan;
}

eas_plan plan_sync(const std::string& user, const wbxml_decoded& body, const eas_settings& s) {
  eas_plan plan;
  const auto& xml = body.xml;
  if (xml.empty()) {
    // An empty Sync repeats the previous one; nothing changed.
    plan.now = reply{200, "", "", eas_headers()};
    return plan;
  }
  auto key = xml_element_text(xml, "SyncKey").value_or("0");
  auto collection = xml_element_text(xml, "CollectionId").value_or("5");
  // Sync may long-poll like Ping: Wait in minutes (1..59) or HeartbeatInterval in seconds.
  std::optional<unsigned> wait_s;
  std::optional<unsigned> limit;
  if (auto w = xml_element_text(xml, "Wait")) {
    auto m = to_number<unsigned>(*w);
    if (m && (s.ping_cap || (*m >= 1 && *m <= 59))) {
      wait_s = *m * 60;
    } else {
      limit = (m && *m > 59) ? 59U : 1U;
    }
  } else if (auto hbt = xml_element_text(xml, "HeartbeatInterval")) {
    auto v = to_number<unsigned>(*hbt);
    if (v && *v >= s.ping_min && *v <= s.ping_max) {
      wait_s = *v;
    } else {
      limit = (v && *v > s.ping_max) ? s.ping_max : s.ping_min;
    }
  }
  if (limit) {
    wbxml_writer w;  // <Sync><Status>14</Status><Limit>n</Limit></Sync>
    w.open(0, 0x05).leaf(0, 0x0e, "14").leaf(0, 0x25, std::to_string(*limit)).close();
    plan.now = wbxml_reply(w.bytes());
    return plan;
  }
  if (wait_s) {
    unsigned seconds = s.ping_cap ? std::min(*wait_s, *s.ping_cap) : *wait_s;
    plan.hold = hold_plan{false, user, {}, seconds, key, collection};
    return plan;
  }
  if (key == "0") {
    plan.now = wbxml_reply(sync_response("1", collection, 1));
  } else if (key == "1" && collection == "5") {
    plan.now = wbxml_reply(fixtures::sync_resp_add);
  } else {
    plan.now = wbxml_reply(sync_response(key, collection, 1));
  }
  return plan;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool iends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && iequals(s.substr(s.size() - suffix.size()), suffix);
}

std::string json_text(std::string_view s) {
  std::size_t i = 0;
  bool valid = true;
  while (i < s.size() && valid) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      valid = false;
      break;
    }
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) valid = false;
    }
    i += n;
  }
  if (valid) return std::string(s);
  std::string out;
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      out += ch;
    } else {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

std::string_view to_string(hold_outcome o) {
  switch (o) {
    case hold_outcome::expired: return "expired";
    case hold_outcome::superseded: return "superseded";
    case hold_outcome::changes: return "changes";
    case hold_outcome::client_closed: return "client_closed";
  }
  return "?";
}

header_list eas_headers() { return {{"MS-Server-ActiveSync", std::string(eas_server_version)}}; }

reply text_reply(unsigned status, std::string body) {
  return reply{status, "text/plain", std::move(body), {}};
}

eas_plan plan_eas(const request_facts& req, const eas_settings& settings, ping_registry& pings,
                  json::object* log) {
  eas_plan plan;
  if (req.method == "OPTIONS") {
    plan.now = options_reply();
    return plan;
  }
  auto q = parse_eas_query(req.query);
  if (!q.cmd.empty()) plan.cmd = json_text(q.cmd);
  if (log != nullptr) {
    json::object eas{{"form", q.form},
                     {"cmd", json_text(q.cmd)},
                     {"user", json_text(q.user)},
                     {"device_id", json_text(q.device_id)},
                     {"device_type", json_text(q.device_type)}};
    if (q.version) eas["version"] = *q.version;
    if (q.policy_key) eas["policy_key"] = *q.policy_key;
    if (q.locale) eas["locale"] = *q.locale;
    json::object params;
    for (const auto& [k, v] : q.params) params[json_text(k)] = json_text(v);
    eas["params"] = std::move(params);
    (*log)["eas"] = std::move(eas);
  }
  if (req.method != "POST") {
    plan.now = text_reply(501, "mock-exchange: ActiveSync takes OPTIONS and POST\n");
    return plan;
  }
  if (q.cmd.empty() || q.device_id.empty() || q.device_type.empty()) {
    plan.now = text_reply(400, "mock-exchange: Cmd, DeviceId and DeviceType are required\n");
    return plan;
  }
  if (!eas_known_command(q.cmd)) {
    plan.now = text_reply(400, "mock-exchange: unknown ActiveSync command\n");
    return plan;
  }

  // Decode the WBXML body (SendMail's MIME may be large: then it is only counted and hashed).
  wbxml_decoded body;
  if (req.body_bytes > 0) {
    json::object w;
    bool looks_wbxml = istarts_with(req.content_type, wbxml_type) ||
                       (!req.body.empty() && req.body.front() == '\x03');
    if (req.body_overflow) {
      w["error"] = "not decoded: body larger than the capture limit";
    } else if (looks_wbxml) {
      body = decode_wbxml(req.body);
      if (body.error.empty()) {
        w["root"] = body.root;
        w["xml"] = json_text(std::string_view(body.xml).substr(0, logged_xml_limit));
      } else {
        w["error"] = json_text(body.error);
      }
    } else {
      w["error"] = "not decoded: content type " + json_text(req.content_type);
    }
    if (log != nullptr) (*log)["wbxml"] = std::move(w);
    bool mail = q.cmd == "SendMail" || q.cmd == "SmartReply" || q.cmd == "SmartForward";
    if (looks_wbxml && !req.body_overflow && !body.error.empty() && !mail) {
      plan.now = text_reply(400, "mock-exchange: WBXML decode error\n");
      return plan;
    }
  }

  std::string user = !req.identity.empty() ? std::string(req.identity)
                     : !q.user.empty()     ? q.user
                                           : std::string("-");
  const auto& cmd = q.cmd;
  const auto& xml = body.xml;
  if (cmd == "Ping") {
    auto p = plan_ping(q, user, body, settings, pings, log);
    p.cmd = plan.cmd;
    return p;
  }
  if (cmd == "Sync") {
    auto p = plan_sync(user, body, settings);
    p.cmd = plan.cmd;
    return p;
  }
  if (cmd == "FolderSync") {
    auto key = xml_element_text(xml, "SyncKey").value_or("0");
    plan.now = wbxml_reply(key == "0" ? fixtures::foldersync_resp : fixtures::foldersync_resp_nochange);
  } else if (cmd == "Provision") {
    // Phase 1 (no PolicyKey): temporary key; phase 2 (the acknowledgement): the final key.
    bool ack = xml_element_text(xml, "PolicyKey").has_value();
    plan.now = wbxml_reply(ack ? fixtures::provision_resp_final : fixtures::provision_resp);
  } else if (cmd == "Settings") {
    plan.now = wbxml_reply(fixtures::settings_resp);
  } else if (cmd == "ItemOperations") {
    plan.now = wbxml_reply(fixtures::itemops_resp);
  } else if (cmd == "SendMail" || cmd == "SmartReply" || cmd == "SmartForward") {
    // Exchange answers a successful SendMail with an empty 200.
    plan.now = reply{200, "", "", eas_headers()};
  } else {
    plan.now = text_reply(501, "mock-exchange: command not implemented by the mock\n");
  }
  return plan;
}

reply after_hold(const hold_plan& plan, hold_outcome outcome) {
  if (!plan.ping) return wbxml_reply(sync_response(plan.sync_key, plan.collection, 1));
  return wbxml_reply(outcome == hold_outcome::changes ? fixtures::ping_resp_changes
                                                      : fixtures::ping_resp_expired);
}

reply page_reply(const request_facts& req, std::string_view app) {
  if (req.method == "GET" || req.method == "HEAD") {
    std::string html = "<!DOCTYPE html>\n<html><head><title>mock-exchange " + std::string(app) +
                       "</title></head><body>\n<h1>mock-exchange " + std::string(app) +
                       "</h1>\n<p>You are <span id=\"identity\">" +
                       html_escape(req.identity_echo) + "</span>.</p>\n<p>Path: " +
                       html_escape(json_text(req.path)) + "</p>\n</body></html>\n";
    return reply{200, "text/html; charset=utf-8", std::move(html), {}};
  }
  json::object body{{"mock", app},
                    {"identity", json_text(req.identity_echo)},
                    {"method", json_text(req.method)},
                    {"path", json_text(req.path)},
                    {"body_bytes", req.body_bytes}};
  return reply{200, "application/json; charset=utf-8", json::serialize(body) + "\n", {}};
}

std::string owa_event_frame(unsigned index, std::string_view identity) {
  std::string who = json::serialize(json::string(json_text(identity)));
  // Inside <script>, '<' must not open a tag.
  for (std::size_t pos = 0; (pos = who.find('<', pos)) != std::string::npos;) {
    who.replace(pos, 1, "\\u003c");
  }
  return "<script>parent.mock_event({\"frame\":" + std::to_string(index) + ",\"identity\":" + who +
         "})</script>\r\n";
}

}  // namespace cbagate::mock
