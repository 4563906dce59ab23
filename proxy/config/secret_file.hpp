#pragma once
// Secrets on disk (issue 16): a file that holds a secret (a server private key, the keytab,
// session-ticket keys, a directory password) must not be accessible to group or others, the rule
// ssh applies to identity files. Every schema row that names a secret goes through this one check
// (cursor::secret_file() in config/detail/cursor.hpp), so startup and every reload refuse it.
#include <optional>
#include <string>

namespace cbagate::config {

/**
 * Checks the permissions of the secret file at `path` (an absolute path; symbolic links are
 * followed, so the mode is that of the file read).
 *
 * @return nothing when the file exists and its mode grants no permission to group or others
 *   (mode & 077 == 0); otherwise the reason, naming the file and its mode, e.g.
 *   "/etc/cbagate/server.key is accessible by group or others (mode 0644); a secret must be
 *   readable by its owner only: chmod 600 /etc/cbagate/server.key". A file that cannot be
 *   stat()ed gives the system's reason.
 *
 * Reads file metadata only, never the content. Never throws (std::bad_alloc aside).
 * Thread-safe.
 */
std::optional<std::string> secret_file_problem(const std::string& path);

}  // namespace cbagate::config
