#include "directory/mapping.hpp"

#include <algorithm>
#include <charconv>

namespace cbagate::directory {
namespace {

constexpr char hex_digits[] = "0123456789ABCDEF";

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Hex text -> bytes; nothing for an odd length, a non-hex character or an empty value.
std::optional<std::vector<std::uint8_t>> unhex(std::string_view s) {
  if (s.empty() || s.size() % 2 != 0 || s.size() > 256) return std::nullopt;
  std::vector<std::uint8_t> out;
  out.reserve(s.size() / 2);
  for (std::size_t i = 0; i < s.size(); i += 2) {
    const int hi = hex_value(s[i]);
    const int lo = hex_value(s[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
  }
  return out;
}

std::vector<std::uint8_t> strip_leading_zeros(std::vector<std::uint8_t> v) {
  std::size_t off = 0;
  while (v.size() - off > 1 && v[off] == 0) ++off;
  v.erase(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(off));
  return v;
}

// DN comparison form: ASCII lower case, spaces next to ',' '=' '+' dropped (Windows' exact
// rule is undocumented; see docs/directory.md).
std::string dn_key(std::string_view dn) {
  std::string out;
  out.reserve(dn.size());
  for (std::size_t i = 0; i < dn.size(); ++i) {
    const char c = dn[i];
    if (c == ' ') {
      const char prev = out.empty() ? ',' : out.back();
      std::size_t j = i;
      while (j < dn.size() && dn[j] == ' ') ++j;
      const char next = j < dn.size() ? dn[j] : ',';
      const auto sep = [](char x) { return x == ',' || x == '=' || x == '+'; };
      if (sep(prev) || sep(next)) {
        i = j - 1;
        continue;
      }
    }
    out += lower(c);
  }
  return out;
}

bool hex_equal(std::string_view a, std::string_view b) {
  const auto x = unhex(a);
  const auto y = unhex(b);
  return x && y && *x == *y;
}

// <SR>: reversed byte order; compared as unsigned integers.
bool serial_equal(std::string_view sr, std::string_view cert_serial_hex) {
  if (cert_serial_hex.empty() || cert_serial_hex.front() == '-') return false;  // negative
  std::string padded(cert_serial_hex);
  if (padded.size() % 2 != 0) padded.insert(padded.begin(), '0');
  auto reversed = unhex(sr);
  auto cert = unhex(padded);
  if (!reversed || !cert) return false;
  std::reverse(reversed->begin(), reversed->end());
  return strip_leading_zeros(std::move(*reversed)) == strip_leading_zeros(std::move(*cert));
}

std::string reversed_serial(std::string_view serial_hex) {
  std::string padded(serial_hex);
  if (padded.size() % 2 != 0) padded.insert(padded.begin(), '0');
  std::string out;
  for (std::size_t i = padded.size(); i >= 2; i -= 2) {
    out += static_cast<char>(padded[i - 2] >= 'a' ? padded[i - 2] - 32 : padded[i - 2]);
    out += static_cast<char>(padded[i - 1] >= 'a' ? padded[i - 1] - 32 : padded[i - 1]);
  }
  return out;
}

}  // namespace

std::string escape_filter_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char ch : value) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7F || ch == '*' || ch == '(' || ch == ')' || ch == '\\') {
      out += '\\';
      out += hex_digits[c >> 4];
      out += hex_digits[c & 0x0F];
    } else {
      out += ch;
    }
  }
  return out;
}

std::string upn_filter(std::string_view upn) {
  return "(&(sAMAccountType=805306368)(userPrincipalName=" + escape_filter_value(upn) + "))";
}

std::string strong_filter(std::span<const std::string> strong_strings) {
  std::string out = "(&(sAMAccountType=805306368)(|";
  for (const std::string& s : strong_strings)
    out += "(altSecurityIdentities=" + escape_filter_value(s) + ")";
  return out + "))";
}

std::vector<std::string> strong_strings(const certificate_view& cert) {
  std::vector<std::string> out;
  if (!cert.issuer_dn.empty() && !cert.serial.empty() && cert.serial.front() != '-')
    out.push_back("X509:<I>" + cert.issuer_dn + "<SR>" + reversed_serial(cert.serial));
  if (!cert.ski.empty()) out.push_back("X509:<SKI>" + cert.ski);
  if (!cert.sha1.empty()) out.push_back("X509:<SHA1-PUKEY>" + cert.sha1);
  return out;
}

std::vector<std::string> weak_strings(const certificate_view& cert) {
  std::vector<std::string> out;
  if (!cert.issuer_dn.empty() && !cert.subject_dn.empty())
    out.push_back("X509:<I>" + cert.issuer_dn + "<S>" + cert.subject_dn);
  if (!cert.subject_dn.empty()) out.push_back("X509:<S>" + cert.subject_dn);
  return out;
}

alt_security_identity parse_alt_security_identity(std::string_view v) {
  alt_security_identity a;
  if (!v.starts_with("X509:")) return a;
  std::size_t i = v.find('<', 5);
  if (i == std::string_view::npos) return a;
  bool any = false;
  while (i < v.size()) {
    const std::size_t close = v.find('>', i + 1);
    if (close == std::string_view::npos) return a;
    const std::string_view tag = v.substr(i + 1, close - i - 1);
    std::size_t next = v.find('<', close + 1);
    if (next == std::string_view::npos) next = v.size();
    const std::string_view value = v.substr(close + 1, next - close - 1);
    if (value.empty()) return a;
    std::optional<std::string>* slot = nullptr;
    if (tag == "I") slot = &a.issuer;
    else if (tag == "S") slot = &a.subject;
    else if (tag == "SR") slot = &a.serial;
    else if (tag == "SKI") slot = &a.ski;
    else if (tag == "SHA1-PUKEY") slot = &a.sha1;
    else if (tag == "RFC822") slot = &a.rfc822;
    else if (tag == "SID") slot = &a.sid;
    if (slot == nullptr || slot->has_value()) return alt_security_identity{};
    *slot = std::string(value);
    any = true;
    i = next;
  }
  a.valid = any;
  // [MS-PKCA] 3.1.5.2.1.5 / KB5014754: strong = Issuer+SerialNumber, SKI, SHA1-PUKEY. Issuer+SID
  // is listed as strong too, but its semantics are not documented well enough to verify: it
  // is not accepted here (fail closed; the SID extension itself is).
  a.strong = any && (a.ski || a.sha1 || (a.issuer && a.serial));
  return a;
}

bool strong_match(const alt_security_identity& m, const certificate_view& cert) {
  if (!m.valid || !m.strong) return false;
  if (m.issuer && dn_key(*m.issuer) != dn_key(cert.issuer_dn)) return false;
  if (m.subject && dn_key(*m.subject) != dn_key(cert.subject_dn)) return false;
  if (m.serial && !serial_equal(*m.serial, cert.serial)) return false;
  if (m.ski && (cert.ski.empty() || !hex_equal(*m.ski, cert.ski))) return false;
  if (m.sha1 && (cert.sha1.empty() || !hex_equal(*m.sha1, cert.sha1))) return false;
  // Tags that a strong form may carry besides its own but that we cannot check: no match.
  if (m.rfc822 || m.sid) return false;
  return true;
}

std::optional<std::vector<std::uint8_t>> parse_sid(std::string_view text) {
  if (!text.starts_with("S-")) return std::nullopt;
  std::vector<std::uint64_t> parts;
  std::size_t i = 2;
  while (i <= text.size()) {
    std::size_t end = text.find('-', i);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view part = text.substr(i, end - i);
    if (part.empty() || part.size() > 20 || (part.size() > 1 && part.front() == '0'))
      return std::nullopt;
    std::uint64_t v = 0;
    const auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || p != part.data() + part.size()) return std::nullopt;
    parts.push_back(v);
    if (end == text.size()) break;
    i = end + 1;
  }
  // revision, authority, 1..15 sub-authorities
  if (parts.size() < 3 || parts.size() > 17 || parts[0] != 1 || parts[1] >= (1ULL << 48))
    return std::nullopt;
  std::vector<std::uint8_t> out;
  out.push_back(1);
  out.push_back(static_cast<std::uint8_t>(parts.size() - 2));
  for (int shift = 40; shift >= 0; shift -= 8)
    out.push_back(static_cast<std::uint8_t>((parts[1] >> shift) & 0xFF));
  for (std::size_t k = 2; k < parts.size(); ++k) {
    if (parts[k] > 0xFFFFFFFFULL) return std::nullopt;
    for (int shift = 0; shift < 32; shift += 8)  // little-endian
      out.push_back(static_cast<std::uint8_t>((parts[k] >> shift) & 0xFF));
  }
  return out;
}

std::string sid_to_string(std::span<const std::uint8_t> sid) {
  if (sid.size() < 8 || sid[0] != 1) return {};
  const std::size_t count = sid[1];
  if (count < 1 || count > 15 || sid.size() != 8 + 4 * count) return {};
  std::uint64_t authority = 0;
  for (std::size_t k = 2; k < 8; ++k) authority = (authority << 8) | sid[k];
  std::string out = "S-1-" + std::to_string(authority);
  for (std::size_t n = 0; n < count; ++n) {
    const std::size_t o = 8 + 4 * n;
    const std::uint32_t v = static_cast<std::uint32_t>(sid[o]) |
                            (static_cast<std::uint32_t>(sid[o + 1]) << 8) |
                            (static_cast<std::uint32_t>(sid[o + 2]) << 16) |
                            (static_cast<std::uint32_t>(sid[o + 3]) << 24);
    out += "-" + std::to_string(v);
  }
  return out;
}

}  // namespace cbagate::directory
