// delegation::kerberos_delegator against the real KDC started by the `kdc` fixture
// (tests/support/kdc/start-kdc). The test plays the backend: it accepts the tokens with the
// backend's keytab, like Exchange would.
#include "common/gss_ptr.hpp"
#include "delegation/kerberos.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <krb5/krb5.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace cbagate::delegation {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

/** DIR/env.sh of the fixture, as a map; FAILs with the reason when the realm is not there. */
const std::map<std::string, std::string>& lab() {
  static const std::map<std::string, std::string> env = [] {
    std::map<std::string, std::string> m;
    std::ifstream in(std::string(CBAGATE_KDC_DIR) + "/env.sh");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("export ", 0) != 0) continue;
      const auto eq = line.find('=');
      if (eq != std::string::npos) m[line.substr(7, eq - 7)] = line.substr(eq + 1);
    }
    return m;
  }();
  if (env.empty())
    FAIL("no KDC: " CBAGATE_KDC_DIR "/env.sh missing. The kdc_setup fixture runs "
         "tests/support/kdc/start-kdc; its packages come from `tests/support/install-deps kdc` "
         "(krb5-kdc krb5-admin-server krb5-kdc-ldap krb5-user slapd ldap-utils)");
  // Process-global, set before any krb5 call and before any worker thread exists.
  ::setenv("KRB5_CONFIG", env.at("KRB5_CONFIG").c_str(), 1);
  ::setenv("KRB5RCACHETYPE", "none", 1);  // the acceptor keeps no replay cache in /var/tmp
  return env;
}

config::kerberos_section section(const std::string& target = "HTTP/exchange.lab.test") {
  const auto& e = lab();
  config::kerberos_section s;
  s.keytab = e.at("KCD_PROXY_KEYTAB");
  s.principal = e.at("KCD_PROXY_PRINCIPAL");
  s.target_spn = target;
  s.upn_to_principal = config::upn_mapping::realm;
  return s;
}

std::unique_ptr<kerberos_delegator> make(const config::kerberos_section& s, kerberos_options o = {}) {
  auto d = kerberos_delegator::create(s, o);
  REQUIRE_MESSAGE(d.has_value(), d.error().message());
  return std::move(*d);
}

/** AS_REQ + TGS_REQ lines in the KDC log so far. */
std::size_t kdc_requests() {
  std::ifstream in(lab().at("KCD_KDC_LOG"));
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find("AS_REQ") != std::string::npos || line.find("TGS_REQ") != std::string::npos) ++n;
  return n;
}
std::size_t kdc_log_count(const std::string& needle) {
  std::ifstream in(lab().at("KCD_KDC_LOG"));
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) ++n;
  return n;
}

std::vector<unsigned char> unbase64(const std::string& s) {
  std::vector<unsigned char> out(s.size() / 4 * 3 + 3);
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()),
                                static_cast<int>(s.size()));
  REQUIRE(n >= 0);
  std::size_t len = static_cast<std::size_t>(n);
  if (!s.empty() && s.back() == '=') --len;
  if (s.size() > 1 && s[s.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

struct accepted {
  OM_uint32 major = 0;
  std::string client;
  OM_uint32 ticket_flags = 0;
  OM_uint32 ret_flags = 0;      // the context flags the initiator asked for (RFC 2743 2.2.2)
  std::string mech;             // the mechanism SPNEGO negotiated, as OID bytes
  std::size_t reply_bytes = 0;  // the acceptor's reply token (mutual authentication)
};

/** The backend side: gss_accept_sec_context with `keytab`, optionally checking bindings. */
accepted accept_token(const std::string& token_b64, const std::string& keytab,
                      const std::string* binding_hash = nullptr) {
  OM_uint32 minor = 0;
  gss_key_value_element_desc elem{"keytab", keytab.c_str()};
  gss_key_value_set_desc store{1, &elem};
  gss_cred_id_t raw_cred = GSS_C_NO_CREDENTIAL;
  OM_uint32 major = gss_acquire_cred_from(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, GSS_C_NO_OID_SET,
                                          GSS_C_ACCEPT, &store, &raw_cred, nullptr, nullptr);
  REQUIRE_FALSE(GSS_ERROR(major));
  gss::cred_ptr cred(raw_cred);

  const auto bytes = unbase64(token_b64);
  gss_buffer_desc in = gss::input_buffer(std::span<const unsigned char>(bytes));
  std::string app;
  gss_channel_bindings_struct cb{};
  if (binding_hash != nullptr) {
    app = "tls-server-end-point:" + *binding_hash;
    cb.application_data = gss::input_buffer(std::string_view(app));
  }
  gss_ctx_id_t raw_ctx = GSS_C_NO_CONTEXT;
  gss_name_t raw_src = GSS_C_NO_NAME;
  gss_OID mech = GSS_C_NO_OID;
  gss::buffer out;
  accepted a;
  a.major = gss_accept_sec_context(&minor, &raw_ctx, cred.get(), &in,
                                   binding_hash != nullptr ? &cb : GSS_C_NO_CHANNEL_BINDINGS,
                                   &raw_src, &mech, out.out(), &a.ret_flags, nullptr, nullptr);
  gss::ctx_ptr ctx(raw_ctx);
  gss::name_ptr src(raw_src);
  if (GSS_ERROR(a.major)) return a;
  if (mech != GSS_C_NO_OID) a.mech.assign(static_cast<const char*>(mech->elements), mech->length);
  a.reply_bytes = out.bytes().size();
  gss::buffer name;
  REQUIRE_FALSE(GSS_ERROR(gss_display_name(&minor, src.get(), name.out(), nullptr)));
  a.client = std::string(name.view());
  krb5_flags flags = 0;
  if (!GSS_ERROR(gss_krb5_get_tkt_flags(&minor, ctx.get(), &flags)))
    a.ticket_flags = static_cast<OM_uint32>(flags);
  return a;
}

double ms_since(clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock::now() - t0).count();
}

std::vector<unsigned char> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

TEST_CASE("delegation: alice's token is accepted by the backend as alice@LAB.TEST via S4U2Proxy") {
  auto d = make(section());
  const auto delegations = kdc_log_count("CONSTRAINED-DELEGATION s4u-client=alice@LAB.TEST");
  const auto t0 = clock::now();
  auto token = d->negotiate_token("alice@lab.test", {});
  const double cold = ms_since(t0);
  REQUIRE_MESSAGE(token.has_value(), token.error().message());
  const auto t1 = clock::now();
  auto token2 = d->negotiate_token("alice@lab.test", {});
  const double warm = ms_since(t1);
  REQUIRE(token2.has_value());
  const auto t2 = clock::now();
  REQUIRE(d->negotiate_token("bob@lab.test", {}).has_value());
  const double cold_tgt_warm = ms_since(t2);
  MESSAGE("cold, first user (proxy AS + S4U2Self + S4U2Proxy + token): " << cold
          << " ms; cold, proxy TGT cached (S4U2Self + S4U2Proxy + token): " << cold_tgt_warm
          << " ms; warm token: " << warm << " ms");

  const auto a = accept_token(*token, lab().at("KCD_BACKEND_KEYTAB"));
  REQUIRE_MESSAGE(!GSS_ERROR(a.major), "accept failed, major " << a.major);
  CHECK(a.client == "alice@LAB.TEST");
  // The proxy holds only its own key; the ticket for alice to the backend came from the KDC's
  // constrained-delegation path (logged per S4U2Proxy request) and is forwardable, as S4U2Proxy
  // tickets derived from a forwardable evidence ticket are.
  CHECK(kdc_log_count("CONSTRAINED-DELEGATION s4u-client=alice@LAB.TEST") == delegations + 1);
  CHECK((a.ticket_flags & TKT_FLG_FORWARDABLE) != 0);
  CHECK(*token != *token2);  // one fresh context per request
}

TEST_CASE("delegation: a warm user's next token makes no KDC request") {
  auto d = make(section());
  auto first = d->negotiate_token("bob@lab.test", {});
  REQUIRE_MESSAGE(first.has_value(), first.error().message());
  CHECK(d->cached("bob@LAB.TEST"));
  // Usable until shortly (renew_before) before the ticket's end: the test realm's 10 h
  // tickets, so well over an hour from now (what a backend session is bounded by).
  const auto until = d->cached_until("bob@LAB.TEST");
  REQUIRE(until.has_value());
  CHECK(*until > std::chrono::steady_clock::now() + std::chrono::hours(1));
  CHECK_FALSE(d->cached_until("alice@LAB.TEST").has_value());
  const auto before = kdc_requests();
  for (int i = 0; i < 3; ++i) {
    auto t = d->negotiate_token("bob@lab.test", {});
    REQUIRE(t.has_value());
    CHECK(!GSS_ERROR(accept_token(*t, lab().at("KCD_BACKEND_KEYTAB")).major));
  }
  CHECK(kdc_requests() == before);
  const auto s = d->stats();
  CHECK(s.cache_misses == 1);
  CHECK(s.cache_hits == 3);
  CHECK(s.credential_acquires == 1);  // the entry's handle, made once; warm tokens reuse it
}

TEST_CASE("delegation: a warm token is a SPNEGO NegTokenInit offering krb5, mutual and channel-bound") {
  auto d = make(section());
  const std::string hash(32, '\x5a');
  REQUIRE(d->negotiate_token("alice@lab.test", bytes_of(hash)).has_value());
  auto t = d->negotiate_token("alice@lab.test", bytes_of(hash));  // warm
  REQUIRE_MESSAGE(t.has_value(), t.error().message());
  CHECK(d->stats().cache_hits == 1);
  // RFC 2743 3.1 framing with the SPNEGO OID, then [0] NegTokenInit whose mechTypes is exactly
  // { 1.2.840.113554.1.2.2 } and whose [2] mechToken is a krb5 AP-REQ token (RFC 4121 4.1):
  // what MIT's SPNEGO initiator sends and IIS and the mock Exchange expect.
  const auto b = unbase64(*t);
  const std::string bytes(b.begin(), b.end());
  REQUIRE(bytes.size() > 40);
  CHECK(bytes[0] == '\x60');
  const std::string spnego("\x06\x06\x2b\x06\x01\x05\x05\x02", 8);
  const std::string krb5_oid("\x06\x09\x2a\x86\x48\x86\xf7\x12\x01\x02\x02", 11);
  const auto oid_at = bytes.find(spnego);
  CHECK(oid_at == 4);  // 0x60, 0x82 and a two-byte length first
  const auto mech_types = bytes.find(std::string("\xa0\x0d\x30\x0b", 4) + krb5_oid);
  REQUIRE(mech_types != std::string::npos);
  CHECK(bytes[mech_types + 15] == '\xa2');
  CHECK(bytes.find(std::string("\x01\x00", 2), mech_types) != std::string::npos);  // AP-REQ id
  const auto a = accept_token(*t, lab().at("KCD_BACKEND_KEYTAB"), &hash);
  REQUIRE_MESSAGE(!GSS_ERROR(a.major), "accept failed, major " << a.major);
  CHECK(a.client == "alice@LAB.TEST");
  CHECK(a.mech == krb5_oid.substr(2));
  CHECK((a.ret_flags & GSS_C_MUTUAL_FLAG) != 0);
  CHECK((a.ret_flags & GSS_C_INTEG_FLAG) != 0);
  CHECK((a.ret_flags & GSS_C_DELEG_FLAG) == 0);  // the user's tickets never go to the backend
  CHECK(a.reply_bytes > 0);                      // mutual: the acceptor answers with an AP-REP
}

TEST_CASE("delegation: tokens from shared cached handles stay valid under concurrency and clear_cache") {
  // Several threads make tokens for two users from the shared entries while one of them also
  // empties the cache every few tokens: a handle in use must outlive its entry, and every token
  // must still verify.
  kerberos_options o;
  o.workers = 1;  // negotiate_token runs on the calling threads; the pool stays idle
  auto d = make(section(), o);
  REQUIRE(d->negotiate_token("alice@lab.test", {}).has_value());
  REQUIRE(d->negotiate_token("bob@lab.test", {}).has_value());
  constexpr int threads = 4;
  constexpr int per_thread = 25;
  std::vector<std::vector<std::string>> made(threads);
  std::vector<int> failed(threads, 0);
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      const auto me = static_cast<std::size_t>(i);
      for (int n = 0; n < per_thread; ++n) {
        auto t = d->negotiate_token((i + n) % 2 == 0 ? "alice@lab.test" : "bob@lab.test", {});
        if (t)
          made[me].push_back(std::move(*t));
        else
          ++failed[me];
        if (i == 0 && n % 5 == 4) d->clear_cache();
      }
    });
  for (auto& t : pool) t.join();
  const auto& kt = lab().at("KCD_BACKEND_KEYTAB");
  for (int i = 0; i < threads; ++i) {
    CHECK(failed[static_cast<std::size_t>(i)] == 0);
    for (const auto& t : made[static_cast<std::size_t>(i)]) {
      const auto a = accept_token(t, kt);
      CHECK(!GSS_ERROR(a.major));
      CHECK((a.client == "alice@LAB.TEST" || a.client == "bob@LAB.TEST"));
    }
  }
  const auto s = d->stats();
  MESSAGE(s.cache_hits << " warm and " << s.s4u_count << " cold of " << s.tokens << " tokens");
  CHECK(s.tokens == 2 + threads * per_thread);
  CHECK(s.cache_hits > 0);
  CHECK(s.s4u_count > 2);  // cleared entries were delegated afresh
  CHECK(s.credential_acquires == s.s4u_count);
  // After the storm a cleared user is delegated afresh and its token still verifies.
  d->clear_cache();
  auto after = d->negotiate_token("alice@lab.test", {});
  REQUIRE(after.has_value());
  CHECK(accept_token(*after, kt).client == "alice@LAB.TEST");
}

TEST_CASE("delegation: an unknown user is unknown_user") {
  auto d = make(section());
  auto t = d->negotiate_token("nosuchuser@lab.test", {});
  REQUIRE_FALSE(t.has_value());
  CHECK(t.error() == make_error_code(errc::unknown_user));
  CHECK(t.error().category().name() == std::string("proxy.delegation"));
  CHECK_FALSE(d->cached("nosuchuser@LAB.TEST"));
  CHECK_FALSE(d->cached_until("nosuchuser@LAB.TEST").has_value());
}

TEST_CASE("delegation: a refused user is answered from memory, not by the KDC again") {
  auto d = make(section());
  auto t = d->negotiate_token("nosuchuser2@lab.test", {});
  REQUIRE_FALSE(t.has_value());
  CHECK(t.error() == make_error_code(errc::unknown_user));
  const auto before = kdc_requests();
  for (int i = 0; i < 3; ++i) {
    auto again = d->negotiate_token("nosuchuser2@lab.test", {});
    REQUIRE_FALSE(again.has_value());
    CHECK(again.error() == make_error_code(errc::unknown_user));
  }
  CHECK(kdc_requests() == before);
  // With the refusal memory off, every attempt asks the KDC.
  kerberos_options o;
  o.refusal_ttl = std::chrono::seconds(0);
  auto d2 = make(section(), o);
  REQUIRE_FALSE(d2->negotiate_token("nosuchuser3@lab.test", {}).has_value());
  const auto before2 = kdc_requests();
  REQUIRE_FALSE(d2->negotiate_token("nosuchuser3@lab.test", {}).has_value());
  CHECK(kdc_requests() > before2);
}

TEST_CASE("delegation: a disabled user (-allow_tix) is user_disabled") {
  auto d = make(section());
  auto t = d->negotiate_token("carol@lab.test", {});
  REQUIRE_FALSE(t.has_value());
  CHECK(t.error() == make_error_code(errc::user_disabled));
}

TEST_CASE("delegation: a target outside krbAllowedToDelegateTo is delegation_refused") {
  auto d = make(section("HTTP/nodeleg.lab.test"));
  auto t = d->negotiate_token("alice@lab.test", {});
  REQUIRE_FALSE(t.has_value());
  CHECK(t.error() == make_error_code(errc::delegation_refused));
}

TEST_CASE("delegation: a KDC with nothing listening is kdc_unreachable, fast") {
  auto s = section();
  s.keytab = lab().at("KCD_OFFLINE_KEYTAB");
  s.principal = lab().at("KCD_OFFLINE_PRINCIPAL");
  kerberos_options o;
  o.deadline = 5s;
  boost::asio::io_context io;  // outlives d: an abandoned worker still posts to it
  auto d = make(s, o);
  const auto t0 = clock::now();
  auto f = boost::asio::co_spawn(io, d->async_token("alice@lab.test", {}), boost::asio::use_future);
  io.run();
  auto t = f.get();
  const double took = ms_since(t0);
  REQUIRE_FALSE(t.has_value());
  CHECK(t.error() == make_error_code(errc::kdc_unreachable));
  CHECK(took < 4000.0);
  CHECK(d->stats().deadline_expired == 0);  // the KDC client gave up by itself, before the deadline
}

TEST_CASE("delegation: a hung KDC answers kdc_unreachable at the deadline") {
  // Play a hung KDC: a loopback listener on the offline realm's port that never accepts; the
  // kernel completes the handshake and the krb5 client waits for a reply that never comes.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(lab().at("KCD_OFFLINE_PORT"))));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE_MESSAGE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0,
                  "port " << lab().at("KCD_OFFLINE_PORT") << " taken meanwhile");
  REQUIRE(::listen(fd, 16) == 0);

  auto s = section();
  s.keytab = lab().at("KCD_OFFLINE_KEYTAB");
  s.principal = lab().at("KCD_OFFLINE_PRINCIPAL");
  kerberos_options o;
  o.deadline = 300ms;
  o.workers = 1;
  boost::asio::io_context io;  // outlives d: an abandoned worker still posts to it
  auto d = make(s, o);
  const auto t0 = clock::now();
  auto f = boost::asio::co_spawn(io, d->async_token("alice@lab.test", {}), boost::asio::use_future);
  io.run();
  auto t = f.get();
  const double took = ms_since(t0);
  ::close(fd);  // resets the queued connection: the abandoned worker fails at once
  REQUIRE_FALSE(t.has_value());
  CHECK(t.error() == make_error_code(errc::kdc_unreachable));
  CHECK(took >= 290.0);
  CHECK(took < 3000.0);
  CHECK(d->stats().deadline_expired == 1);
}

TEST_CASE("delegation: channel bindings are carried and checked by the acceptor") {
  auto d = make(section());
  const std::string x(32, '\x11');
  const std::string y(32, '\x22');
  const auto xb = bytes_of(x);
  auto t1 = d->negotiate_token("alice@lab.test", xb);
  auto t2 = d->negotiate_token("alice@lab.test", xb);
  REQUIRE_MESSAGE(t1.has_value(), t1.error().message());
  REQUIRE(t2.has_value());
  const auto& kt = lab().at("KCD_BACKEND_KEYTAB");
  const auto good = accept_token(*t1, kt, &x);
  CHECK(!GSS_ERROR(good.major));
  CHECK(good.client == "alice@LAB.TEST");
  CHECK(GSS_ROUTINE_ERROR(accept_token(*t2, kt, &y).major) == GSS_S_BAD_BINDINGS);
}

TEST_CASE("delegation: async_token resumes on the caller's executor") {
  boost::asio::io_context io;  // outlives d
  auto d = make(section());
  std::thread::id resumed_on;
  expected<std::string> result = make_error_code(errc::internal);
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        result = co_await d->async_token("alice@lab.test", {});
        resumed_on = std::this_thread::get_id();
      },
      boost::asio::detached);
  io.run();
  REQUIRE_MESSAGE(result.has_value(), result.error().message());
  CHECK(resumed_on == std::this_thread::get_id());
  CHECK(accept_token(*result, lab().at("KCD_BACKEND_KEYTAB")).client == "alice@LAB.TEST");
}

TEST_CASE("delegation: concurrent cold requests on several workers all succeed") {
  kerberos_options o;
  o.workers = 3;
  boost::asio::io_context io;  // outlives d
  auto d = make(section(), o);
  std::vector<std::future<expected<std::string>>> results;
  for (int i = 0; i < 6; ++i)
    results.push_back(boost::asio::co_spawn(
        io, d->async_token(i % 2 == 0 ? "alice@lab.test" : "bob@lab.test", {}),
        boost::asio::use_future));
  io.run();
  for (auto& f : results) {
    auto t = f.get();
    REQUIRE_MESSAGE(t.has_value(), t.error().message());
    CHECK(!GSS_ERROR(accept_token(*t, lab().at("KCD_BACKEND_KEYTAB")).major));
  }
  CHECK(d->stats().tokens == 6);
}

TEST_CASE("delegation: the credential cache is bounded (least recently used leaves)") {
  kerberos_options o;
  o.cache_capacity = 1;
  auto d = make(section(), o);
  REQUIRE(d->negotiate_token("alice@lab.test", {}).has_value());
  REQUIRE(d->negotiate_token("bob@lab.test", {}).has_value());
  CHECK(d->cached("bob@LAB.TEST"));
  CHECK_FALSE(d->cached("alice@LAB.TEST"));
  CHECK(d->stats().evictions == 1);
}

TEST_CASE("delegation: UPNs map to principals by realm or as enterprise names") {
  CHECK(upn_to_principal("alice@lab.test", config::upn_mapping::realm, "X") ==
        expected<std::string>("alice@LAB.TEST"));
  CHECK(upn_to_principal("alice", config::upn_mapping::realm, "LAB.TEST") ==
        expected<std::string>("alice@LAB.TEST"));
  CHECK(upn_to_principal("alice@contoso.com", config::upn_mapping::enterprise, "CORP") ==
        expected<std::string>("alice@contoso.com"));
  CHECK_FALSE(upn_to_principal("", config::upn_mapping::realm, "R").has_value());
  CHECK_FALSE(upn_to_principal("a/b@lab.test", config::upn_mapping::realm, "R").has_value());
  CHECK_FALSE(upn_to_principal("alice", config::upn_mapping::enterprise, "R").has_value());
}

TEST_CASE("delegation: a missing keytab is refused at creation") {
  auto s = section();
  s.keytab = std::string(CBAGATE_KDC_DIR) + "/no-such.keytab";
  auto d = kerberos_delegator::create(s);
  REQUIRE_FALSE(d.has_value());
  CHECK(d.error() == make_error_code(errc::keytab));
}

}  // namespace
}  // namespace cbagate::delegation
