#include "eas.hpp"

#include <wbxml/wbxml.h>
#include <wbxml/wbxml_conv.h>
#include <wbxml/wbxml_errors.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <memory>

// libwbxml2 exports wbxml_free (its allocator's free) but does not declare it in the installed
// headers; the converter's output must be released with it.
extern "C" void wbxml_free(void* memblock);

namespace cbagate::mock {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// MS-ASHTTP 2.2.1.1.1.1.2
constexpr std::array<std::pair<unsigned, std::string_view>, 19> command_codes{{
    {0, "Sync"},           {1, "SendMail"},        {2, "SmartForward"},
    {3, "SmartReply"},     {4, "GetAttachment"},   {9, "FolderSync"},
    {10, "FolderCreate"},  {11, "FolderDelete"},   {12, "FolderUpdate"},
    {13, "MoveItems"},     {14, "GetItemEstimate"}, {15, "MeetingResponse"},
    {16, "Search"},        {17, "Settings"},       {18, "Ping"},
    {19, "ItemOperations"}, {20, "Provision"},     {21, "ResolveRecipients"},
    {22, "ValidateCert"},
}};

// MS-ASHTTP 2.2.1.1.1.1.3
std::string param_name(unsigned tag) {
  switch (tag) {
    case 0: return "AttachmentName";
    case 1: return "CollectionId";
    case 2: return "CollectionName";
    case 3: return "ItemId";
    case 4: return "LongId";
    case 5: return "ParentId";
    case 6: return "Occurrence";
    case 7: return "Options";
    case 8: return "User";
    case 9: return "SaveInSent";
    default: return "tag" + std::to_string(tag);
  }
}

bool printable(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
  });
}

std::string hex(std::string_view s) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out += digits[u >> 4];
    out += digits[u & 0x0f];
  }
  return out;
}

void parse_plain(std::string_view query, eas_query& q) {
  q.form = "plain";
  while (!query.empty()) {
    auto amp = query.find('&');
    auto part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (part.empty()) continue;
    auto eq = part.find('=');
    auto key = percent_decode(part.substr(0, eq));
    auto value = eq == std::string_view::npos ? std::string{} : percent_decode(part.substr(eq + 1));
    if (iequals(key, "Cmd")) {
      q.cmd = value;
    } else if (iequals(key, "User")) {
      q.user = value;
    } else if (iequals(key, "DeviceId")) {
      q.device_id = value;
    } else if (iequals(key, "DeviceType")) {
      q.device_type = value;
    } else {
      q.params.emplace_back(std::move(key), std::move(value));
    }
  }
}

// MS-ASHTTP 2.2.1.1.1.1: version, command code, locale (LE16), device id, policy key (0 or 4
// bytes, LE32), device type, then tag/length/value parameters.
bool parse_binary(std::string_view b, eas_query& q) {
  std::size_t pos = 0;
  auto byte = [&](unsigned& out) {
    if (pos >= b.size()) return false;
    out = static_cast<unsigned char>(b[pos++]);
    return true;
  };
  auto bytes = [&](std::size_t n, std::string_view& out) {
    if (b.size() - pos < n) return false;
    out = b.substr(pos, n);
    pos += n;
    return true;
  };
  unsigned version = 0, code = 0, lo = 0, hi = 0, len = 0;
  std::string_view s;
  if (!byte(version) || !byte(code) || !byte(lo) || !byte(hi)) return false;
  if (version < 20 || version > 200) return false;
  if (!byte(len) || len == 0 || !bytes(len, s)) return false;
  q.device_id = printable(s) ? std::string(s) : hex(s);
  if (!byte(len) || (len != 0 && len != 4) || !bytes(len, s)) return false;
  if (len == 4) {
    std::uint32_t key = 0;
    for (int i = 3; i >= 0; --i) {
      key = (key << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
    }
    q.policy_key = key;
  }
  if (!byte(len) || !bytes(len, s)) return false;
  q.device_type = std::string(s);
  while (pos < b.size()) {
    unsigned tag = 0;
    if (!byte(tag) || !byte(len) || !bytes(len, s)) return false;
    if (tag == 8) {
      q.user = std::string(s);
    } else if (tag == 7 && len == 1) {
      q.params.emplace_back(param_name(tag), std::to_string(static_cast<unsigned char>(s[0])));
    } else {
      q.params.emplace_back(param_name(tag), std::string(s));
    }
  }
  q.form = "base64";
  q.version = std::to_string(version / 10) + "." + std::to_string(version % 10);
  q.locale = static_cast<std::uint16_t>(lo | (hi << 8));
  q.cmd = std::string(eas_command_name(code));
  if (q.cmd.empty()) q.cmd = "code" + std::to_string(code);
  return true;
}

}  // namespace

std::string_view eas_command_name(unsigned code) {
  for (const auto& [c, name] : command_codes) {
    if (c == code) return name;
  }
  return {};
}

bool eas_known_command(std::string_view cmd) {
  if (std::any_of(command_codes.begin(), command_codes.end(),
                  [&](const auto& e) { return e.second == cmd; })) {
    return true;
  }
  // Not in the base64 code table but listed in MS-ASProtocolCommands.
  for (std::string_view other : {"GetHierarchy", "CreateCollection", "DeleteCollection",
                                 "MoveCollection", "Find"}) {
    if (other == cmd) return true;
  }
  return false;
}

std::string percent_decode(std::string_view in) {
  auto hexval = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
      out += static_cast<char>(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(in.size() * 3 / 4);
  unsigned acc = 0;
  int bits = 0;
  for (char c : in) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xffU);
    }
  }
  return out;
}

eas_query parse_eas_query(std::string_view query) {
  eas_query q;
  bool plain = query.find('&') != std::string_view::npos;
  if (!plain) {
    auto eq = query.find('=');
    // '=' may only be base64 padding at the very end.
    plain = eq != std::string_view::npos && query.find_first_not_of('=', eq) != std::string_view::npos;
  }
  if (!plain && !query.empty()) {
    // Some clients percent-encode the blob ('+', '/', '=').
    auto blob = query.find('%') != std::string_view::npos ? percent_decode(query)
                                                            : std::string(query);
    if (auto bin = base64_decode(blob); bin && parse_binary(*bin, q)) return q;
    q = eas_query{};
  }
  parse_plain(query, q);
  return q;
}

wbxml_decoded decode_wbxml(std::string_view wbxml) {
  wbxml_decoded out;
  if (wbxml.empty()) {
    out.error = "empty document";
    return out;
  }
  WBXMLConvWBXML2XML* raw = nullptr;
  if (wbxml_conv_wbxml2xml_create(&raw) != WBXML_OK || raw == nullptr) {
    out.error = "wbxml_conv_wbxml2xml_create failed";
    return out;
  }
  std::unique_ptr<WBXMLConvWBXML2XML, decltype(&wbxml_conv_wbxml2xml_destroy)> conv(
      raw, &wbxml_conv_wbxml2xml_destroy);
  wbxml_conv_wbxml2xml_set_language(conv.get(), WBXML_LANG_ACTIVESYNC);
  wbxml_conv_wbxml2xml_set_gen_type(conv.get(), WBXML_GEN_XML_COMPACT);
  // The converter takes a non-const pointer; give it a private copy.
  std::basic_string<WB_UTINY> copy(wbxml.begin(), wbxml.end());
  WB_UTINY* xml = nullptr;
  WB_ULONG xml_len = 0;
  WBXMLError rc = wbxml_conv_wbxml2xml_run(conv.get(), copy.data(),
                                           static_cast<WB_ULONG>(copy.size()), &xml, &xml_len);
  std::unique_ptr<WB_UTINY, decltype(&wbxml_free)> owned(xml, &wbxml_free);
  if (rc != WBXML_OK) {
    const WB_UTINY* msg = wbxml_errors_string(rc);
    out.error = msg != nullptr ? std::string(reinterpret_cast<const char*>(msg))
                               : "wbxml error " + std::to_string(static_cast<int>(rc));
    return out;
  }
  if (xml == nullptr) {
    out.error = "no output";
    return out;
  }
  out.xml.assign(reinterpret_cast<const char*>(xml), xml_len);
  // Root: the first tag that is not a declaration, a DOCTYPE or a comment.
  std::size_t pos = 0;
  while ((pos = out.xml.find('<', pos)) != std::string::npos) {
    if (pos + 1 < out.xml.size() && out.xml[pos + 1] != '?' && out.xml[pos + 1] != '!') {
      auto end = out.xml.find_first_of(" />", pos + 1);
      out.root = out.xml.substr(pos + 1, end == std::string::npos ? end : end - pos - 1);
      break;
    }
    ++pos;
  }
  return out;
}

namespace {

// Position just after the name of the next tag `<name` (followed by '>', ' ' or '/').
std::size_t find_open_tag(std::string_view xml, std::string_view name, std::size_t from) {
  while (true) {
    auto pos = xml.find('<', from);
    if (pos == std::string_view::npos) return pos;
    auto after = pos + 1 + name.size();
    if (xml.substr(pos + 1, name.size()) == name && after < xml.size() &&
        (xml[after] == '>' || xml[after] == ' ' || xml[after] == '/')) {
      return after;
    }
    from = pos + 1;
  }
}

}  // namespace

std::optional<std::string> xml_element_text(std::string_view xml, std::string_view name) {
  auto pos = find_open_tag(xml, name, 0);
  if (pos == std::string_view::npos) return std::nullopt;
  auto gt = xml.find('>', pos);
  if (gt == std::string_view::npos) return std::nullopt;
  if (xml[gt - 1] == '/') return std::string{};
  auto lt = xml.find('<', gt + 1);
  if (lt == std::string_view::npos) return std::nullopt;
  return std::string(xml.substr(gt + 1, lt - gt - 1));
}

std::size_t xml_element_count(std::string_view xml, std::string_view name) {
  std::size_t n = 0;
  for (auto pos = find_open_tag(xml, name, 0); pos != std::string_view::npos;
       pos = find_open_tag(xml, name, pos)) {
    ++n;
  }
  return n;
}

wbxml_writer::wbxml_writer() : out_{'\x03', '\x01', '\x6a', '\x00'} {}

wbxml_writer& wbxml_writer::open(unsigned page, unsigned token) {
  if (page != page_) {
    out_ += '\x00';
    out_ += static_cast<char>(page);
    page_ = page;
  }
  out_ += static_cast<char>(token | 0x40U);
  return *this;
}

wbxml_writer& wbxml_writer::text(std::string_view s) {
  out_ += '\x03';
  out_ += s;
  out_ += '\x00';
  return *this;
}

wbxml_writer& wbxml_writer::close() {
  out_ += '\x01';
  return *this;
}

wbxml_writer& wbxml_writer::leaf(unsigned page, unsigned token, std::string_view s) {
  return open(page, token).text(s).close();
}

std::string ping_response(unsigned status, std::optional<unsigned> heartbeat,
                          std::optional<unsigned> max_folders) {
  constexpr unsigned ping = 0x0d;  // MS-ASWBXML code page 13
  wbxml_writer w;
  w.open(ping, 0x05).leaf(ping, 0x07, std::to_string(status));
  if (heartbeat) w.leaf(ping, 0x08, std::to_string(*heartbeat));
  if (max_folders) w.leaf(ping, 0x0d, std::to_string(*max_folders));
  w.close();
  return w.bytes();
}

std::string sync_response(std::string_view sync_key, std::string_view collection_id,
                          unsigned status) {
  constexpr unsigned airsync = 0;
  wbxml_writer w;
  w.open(airsync, 0x05).open(airsync, 0x1c).open(airsync, 0x0f);
  w.leaf(airsync, 0x0b, sync_key).leaf(airsync, 0x12, collection_id);
  w.leaf(airsync, 0x0e, std::to_string(status));
  w.close().close().close();
  return w.bytes();
}

}  // namespace cbagate::mock
