#include "tls/ticket_identity.hpp"

#include <cstdint>
#include <cstring>
#include <string_view>
#include <utility>

namespace cbagate::tls::detail {
namespace {

// --- ticket app data: the verified identity, carried inside the server-encrypted ticket -------
// Layout (version 2): u8 version, u8 presented, u8 reason, i64 not_before, i64 not_after, then
// upn, subject, issuer, serial, sha256, detail, then (version 3) the AD facts issuer_dn,
// subject_dn, ski, sha1, sid, sid_error, as u16 length + bytes; then the chain refs that
// revocation checking needs (issue 5): u8 count, each 20-byte name hash, 20-byte key hash,
// serial (u16 length + bytes), u8 CDP URL count + URLs, u8 OCSP URL count + URLs (u16 length +
// bytes each). Only this server can decrypt and authenticate a ticket, so the client cannot
// alter it. A chain beyond the bounds below is written as not resumable (version 0): a resumed
// session must be checked against exactly the refs of its full handshake, never fewer.
constexpr std::uint8_t ticket_format = 3;  // 3: the AD facts of issue 12 after `detail`
constexpr std::uint8_t ticket_not_resumable = 0;
constexpr std::size_t max_field = 4096;
constexpr std::size_t max_ticket_refs = 10;
constexpr std::size_t max_ticket_urls = 4;       // per kind and certificate
constexpr std::size_t max_ticket_url = 1024;
constexpr std::size_t max_ticket_serial = 64;     // RFC 5280 allows 20 octets

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (i * 8)) & 0xff));
}

void put_str(std::string& out, std::string_view s) {
  s = s.substr(0, max_field);
  out.push_back(static_cast<char>((s.size() >> 8) & 0xff));
  out.push_back(static_cast<char>(s.size() & 0xff));
  out.append(s);
}

bool chain_fits_ticket(const identity::chain_refs& chain) {
  if (chain.size() > max_ticket_refs) return false;
  for (const identity::cert_ref& ref : chain) {
    if (ref.serial.empty() || ref.serial.size() > max_ticket_serial) return false;
    for (const auto* urls : {&ref.cdp_urls, &ref.ocsp_urls}) {
      if (urls->size() > max_ticket_urls) return false;
      for (const std::string& url : *urls)
        if (url.empty() || url.size() > max_ticket_url) return false;
    }
  }
  return true;
}

}  // namespace

std::string encode_ticket_identity(const identity::client_identity& id) {
  std::string out;
  out.reserve(64 + id.subject.size() + id.issuer.size() + id.upn.size());
  out.push_back(static_cast<char>(ticket_format));
  out.push_back(id.presented ? 1 : 0);
  out.push_back(static_cast<char>(id.reason));
  put_u64(out, static_cast<std::uint64_t>(id.not_before));
  put_u64(out, static_cast<std::uint64_t>(id.not_after));
  for (const std::string* s : {&id.upn, &id.subject, &id.issuer, &id.serial, &id.sha256, &id.detail,
                               &id.ad.issuer_dn, &id.ad.subject_dn, &id.ad.ski, &id.ad.sha1,
                               &id.ad.sid, &id.ad.sid_error}) {
    // A field cut at max_field would resume as another value: not resumable instead.
    if (s->size() > max_field) return std::string(1, static_cast<char>(ticket_not_resumable));
    put_str(out, *s);
  }
  if (!chain_fits_ticket(id.chain)) return std::string(1, static_cast<char>(ticket_not_resumable));
  out.push_back(static_cast<char>(id.chain.size()));
  for (const identity::cert_ref& ref : id.chain) {
    out.append(reinterpret_cast<const char*>(ref.issuer.name_hash.data()), ref.issuer.name_hash.size());
    out.append(reinterpret_cast<const char*>(ref.issuer.key_hash.data()), ref.issuer.key_hash.size());
    put_str(out, ref.serial);
    for (const auto* urls : {&ref.cdp_urls, &ref.ocsp_urls}) {
      out.push_back(static_cast<char>(urls->size()));
      for (const std::string& url : *urls) put_str(out, url);
    }
  }
  return out;
}

namespace {

struct reader {
  const unsigned char* p;
  std::size_t left;
  bool take(std::size_t n, const unsigned char*& at) {
    if (left < n) return false;
    at = p;
    p += n;
    left -= n;
    return true;
  }
  bool u8(std::uint8_t& v) {
    const unsigned char* at = nullptr;
    if (!take(1, at)) return false;
    v = at[0];
    return true;
  }
  bool u64(std::uint64_t& v) {
    const unsigned char* at = nullptr;
    if (!take(8, at)) return false;
    v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | at[i];
    return true;
  }
  bool str(std::string& s) {
    const unsigned char* at = nullptr;
    if (!take(2, at)) return false;
    std::size_t n = (std::size_t{at[0]} << 8) | at[1];
    if (n > max_field || !take(n, at)) return false;  // encode never writes more
    s.assign(reinterpret_cast<const char*>(at), n);
    return true;
  }
};

}  // namespace

bool decode_ticket_identity(const void* data, std::size_t len, identity::client_identity& id) {
  reader r{static_cast<const unsigned char*>(data), len};
  std::uint8_t version = 0, presented = 0, reason = 0;
  std::uint64_t nb = 0, na = 0;
  if (!r.u8(version) || version != ticket_format) return false;
  if (!r.u8(presented) || !r.u8(reason) || !r.u64(nb) || !r.u64(na)) return false;
  if (presented > 1) return false;  // encode writes 0 or 1: nothing else is a ticket of ours
  if (reason > static_cast<std::uint8_t>(identity::last_rejection)) return false;
  identity::client_identity out;
  out.presented = presented != 0;
  out.reason = static_cast<identity::rejection>(reason);
  out.not_before = static_cast<std::int64_t>(nb);
  out.not_after = static_cast<std::int64_t>(na);
  for (std::string* s : {&out.upn, &out.subject, &out.issuer, &out.serial, &out.sha256, &out.detail,
                         &out.ad.issuer_dn, &out.ad.subject_dn, &out.ad.ski, &out.ad.sha1,
                         &out.ad.sid, &out.ad.sid_error})
    if (!r.str(*s)) return false;
  std::uint8_t refs = 0;
  if (!r.u8(refs) || refs > max_ticket_refs) return false;
  // Only an accepted identity carries refs (a leaf that is itself an anchor has none).
  if (out.reason != identity::rejection::none && refs != 0) return false;
  out.chain.resize(refs);
  for (identity::cert_ref& ref : out.chain) {
    const unsigned char* at = nullptr;
    if (!r.take(ref.issuer.name_hash.size(), at)) return false;
    std::memcpy(ref.issuer.name_hash.data(), at, ref.issuer.name_hash.size());
    if (!r.take(ref.issuer.key_hash.size(), at)) return false;
    std::memcpy(ref.issuer.key_hash.data(), at, ref.issuer.key_hash.size());
    if (!r.str(ref.serial) || ref.serial.empty() || ref.serial.size() > max_ticket_serial)
      return false;
    for (auto* urls : {&ref.cdp_urls, &ref.ocsp_urls}) {
      std::uint8_t n = 0;
      if (!r.u8(n) || n > max_ticket_urls) return false;
      urls->resize(n);
      for (std::string& url : *urls)
        if (!r.str(url) || url.empty() || url.size() > max_ticket_url) return false;
    }
  }
  if (r.left != 0) return false;
  id = std::move(out);
  return true;
}

}  // namespace cbagate::tls::detail
