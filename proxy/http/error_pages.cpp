#include "http/error_pages.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>

#include "http/local_reply.hpp"

namespace cbagate::http {
namespace {

constexpr std::string_view request_id_mark = "{{request_id}}";

bool ends_with_icase(std::string_view s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i) {
    char a = s[s.size() - suffix.size() + i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (a != suffix[i]) return false;
  }
  return true;
}

void append_escaped(std::string& out, std::string_view v, bool html) {
  if (!html) {
    out += v;
    return;
  }
  for (const char ch : v) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += ch;
    }
  }
}

}  // namespace

std::shared_ptr<const error_pages> error_pages::load(const config::snapshot& cfg,
                                                     std::string& error) {
  if (cfg.errors.pages.empty()) return nullptr;
  auto out = std::make_shared<error_pages>();
  for (const auto& [status, path] : cfg.errors.pages) {
    const std::string key = "errors." + std::to_string(status) + ": " + path + ": ";
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      error = key + std::strerror(errno);
      return nullptr;
    }
    std::string text;
    char buf[4096];
    while (in.read(buf, sizeof buf) || in.gcount() > 0) {
      text.append(buf, static_cast<std::size_t>(in.gcount()));
      if (text.size() > max_bytes) {
        error = key + "larger than " + std::to_string(max_bytes / 1024) + " KiB";
        return nullptr;
      }
    }
    if (text.empty()) {
      error = key + "empty";
      return nullptr;
    }
    if (text.find(request_id_mark) == std::string::npos) {
      error = key + "has no {{request_id}} placeholder: every error page must show the request "
                    "id, the helpdesk's way to the access-log line";
      return nullptr;
    }
    page p;
    p.html = ends_with_icase(path, ".html") || ends_with_icase(path, ".htm");
    p.text = std::move(text);
    out->pages_.emplace(status, std::move(p));
  }
  return out;
}

std::string error_pages::render(const local_reply_info& info, std::string_view request_id,
                                std::string_view& content_type) const {
  const page& p = pages_.at(info.status);
  content_type = p.html ? "text/html; charset=utf-8" : "text/plain; charset=utf-8";
  std::string status = std::to_string(info.status);
  if (info.substatus != 0) status += "." + std::to_string(info.substatus);
  std::string out;
  out.reserve(p.text.size() + 64);
  std::string_view rest = p.text;
  while (!rest.empty()) {
    const std::size_t open = rest.find("{{");
    if (open == std::string_view::npos) break;
    out += rest.substr(0, open);
    rest.remove_prefix(open);
    std::string_view value;
    std::size_t len = 0;
    for (const auto& [mark, v] :
         {std::pair<std::string_view, std::string_view>{"{{status}}", status},
          {"{{code}}", info.code},
          {"{{text}}", info.text},
          {request_id_mark, request_id}}) {
      if (rest.starts_with(mark)) {
        value = v;
        len = mark.size();
        break;
      }
    }
    if (len == 0) {  // not a placeholder: the braces as written
      out += "{{";
      rest.remove_prefix(2);
      continue;
    }
    append_escaped(out, value, p.html);
    rest.remove_prefix(len);
  }
  out += rest;
  return out;
}

}  // namespace cbagate::http
