#pragma once
// OpenSSL's error queue as one line for messages that name a file or an option.
#include <string>
#include <system_error>

#include <openssl/err.h>

namespace cbagate::ossl {

/**
 * Drains this thread's OpenSSL error queue into one line ("no start line; bad base64 decode"),
 * each reason once. errno-based entries (fopen() and co.; OpenSSL 3 keeps no string for them)
 * read as the system's message. "unknown reason" when the queue was empty.
 */
inline std::string error_reason() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    std::string one;
    if (ERR_SYSTEM_ERROR(e)) {
      one = std::system_category().message(static_cast<int>(ERR_GET_REASON(e)));
    } else if (const char* reason = ERR_reason_error_string(e)) {
      one = reason;
    } else {
      one = "OpenSSL error " + std::to_string(e);
    }
    if (out.find(one) != std::string::npos) continue;
    if (!out.empty()) out += "; ";
    out += one;
  }
  return out.empty() ? "unknown reason" : out;
}

}  // namespace cbagate::ossl
