#include "conn_auth.hpp"

#include "eas.hpp"        // base64_decode
#include "negotiate.hpp"  // base64_encode
#include "replies.hpp"   // iequals, istarts_with

#include <utility>

namespace cbagate::mock {
namespace {

using namespace std::string_view_literals;

constexpr std::string_view signature{"NTLMSSP\0", 8};
constexpr std::string_view krb_prefix = "MOCK-KRB5:";
constexpr std::string_view realm_challenge = "Basic realm=\"mock-exchange\"";

// "Scheme token" -> (scheme, token); the scheme compared case-insensitively by the caller.
std::pair<std::string_view, std::string_view> split_credentials(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  const std::size_t sp = v.find(' ');
  if (sp == std::string_view::npos) return {v, {}};
  std::string_view token = v.substr(sp + 1);
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  return {v.substr(0, sp), token};
}

// 0 when not an NTLMSSP message, else its type (1, 2, 3, ...).
unsigned ntlm_type(std::string_view raw) {
  if (raw.size() < 12 || raw.substr(0, 8) != signature) return 0;
  return static_cast<unsigned char>(raw[8]) | (static_cast<unsigned char>(raw[9]) << 8U);
}

bool password_ok(std::string_view user, std::string_view password) {
  return !user.empty() && password.size() == user.size() + 3 && password.substr(0, 3) == "pw-" &&
         password.substr(3) == user;
}

auth_result fresh_challenge(std::string error) {
  auth_result r;
  r.www_authenticate = {"Negotiate", "NTLM", std::string(realm_challenge)};
  r.error = std::move(error);
  return r;
}

std::string type2(std::string_view challenge) {
  std::string m(signature);
  m += "\x02\0\0\0"sv;
  m += challenge;
  return base64_encode(m);
}

}  // namespace

std::string ntlm_type1() {
  std::string m(signature);
  m += "\x01\0\0\0\x07\x82\x08\xa2"sv;
  return base64_encode(m);
}

std::string ntlm_type3(std::string_view challenge, std::string_view user,
                       std::string_view password) {
  std::string m(signature);
  m += "\x03\0\0\0"sv;
  m += challenge;
  m += user;
  m += ':';
  m += password;
  return base64_encode(m);
}

std::optional<std::string> ntlm_challenge_of(std::string_view type2_base64) {
  auto raw = base64_decode(type2_base64);
  if (!raw || ntlm_type(*raw) != 2 || raw->size() < 20) return std::nullopt;
  return raw->substr(12, 8);
}

auth_result authenticate(conn_auth_state& conn, std::string_view authorization,
                         std::string_view identity,
                         const std::optional<kerberos_verdict>& kerberos,
                         std::string_view challenge) {
  auth_result r;
  if (!identity.empty()) {
    r.ok = true;
    r.user = std::string(identity);
    r.via = "header";
    return r;
  }
  if (authorization.empty()) {
    if (!conn.user.empty()) {
      r.ok = true;
      r.user = conn.user;
      r.via = "connection";
      return r;
    }
    return fresh_challenge(conn.challenge.empty() ? "no credentials"
                                                  : "NTLM type 3 missing after the challenge");
  }
  const auto [scheme, token] = split_credentials(authorization);
  if (iequals(scheme, "Basic")) {
    auto raw = base64_decode(token);
    const std::size_t colon = raw ? raw->find(':') : std::string::npos;
    if (!raw || colon == std::string::npos) return fresh_challenge("Basic: malformed credentials");
    const std::string user = raw->substr(0, colon);
    if (!password_ok(user, std::string_view(*raw).substr(colon + 1)))
      return fresh_challenge("Basic: wrong password for " + user);
    r.ok = true;
    r.user = user;
    r.via = "Basic";
    return r;
  }
  const bool ntlm = iequals(scheme, "NTLM");
  const bool negotiate = iequals(scheme, "Negotiate");
  if (!ntlm && !negotiate) return fresh_challenge("unsupported scheme");

  // New NTLM or Negotiate credentials restart authentication on this connection (IIS).
  conn.user.clear();
  conn.scheme.clear();
  const std::string canonical = ntlm ? "NTLM" : "Negotiate";
  auto raw = base64_decode(token);
  if (!raw || raw->empty()) {
    conn.challenge.clear();
    return fresh_challenge(canonical + ": token is not base64");
  }
  if (negotiate && raw->starts_with(krb_prefix)) {
    conn.challenge.clear();
    const std::string_view rest = std::string_view(*raw).substr(krb_prefix.size());
    const std::size_t colon = rest.find(':');
    if (colon == std::string_view::npos || !password_ok(rest.substr(0, colon), rest.substr(colon + 1)))
      return fresh_challenge("Negotiate: test Kerberos token refused");
    conn.user = std::string(rest.substr(0, colon));
    conn.scheme = canonical;
    ++conn.handshakes;
    r.ok = true;
    r.user = conn.user;
    r.via = canonical;
    r.www_authenticate = {"Negotiate " + base64_encode("MOCK-KRB5-OK")};
    r.persistent_auth = true;
    return r;
  }
  const unsigned type = ntlm_type(*raw);
  if (type == 1) {
    conn.challenge = std::string(challenge);
    conn.challenge_scheme = canonical;
    r.www_authenticate = {canonical + " " + type2(challenge)};
    r.error = canonical + ": NTLM challenge sent";
    return r;
  }
  if (type == 3) {
    const std::string expected = std::exchange(conn.challenge, std::string());
    if (expected.empty())
      return fresh_challenge(canonical + ": NTLM type 3 without a challenge on this connection");
    if (raw->size() < 20 || raw->substr(12, 8) != expected)
      return fresh_challenge(canonical + ": NTLM type 3 answers another challenge");
    const std::string_view rest = std::string_view(*raw).substr(20);
    const std::size_t colon = rest.find(':');
    if (colon == std::string_view::npos || !password_ok(rest.substr(0, colon), rest.substr(colon + 1)))
      return fresh_challenge(canonical + ": NTLM credentials refused");
    conn.user = std::string(rest.substr(0, colon));
    conn.scheme = canonical;
    ++conn.handshakes;
    r.ok = true;
    r.user = conn.user;
    r.via = canonical;
    return r;
  }
  conn.challenge.clear();
  if (negotiate && kerberos) {
    if (!kerberos->authenticated) return fresh_challenge("Negotiate: Kerberos token refused");
    conn.user = kerberos->principal;
    conn.scheme = canonical;
    ++conn.handshakes;
    r.ok = true;
    r.user = conn.user;
    r.via = canonical;
    if (!kerberos->reply_token.empty()) r.www_authenticate = {"Negotiate " + kerberos->reply_token};
    r.persistent_auth = true;
    return r;
  }
  return fresh_challenge(canonical + ": not an NTLM message or test token");
}

}  // namespace cbagate::mock
