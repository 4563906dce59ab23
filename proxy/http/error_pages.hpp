#pragma once
// Custom error pages per status (issue 13, [errors]): an administrator's own page (company
// look, helpdesk phone number) instead of the built-in one-line text, for the answers cbagate
// gives itself (403 refusals, 404, 502/503/504, ...). Backend responses are never replaced.
//
// A page is a file read at start-up and at every reload (and by --check-config), at most
// 64 KiB. Placeholders are replaced at each answer:
//   {{status}}      "403.16" (the IIS substatus when there is one) or "404"
//   {{code}}        cbagate's stable code: "no_upn", "revocation_unknown", "no_route", ...
//   {{text}}        the built-in page's sentence ("client certificate carries no UPN")
//   {{request_id}}  "<conn_id>-<req_id>", the ids of the access-log line; required in every
//                   page, so the helpdesk can always find the log line from a screenshot.
// Files ending in .html or .htm are sent as text/html (the values HTML-escaped), others as
// text/plain; both UTF-8.
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "config/snapshot.hpp"

namespace cbagate::http {

struct local_reply_info;

class error_pages {
 public:
  /** The largest page file accepted. */
  static constexpr std::size_t max_bytes = 64 * 1024;

  /**
   * Reads every file of cfg.errors. Null without error when none is configured. On failure:
   * null, and `error` names the key, the file and the cause ("errors.403: /etc/x.html: has no
   * {{request_id}} placeholder ..."). Blocking file I/O: start-up, reload, --check-config.
   */
  static std::shared_ptr<const error_pages> load(const config::snapshot& cfg, std::string& error);

  /** Whether a page is configured for `status`. */
  bool has(unsigned status) const noexcept { return pages_.count(status) != 0; }

  /**
   * The body for `info` with its placeholders replaced, and its Content-Type. Precondition:
   * has(info.status). Thread-safe (const).
   */
  std::string render(const local_reply_info& info, std::string_view request_id,
                     std::string_view& content_type) const;

 private:
  struct page {
    std::string text;
    bool html = false;
  };
  std::map<unsigned, page> pages_;
};

}  // namespace cbagate::http
