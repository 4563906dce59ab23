// In-process tests of the mock Exchange's pure parts: query decoding, WBXML, the ActiveSync
// reply logic, the held-request registry and the command line.
#include "conn_auth.hpp"
#include "eas.hpp"
#include "mock_fixtures.hpp"
#include "negotiate.hpp"
#include "options.hpp"
#include "ping_registry.hpp"
#include "replies.hpp"

#include <boost/asio/io_context.hpp>

#include <doctest/doctest.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace mock = cbagate::mock;
namespace fx = cbagate::mock::fixtures;

namespace {

mock::request_facts post(std::string_view query, std::string_view body,
                         std::string_view identity = {}) {
  mock::request_facts f;
  f.method = "POST";
  f.path = "/Microsoft-Server-ActiveSync";
  f.query = query;
  f.content_type = "application/vnd.ms-sync.wbxml";
  f.identity = identity;
  f.identity_echo = identity.empty() ? std::string_view("-") : identity;
  f.body = body;
  f.body_bytes = body.size();
  return f;
}

mock::eas_settings capped(unsigned cap) {
  mock::eas_settings s;
  s.ping_cap = cap;
  s.ping_min = 1;
  return s;
}

}  // namespace

TEST_CASE("mock: plain query gives Cmd, User, DeviceId and DeviceType") {
  auto q = mock::parse_eas_query("Cmd=Sync&User=a%40b.example&DeviceId=D1&DeviceType=iPhone&SaveInSent=T");
  CHECK(q.form == "plain");
  CHECK(q.cmd == "Sync");
  CHECK(q.user == "a@b.example");
  CHECK(q.device_id == "D1");
  CHECK(q.device_type == "iPhone");
  REQUIRE(q.params.size() == 1);
  CHECK(q.params[0].first == "SaveInSent");
}

TEST_CASE("mock: base64 query of the MS-ASHTTP example decodes") {
  auto q = mock::parse_eas_query("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l");
  CHECK(q.form == "base64");
  CHECK(q.cmd == "Sync");
  CHECK(q.version == std::optional<std::string>("14.0"));
  CHECK(q.locale == std::optional<std::uint16_t>(0x0409));
  CHECK(q.device_id == "v140Device");
  CHECK(q.device_type == "SmartPhone");
  CHECK_FALSE(q.policy_key.has_value());
}

TEST_CASE("mock: base64 query with a binary DeviceId, a policy key and User decodes") {
  auto q = mock::parse_eas_query("jRIJBBABI0VniavN7wEjRWeJq83vBGBI6k0GaVBob25lCAVhbGljZQ==");
  CHECK(q.cmd == "Ping");
  CHECK(q.version == std::optional<std::string>("14.1"));
  CHECK(q.device_id == "0123456789ABCDEF0123456789ABCDEF");
  CHECK(q.policy_key == std::optional<std::uint32_t>(1307199584));
  CHECK(q.device_type == "iPhone");
  CHECK(q.user == "alice");
}

TEST_CASE("mock: percent-encoded base64 query decodes") {
  auto q = mock::parse_eas_query("jRIJBBABI0VniavN7wEjRWeJq83vBGBI6k0GaVBob25lCAVhbGljZQ%3D%3D");
  CHECK(q.form == "base64");
  CHECK(q.user == "alice");
}

TEST_CASE("mock: a query that is not the binary layout is read as plain") {
  auto q = mock::parse_eas_query("Cmd");
  CHECK(q.form == "plain");
  CHECK(q.cmd.empty());
}

TEST_CASE("mock: a WBXML Ping request decodes with libwbxml2") {
  auto d = mock::decode_wbxml(fx::ping_req);
  REQUIRE(d.error.empty());
  CHECK(d.root == "Ping");
  CHECK(mock::xml_element_text(d.xml, "HeartbeatInterval") == std::optional<std::string>("480"));
  CHECK(mock::xml_element_count(d.xml, "Folder") == 1);
  CHECK(mock::xml_element_count(d.xml, "Folders") == 1);
}

TEST_CASE("mock: malformed WBXML is reported, not crashed on") {
  std::string bad = "\x03\x01\x6a\x00\x00\x0d\x45\x48\x03\x34";  // truncated inside a string
  auto d = mock::decode_wbxml(bad);
  CHECK_FALSE(d.error.empty());
  CHECK(mock::decode_wbxml("").error == "empty document");
}

TEST_CASE("mock: the WBXML writer reproduces the libwbxml fixtures") {
  CHECK(mock::ping_response(1) == fx::ping_resp_expired);
  CHECK(mock::ping_response(3) == fx::ping_resp_missing);
  CHECK(mock::ping_response(5, 3540) == fx::ping_resp_hbi_range);
  CHECK(mock::ping_response(6, {}, 200) == fx::ping_resp_toomany);
  CHECK(mock::sync_response("1", "5", 1) == fx::sync_resp_initial);
}

TEST_CASE("mock: OPTIONS lists the protocol versions and commands") {
  mock::ping_registry pings;
  auto f = post("", "");
  f.method = "OPTIONS";
  auto plan = mock::plan_eas(f, {}, pings, nullptr);
  REQUIRE(plan.now);
  bool versions = false, commands = false;
  for (const auto& [k, v] : plan.now->headers) {
    if (k == "MS-ASProtocolVersions") versions = v.find("16.1") != std::string::npos;
    if (k == "MS-ASProtocolCommands") commands = v.find("Ping") != std::string::npos;
  }
  CHECK(versions);
  CHECK(commands);
}

TEST_CASE("mock: Ping is held for its HeartbeatInterval capped by the test cap") {
  mock::ping_registry pings;
  boost::json::object log;
  auto plan = mock::plan_eas(post("Cmd=Ping&User=u&DeviceId=d&DeviceType=t", fx::ping_req),
                             capped(1), pings, &log);
  REQUIRE(plan.hold);
  CHECK(plan.hold->seconds == 1);
  CHECK(plan.hold->user == "u");
  CHECK(plan.hold->device == "d");
  CHECK(plan.cmd == std::optional<std::string>("Ping"));
  CHECK(log.contains("eas"));
  CHECK(log.at("wbxml").at("root").as_string() == "Ping");
  CHECK(pings.heartbeat("u", "d") == std::optional<unsigned>(480));
  CHECK(mock::after_hold(*plan.hold, mock::hold_outcome::expired).body == fx::ping_resp_expired);
  CHECK(mock::after_hold(*plan.hold, mock::hold_outcome::changes).body == fx::ping_resp_changes);
}

TEST_CASE("mock: Ping uses the identity header as the user key") {
  mock::ping_registry pings;
  auto plan = mock::plan_eas(post("Cmd=Ping&User=u&DeviceId=d&DeviceType=t", fx::ping_req,
                                  "upn@example.com"),
                             capped(1), pings, nullptr);
  REQUIRE(plan.hold);
  CHECK(plan.hold->user == "upn@example.com");
}

TEST_CASE("mock: an empty Ping reuses the cached heartbeat, or gets Status 3") {
  mock::ping_registry pings;
  auto first = mock::plan_eas(post("Cmd=Ping&User=u&DeviceId=d&DeviceType=t", ""), capped(5),
                              pings, nullptr);
  REQUIRE(first.now);
  CHECK(first.now->body == fx::ping_resp_missing);
  pings.remember_heartbeat("u", "d", 2);
  auto again = mock::plan_eas(post("Cmd=Ping&User=u&DeviceId=d&DeviceType=t", ""), capped(5),
                              pings, nullptr);
  REQUIRE(again.hold);
  CHECK(again.hold->seconds == 2);
}

TEST_CASE("mock: a heartbeat out of range answers Status 5 with the bound") {
  mock::ping_registry pings;
  mock::eas_settings exchange;  // 60..3540, no cap
  std::string low = mock::wbxml_writer{}
                        .open(0x0d, 0x05)
                        .leaf(0x0d, 0x08, "30")
                        .close()
                        .bytes();
  auto plan = mock::plan_eas(post("Cmd=Ping&User=u&DeviceId=d&DeviceType=t", low), exchange,
                             pings, nullptr);
  REQUIRE(plan.now);
  CHECK(plan.now->body == mock::ping_response(5, 60));
}

TEST_CASE("mock: FolderSync, Provision and Sync pick their fixtures") {
  mock::ping_registry pings;
  auto reply_for = [&](std::string_view cmd, std::string_view body) {
    auto q = "Cmd=" + std::string(cmd) + "&User=u&DeviceId=d&DeviceType=t";
    auto plan = mock::plan_eas(post(q, body), {}, pings, nullptr);
    REQUIRE(plan.now);
    return plan.now->body;
  };
  CHECK(reply_for("FolderSync", fx::foldersync_req) == fx::foldersync_resp);
  CHECK(reply_for("Provision", fx::provision_req) == fx::provision_resp);
  CHECK(reply_for("Provision", fx::provision_ack) == fx::provision_resp_final);
  CHECK(reply_for("Sync", fx::sync_req_initial) == fx::sync_resp_initial);
  CHECK(reply_for("Sync", fx::sync_req_getchanges) == fx::sync_resp_add);
  CHECK(reply_for("SendMail", fx::sendmail).empty());
}

TEST_CASE("mock: unknown commands are 400, known but unmodelled ones 501") {
  mock::ping_registry pings;
  auto status = [&](std::string_view query) {
    auto plan = mock::plan_eas(post(query, ""), {}, pings, nullptr);
    REQUIRE(plan.now);
    return plan.now->status;
  };
  CHECK(status("Cmd=Frobnicate&User=u&DeviceId=d&DeviceType=t") == 400);
  CHECK(status("Cmd=Sync&User=u&DeviceType=t") == 400);
  CHECK(status("Cmd=MoveItems&User=u&DeviceId=d&DeviceType=t") == 501);
}

TEST_CASE("mock: undecodable WBXML is 400, SendMail MIME is not decoded") {
  mock::ping_registry pings;
  boost::json::object log;
  std::string bad = "\x03\x01\x6a\x00\x00\x07\x56\x52\x03\x30";
  auto plan = mock::plan_eas(post("Cmd=FolderSync&User=u&DeviceId=d&DeviceType=t", bad), {},
                             pings, &log);
  REQUIRE(plan.now);
  CHECK(plan.now->status == 400);
  CHECK(log.at("wbxml").as_object().contains("error"));
  auto f = post("Cmd=SendMail&User=u&DeviceId=d&DeviceType=t", "From: a\r\n\r\nhi");
  f.content_type = "message/rfc822";
  auto mail = mock::plan_eas(f, {}, pings, nullptr);
  REQUIRE(mail.now);
  CHECK(mail.now->status == 200);
}

TEST_CASE("mock: notify wakes only the requests of that user") {
  boost::asio::io_context ioc;
  mock::ping_registry pings;
  auto a = std::make_shared<mock::held_request>(ioc.get_executor(), "a", "d1");
  auto b = std::make_shared<mock::held_request>(ioc.get_executor(), "b", "d2");
  pings.add(a);
  pings.add(b);
  CHECK(pings.held() == 2);
  CHECK(pings.notify("a", mock::wake_reason::changes) == 1);
  CHECK(pings.notify("a", mock::wake_reason::changes) == 0);  // already woken
  ioc.poll();
  CHECK(a->reason.load() == static_cast<int>(mock::wake_reason::changes));
  CHECK(a->timer.expiry() == std::chrono::steady_clock::time_point::min());
  CHECK(b->reason.load() == 0);
  pings.remove(a);
  pings.remove(a);  // idempotent
  pings.remove(b);
  CHECK(pings.held() == 0);
}

TEST_CASE("mock: a newer request of the same device supersedes the older one") {
  boost::asio::io_context ioc;
  mock::ping_registry pings;
  auto older = std::make_shared<mock::held_request>(ioc.get_executor(), "u", "dev");
  auto newer = std::make_shared<mock::held_request>(ioc.get_executor(), "u", "dev");
  auto other = std::make_shared<mock::held_request>(ioc.get_executor(), "u", "");
  pings.add(older);
  pings.add(other);
  pings.add(newer);
  CHECK(older->reason.load() == static_cast<int>(mock::wake_reason::superseded));
  CHECK(newer->reason.load() == 0);
  CHECK(other->reason.load() == 0);
}

TEST_CASE("mock: the command line takes listeners and applies the test-mode minimum") {
  std::array<const char*, 8> argv{"mock-exchange", "--listen", "127.0.0.1:0", "--listen",
                                  "[::1]:8080",    "--ping-heartbeat-cap", "2", nullptr};
  auto r = mock::parse_options(7, const_cast<char**>(argv.data()));
  REQUIRE(r.opts);
  CHECK(r.opts->listen.size() == 2);
  CHECK(r.opts->listen[1].host == "::1");
  CHECK(r.opts->listen[1].port == 8080);
  CHECK(r.opts->ping_cap == std::optional<unsigned>(2));
  CHECK(r.opts->ping_min == 1);
  CHECK(r.opts->identity_header == "X-Client-UPN");
  CHECK(r.opts->threads == 1);
}

TEST_CASE("mock: the command line rejects TLS listeners without a certificate") {
  std::array<const char*, 4> argv{"mock-exchange", "--tls-listen", "127.0.0.1:0", nullptr};
  auto r = mock::parse_options(3, const_cast<char**>(argv.data()));
  CHECK_FALSE(r.opts);
  CHECK(r.exit_code == 2);
}

TEST_CASE("mock: the Negotiate scheme is recognised case-insensitively, others are not") {
  CHECK(mock::negotiate_token("Negotiate YIIB") == std::optional<std::string_view>("YIIB"));
  CHECK(mock::negotiate_token("  negotiate   abc=  ") == std::optional<std::string_view>("abc="));
  CHECK_FALSE(mock::negotiate_token("Basic YWxpY2U6cHc="));
  CHECK_FALSE(mock::negotiate_token("NegotiateX abc"));
  CHECK(mock::base64_encode("ab") == "YWI=");
  CHECK(mock::base64_encode("abc") == "YWJj");
  CHECK(mock::base64_decode(mock::base64_encode("\x60\x01\xff")) == std::string("\x60\x01\xff"));
}

TEST_CASE("mock: the token's outer mechanism is read from its OID") {
  const std::string spnego("\x60\x08\x06\x06\x2b\x06\x01\x05\x05\x02", 10);
  const std::string krb5("\x60\x0b\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02", 13);
  CHECK(mock::token_mech(spnego) == "spnego");
  CHECK(mock::token_mech(krb5) == "krb5");
  CHECK(mock::token_mech("garbage") == "unknown");
  CHECK(mock::token_mech(std::string("\x60\x82", 2)) == "unknown");
}

TEST_CASE("mock: Negotiate options need a keytab and take require or ignore") {
  std::array ok{"mock", "--listen", "127.0.0.1:0", "--negotiate-keytab", "/k", "--require-negotiate",
                "--channel-bindings", "require"};
  auto r = mock::parse_options(static_cast<int>(ok.size()), const_cast<char**>(ok.data()));
  REQUIRE(r.opts);
  CHECK(r.opts->negotiate_keytab == "/k");
  CHECK(r.opts->require_negotiate);
  CHECK(r.opts->require_channel_bindings);
  CHECK(r.opts->negotiate_rcache == "temp");
  std::array no_keytab{"mock", "--listen", "127.0.0.1:0", "--require-negotiate"};
  CHECK(mock::parse_options(static_cast<int>(no_keytab.size()),
                            const_cast<char**>(no_keytab.data())).exit_code == 2);
  std::array bad_mode{"mock", "--listen", "127.0.0.1:0", "--negotiate-keytab", "/k",
                      "--channel-bindings", "maybe"};
  CHECK(mock::parse_options(static_cast<int>(bad_mode.size()),
                            const_cast<char**>(bad_mode.data())).exit_code == 2);
  std::array delay{"mock", "--listen", "127.0.0.1:0", "--negotiate-keytab", "/k",
                   "--negotiate-challenge-delay-ms", "1500"};
  auto d = mock::parse_options(static_cast<int>(delay.size()), const_cast<char**>(delay.data()));
  REQUIRE(d.opts);
  CHECK(d.opts->negotiate_challenge_delay_ms == 1500);
  std::array bad_delay{"mock", "--listen", "127.0.0.1:0", "--negotiate-keytab", "/k",
                       "--negotiate-challenge-delay-ms", "soon"};
  CHECK(mock::parse_options(static_cast<int>(bad_delay.size()),
                            const_cast<char**>(bad_delay.data())).exit_code == 2);
}

// ---------------------------------------------------------------------------------------------
// Connection-bound authentication (conn_auth.hpp)

TEST_CASE("conn_auth: NTLM takes two legs on one connection, then the connection is the user") {
  using namespace cbagate::mock;
  conn_auth_state conn;
  auto r1 = authenticate(conn, "NTLM " + ntlm_type1(), "", std::nullopt, "ABCDEFGH");
  CHECK_FALSE(r1.ok);
  REQUIRE(r1.www_authenticate.size() == 1);
  CHECK(r1.www_authenticate[0].starts_with("NTLM "));
  auto ch = ntlm_challenge_of(r1.www_authenticate[0].substr(5));
  REQUIRE(ch);
  CHECK(*ch == "ABCDEFGH");
  auto r2 = authenticate(conn, "NTLM " + ntlm_type3(*ch, "alice", "pw-alice"), "", std::nullopt, "x");
  CHECK(r2.ok);
  CHECK(r2.user == "alice");
  CHECK(r2.via == "NTLM");
  auto r3 = authenticate(conn, "", "", std::nullopt, "x");
  CHECK(r3.ok);
  CHECK(r3.user == "alice");
  CHECK(r3.via == "connection");
  // Another connection has nothing.
  conn_auth_state other;
  auto r4 = authenticate(other, "", "", std::nullopt, "x");
  CHECK_FALSE(r4.ok);
  CHECK(r4.www_authenticate.size() == 3);
}

TEST_CASE("conn_auth: a type 3 on a connection without its challenge, or a forged one, is refused") {
  using namespace cbagate::mock;
  conn_auth_state a, b;
  (void)authenticate(a, "NTLM " + ntlm_type1(), "", std::nullopt, "12345678");
  auto moved = authenticate(b, "NTLM " + ntlm_type3("12345678", "alice", "pw-alice"), "",
                            std::nullopt, "x");
  CHECK_FALSE(moved.ok);
  CHECK(b.user.empty());
  auto wrong = authenticate(a, "NTLM " + ntlm_type3("12345678", "alice", "bad"), "", std::nullopt, "x");
  CHECK_FALSE(wrong.ok);
  CHECK(a.user.empty());
  auto garbage = authenticate(a, "NTLM %%%", "", std::nullopt, "x");
  CHECK_FALSE(garbage.ok);
}

TEST_CASE("conn_auth: Negotiate test token, Basic per request, identity header") {
  using namespace cbagate::mock;
  conn_auth_state conn;
  auto k = authenticate(conn, "Negotiate " + base64_encode("MOCK-KRB5:bob:pw-bob"), "",
                        std::nullopt, "x");
  CHECK(k.ok);
  CHECK(k.persistent_auth);
  CHECK(conn.user == "bob");
  conn_auth_state c2;
  auto basic = authenticate(c2, "Basic " + base64_encode("carol:pw-carol"), "", std::nullopt, "x");
  CHECK(basic.ok);
  CHECK(basic.user == "carol");
  CHECK(c2.user.empty());  // Basic is not bound to the connection
  auto hdr = authenticate(c2, "", "dave@example.com", std::nullopt, "x");
  CHECK(hdr.ok);
  CHECK(hdr.via == "header");
  CHECK(base64_encode("f") == "Zg==");
  CHECK(base64_encode("fo") == "Zm8=");
  CHECK(base64_encode("foo") == "Zm9v");
}
