#pragma once
// TOML file -> validated, immutable snapshot, or every problem found (STYLE.md 5.2, 5.7).
#include "config/snapshot.hpp"

#include <cstddef>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cbagate::config {

/** One problem in a configuration file. */
struct diagnostic {
  std::string file;         // as given to load_file, or the source_name of load_string
  std::size_t line = 0;     // 1-based; 0 = the file as a whole (e.g. it cannot be read)
  std::size_t column = 0;   // 1-based
  std::string key;          // "server.listen[1]", "route[0].prefix"; "" for TOML syntax errors
  std::string message;

  /** "file:line:col: key: message"; the key part is left out when `key` is empty, the
   *  line:col part when `line` is 0. */
  std::string to_string() const;
};

/** The outcome of a load: a snapshot when there is no error, else every error (sorted by
 *  position) and a null `value`. */
struct load_result {
  std::shared_ptr<const snapshot> value;
  std::vector<diagnostic> errors;

  bool ok() const noexcept { return value != nullptr && errors.empty(); }
};

/**
 * Reads and validates the configuration file at `path`. Relative file paths inside it are
 * resolved against the file's directory; snapshot::source is the file's absolute path.
 * Checks that every input file it names (certificates, keys, CA bundles, CRLs, keytab) exists
 * and is readable, without parsing it (that is tls/'s and delegation/'s job).
 * Never throws (std::bad_alloc aside). Thread-safe (no shared state).
 */
load_result load_file(const std::string& path);

/**
 * Same as load_file for TOML text in memory. `source_name` is used in diagnostics and as
 * snapshot::source; relative paths resolve against `base_dir` ("" = the current directory).
 */
load_result load_string(std::string_view toml_text, std::string source_name, std::string base_dir);

/**
 * `cbagate --check-config PATH`, like `nginx -t`. On success writes
 * "cbagate: configuration file PATH test is successful" to `out` and returns 0; otherwise
 * writes each diagnostic on its own line, then "cbagate: configuration file PATH test failed",
 * to `err` and returns 2.
 */
int check_config(const std::string& path, std::ostream& out, std::ostream& err);

}  // namespace cbagate::config
