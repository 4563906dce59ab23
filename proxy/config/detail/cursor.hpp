#pragma once
// What a schema row's `apply` function sees: one value that already has the row's TOML type and
// passed the row's generic checks (range, choices, element count, no control characters), the
// snapshot being built, and helpers that check a format, report an error at the value's source
// position and return the typed result. Private to config/: no toml++ types here.
#include "config/load.hpp"
#include "config/schema.hpp"
#include "config/snapshot.hpp"

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cbagate::config::detail {

struct position {
  std::size_t line = 0;    // 1-based, 0 = unknown
  std::size_t column = 0;
};

/** One string of an array, with where it was written. */
struct element {
  std::string text;
  position where;
};

/** A value converted from the TOML tree; only the member of the row's kind is meaningful. */
struct value {
  bool boolean = false;
  std::int64_t integer = 0;
  double seconds = 0;
  std::string text;
  std::vector<element> items;   // string_array
  std::size_t count = 0;        // table_array: number of tables
};

/** The state of one load: the snapshot under construction and the errors so far. */
struct context {
  std::string file;                 // for diagnostics
  std::string base_dir;             // absolute; relative paths resolve against it
  snapshot snap;
  std::vector<diagnostic> errors;
  std::map<std::string, position, std::less<>> seen;  // display key -> where its value is

  void error(position where, std::string key, std::string message);
};

class cursor {
 public:
  cursor(context& ctx, const schema_row& row, std::string key, std::size_t index, position where,
         const value& v) noexcept
      : ctx_(ctx), row_(row), key_(std::move(key)), index_(index), where_(where), value_(v) {}

  snapshot& snap() noexcept { return ctx_.snap; }
  const schema_row& row() const noexcept { return row_; }
  /** The key as reported: "route[2].prefix". */
  const std::string& key() const noexcept { return key_; }
  /** The element of the enclosing array of tables ([[route]], [[tls.sni]]); 0 elsewhere. */
  std::size_t index() const noexcept { return index_; }
  position where() const noexcept { return where_; }
  /** Where the value of `key` ("route[0].prefix") was written, if it was. */
  position where_of(std::string_view key) const noexcept;

  bool boolean() const noexcept { return value_.boolean; }
  seconds_f seconds() const noexcept { return seconds_f{value_.seconds}; }
  const std::string& string() const noexcept { return value_.text; }
  std::size_t count() const noexcept { return value_.count; }
  const std::vector<element>& items() const noexcept { return value_.items; }

  /** The integer as T; the loader already checked row().min..row().max, this checks T's range. */
  template <class T>
  T integer() {
    if (value_.integer < 0 ||
        static_cast<std::uint64_t>(value_.integer) > std::numeric_limits<T>::max()) {
      error("out of range for this setting");
      return T{};
    }
    return static_cast<T>(value_.integer);
  }

  /** Index of the string in row().choices (the loader checked membership). */
  std::size_t choice() const noexcept;
  /** Same for each element of a string array. */
  std::vector<std::size_t> choice_list() const;

  /** An input file: the absolute path, which must name a readable regular file when `check`
   *  is true; "" stays "" (an error when `check` is true and the row is not optional). */
  std::string input_file(bool check = true);
  std::vector<std::string> input_files();
  /** An input file that holds a secret (private key, keytab, ticket keys, password): as
   *  input_file(check), and when checked, refused if group or others may access it
   *  (config::secret_file_problem). Every row that names a secret uses this. */
  std::string secret_file(bool check = true);
  /** An output file: each of `specials` ("-", "") is returned as is, else the absolute path,
   *  whose directory must exist. */
  std::string output_file(std::initializer_list<std::string_view> specials);

  std::vector<endpoint> endpoints();                 // server.listen
  std::string endpoint_or_empty();                   // server.admin_listen
  std::vector<upstream_server> upstream_servers();   // upstream.servers
  std::string route_prefix();                        // route.prefix (uniqueness: the caller)
  std::string header_name();                         // identity.header
  std::string host_name_or_empty();                  // upstream.server_name
  std::vector<std::string> sni_names();              // tls.sni.server_names
  std::string no_spaces();                           // kerberos.principal, target_spn

  /** Reports `message` at the value (or, for `at`, at one element of an array). */
  void error(std::string message);
  void error(const element& at, std::size_t i, std::string message);

 private:
  std::string resolve(const std::string& text) const;
  std::string check_input_file(const std::string& text, position where, const std::string& key);

  context& ctx_;
  const schema_row& row_;
  std::string key_;
  std::size_t index_;
  position where_;
  const value& value_;
};

}  // namespace cbagate::config::detail
