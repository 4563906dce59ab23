#include "http/sanitize.hpp"

#include <array>
#include <cstddef>
#include <optional>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>

namespace cbagate::http {
namespace {

namespace bhttp = boost::beast::http;
using bhttp::field;

// What the pass does with a header, by name (h2o's tokens.pl idea, STYLE.md 5.6).
enum flag : std::uint8_t {
  drop_request = 1U << 0,        // removed from every request
  drop_response = 1U << 1,       // removed from every response
  hop_by_hop = 1U << 2,          // RFC 9110 7.6.1 connection-specific (implies both drops)
  identity = 1U << 3,            // a client-supplied identity: removed from every request
  credential = 1U << 4,          // Authorization: removed when strip_authorization
  keep_on_connection = 1U << 5,  // a Connection token never removes it
};

constexpr std::uint8_t hop = hop_by_hop | drop_request | drop_response;

struct header_rule {
  std::string_view name;
  field known;  // Beast's enum for the name, or field::unknown
  std::uint8_t flags;
};

// THE table. A name not listed here is forwarded unchanged in both directions (unless a
// Connection token names it).
constexpr std::array rules{
    // RFC 9110 7.6.1 and RFC 9112 hop-by-hop fields. Transfer-Encoding is ours to set again:
    // the relay re-frames each body. Proxy-Authorization/-Authenticate concern us, not the
    // backend. Keep-Alive and Proxy-Connection are the pre-standard spellings.
    header_rule{"Connection", field::connection, hop},
    header_rule{"Keep-Alive", field::keep_alive, hop},
    header_rule{"Proxy-Connection", field::proxy_connection, hop},
    header_rule{"TE", field::te, hop},
    header_rule{"Trailer", field::trailer, hop},
    header_rule{"Transfer-Encoding", field::transfer_encoding, hop},
    header_rule{"Upgrade", field::upgrade, hop},
    header_rule{"Proxy-Authorization", field::proxy_authorization, hop},
    header_rule{"Proxy-Authenticate", field::proxy_authenticate, hop},
    // A Connection token naming these must not remove them: the request would reach the
    // backend without its authority (Host, RFC 9112 3.2) or the relay without its framing.
    header_rule{"Host", field::host, keep_on_connection},
    header_rule{"Content-Length", field::content_length, keep_on_connection},
    // Credentials: on certificate routes and in Kerberos mode, a client Authorization would be
    // a Basic/NTLM bypass or would collide with our Negotiate token.
    header_rule{"Authorization", field::authorization, credential},
    // Identity headers a backend might trust: never from the client (DESIGN.md principles).
    // The configured identity.header is added at run time.
    header_rule{"X-Client-UPN", field::unknown, identity},
    header_rule{"X-Forwarded-Client-Cert", field::unknown, identity},
    header_rule{"X-Forwarded-User", field::unknown, identity},
    header_rule{"X-Remote-User", field::unknown, identity},
    // We are the edge: forwarding information is ours (add_forwarding_headers).
    header_rule{"Forwarded", field::forwarded, drop_request},
    header_rule{"X-Forwarded-For", field::unknown, drop_request},
    header_rule{"X-Forwarded-Proto", field::unknown, drop_request},
    header_rule{"X-Forwarded-Host", field::unknown, drop_request},
    header_rule{"X-Forwarded-Port", field::unknown, drop_request},
    header_rule{"X-Real-IP", field::unknown, drop_request},
    // IIS URL Rewrite routes by these when present: a path past our route policy.
    header_rule{"X-Original-URL", field::unknown, drop_request},
    header_rule{"X-Rewrite-URL", field::unknown, drop_request},
};

constexpr std::size_t field_count = static_cast<std::size_t>(field::xref) + 1;

// The flags of the rows Beast knows by enum, indexed by the enum: one load per field.
constexpr std::array<std::uint8_t, field_count> make_known_flags() {
  std::array<std::uint8_t, field_count> t{};
  for (const header_rule& r : rules) {
    if (r.known != field::unknown) t[static_cast<std::size_t>(r.known)] = r.flags;
  }
  return t;
}
constexpr std::array<std::uint8_t, field_count> known_flags = make_known_flags();

constexpr char fold(char c) noexcept {
  if (c >= 'A' && c <= 'Z') return static_cast<char>(c - 'A' + 'a');
  if (c == '_') return '-';
  return c;
}

// Case-insensitive, '_' == '-': IIS and CGI expose "X-Client-UPN" and "X_Client_UPN" as the
// same server variable HTTP_X_CLIENT_UPN, so both spellings are the same header to a backend.
constexpr bool same_name(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (fold(a[i]) != fold(b[i])) return false;
  }
  return true;
}

template <class Entry>
std::uint8_t flags_of(const Entry& f) noexcept {
  if (f.name() != field::unknown) return known_flags[static_cast<std::size_t>(f.name())];
  // Not in Beast's list, or an '_' spelling of a name that is: a short linear scan, the
  // length check rejects nearly every row at once.
  for (const header_rule& r : rules) {
    if (!same_name(f.name_string(), r.name)) continue;
    // Beast knows the real spelling of this row, so this is an alias ("Content_Length",
    // "Transfer_Encoding"): never legitimate, and a backend might read it as the real one.
    if (r.known != field::unknown) return r.flags | drop_request | drop_response;
    return r.flags;
  }
  return 0;
}

constexpr bool is_ows(char c) noexcept { return c == ' ' || c == '\t'; }

// The connection options of a message (RFC 9110 7.6.1: Connection = #connection-option,
// case-insensitive tokens), read once per message: the pass then compares each field name
// with a few tokens instead of searching the fields for Connection again per field. More
// tokens than fit are read again from the fields (`overflow`), never dropped.
// Calls fn(token) for each connection option the Connection fields list (comma-separated,
// optional whitespace trimmed, empty elements skipped) until fn returns true; returns whether
// one did.
template <class Fields, class Fn>
bool any_connection_token(const Fields& f, Fn&& fn) noexcept {
  const auto range = f.equal_range(field::connection);
  for (auto it = range.first; it != range.second; ++it) {
    std::string_view rest = it->value();
    while (!rest.empty()) {
      const std::size_t comma = rest.find(',');
      std::string_view token = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      while (!token.empty() && is_ows(token.front())) token.remove_prefix(1);
      while (!token.empty() && is_ows(token.back())) token.remove_suffix(1);
      if (!token.empty() && fn(token)) return true;
    }
  }
  return false;
}

template <class Fields>
struct connection_options {
  static constexpr std::size_t max_tokens = 8;
  std::array<std::string_view, max_tokens> tokens{};
  std::size_t count = 0;
  bool overflow = false;

  explicit connection_options(const Fields& f) noexcept {
    overflow = any_connection_token(f, [this](std::string_view token) {
      if (count == max_tokens) return true;
      tokens[count++] = token;
      return false;
    });
  }

  // True when a Connection field lists `name` as a connection option.
  bool names(const Fields& f, std::string_view name) const noexcept {
    if (overflow) return named_by_connection(f, name);
    for (std::size_t i = 0; i < count; ++i) {
      if (tokens[i].size() == name.size() && boost::beast::iequals(tokens[i], name)) return true;
    }
    return false;
  }

  // The slow path for a Connection list longer than max_tokens: every token, from the fields.
  static bool named_by_connection(const Fields& f, std::string_view name) noexcept {
    return any_connection_token(
        f, [name](std::string_view token) { return boost::beast::iequals(token, name); });
  }
};

// The one pass. Connection fields stay until the end of the loop, because later fields are
// matched against their tokens, and are then removed together.
template <class Fields>
sanitize_report apply(Fields& f, std::uint8_t drop_mask, std::string_view extra_identity) {
  sanitize_report report;
  std::size_t connection_fields = 0;
  for (const auto& fld : f) connection_fields += fld.name() == field::connection ? 1 : 0;
  const bool has_connection = connection_fields > 0;
  std::optional<connection_options<Fields>> options;
  if (has_connection) options.emplace(f);
  for (auto it = f.begin(); it != f.end();) {
    if (it->name() == field::connection) {
      ++it;
      continue;
    }
    std::uint8_t flags = flags_of(*it);
    if (!extra_identity.empty() && same_name(it->name_string(), extra_identity)) {
      flags |= identity;
    }
    const bool drop = (flags & drop_mask) != 0 ||
                      (has_connection && (flags & keep_on_connection) == 0 &&
                       options->names(f, it->name_string()));
    if (!drop) {
      ++it;
      continue;
    }
    ++report.removed;
    if ((flags & identity) != 0) ++report.identity_removed;
    it = f.erase(it);
  }
  if (has_connection) {
    report.removed += static_cast<std::uint32_t>(connection_fields);
    f.erase(field::connection);
  }
  return report;
}

}  // namespace

sanitize_report sanitize_request(flat_fields& f, const sanitize_options& options) {
  const unsigned strip = options.strip_authorization ? static_cast<unsigned>(credential) : 0U;
  const auto mask = static_cast<std::uint8_t>(drop_request | identity | strip);
  return apply(f, mask, options.identity_header);
}

void add_forwarding_headers(flat_fields& f, const forwarding_info& info) {
  f.set("X-Forwarded-For", info.client_address);
  f.set("X-Forwarded-Proto", info.proto);
  if (info.host.empty()) {
    f.erase("X-Forwarded-Host");
  } else {
    f.set("X-Forwarded-Host", info.host);
  }
}

sanitize_report sanitize_response(flat_fields& f) { return apply(f, drop_response, {}); }

sanitize_report sanitize_response(flat_fields& f, const response_policy& policy) {
  const sanitize_report report = sanitize_response(f);
  if (!policy.hsts.empty()) f.set(bhttp::field::strict_transport_security, policy.hsts);
  return report;
}

}  // namespace cbagate::http
