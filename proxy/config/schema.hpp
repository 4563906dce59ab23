#pragma once
// The one schema table of the configuration (STYLE.md 5.7): every key of the TOML file is one
// row, and the rows drive validation (load.cpp), `--print-schema` and the docs. Keys are dotted
// paths; the children of an array of tables are written `route.prefix`, `tls.sni.certificate`.
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <string_view>

namespace cbagate::config {

namespace detail {
class cursor;
}

/** The TOML type a row accepts. */
enum class value_kind {
  boolean,
  integer,           // range row.min..row.max
  seconds,           // integer or float, > 0 and <= row.max
  seconds_or_zero,   // integer or float, 0..row.max; 0 = inherit a default
  duration,          // "100ms", "5s", "5m", "1h" (or a number of seconds), > 0 and <= row.max s
  duration_or_zero,  // the same, 0..row.max seconds
  string,            // when row.choices is non-empty: one of them
  string_array,      // when row.choices is non-empty: each one of them
  table,
  table_array,       // [[name]]
};

/** Whether a key must be present. */
enum class presence {
  optional,
  required,
  kerberos,          // required when identity.mode = "kerberos"
  directory,         // required when auth.mapping = "directory"
};

/** Stores one validated value into the snapshot being built (see detail/cursor.hpp). */
using apply_fn = void (*)(detail::cursor&);

/**
 * One key. `default_text` is the TOML literal of the default (empty when the key is required
 * or has no meaningful literal); it must equal the default of the field in snapshot.hpp (a unit
 * test checks this). `constraint` is free text for the docs, in addition to what `min`/`max`
 * and `choices` already say (those are checked by the loader; `constraint` is checked by `apply`).
 */
struct schema_row {
  std::string_view key{};
  value_kind kind = value_kind::string;
  presence need = presence::optional;
  std::string_view default_text{};
  std::string_view constraint{};
  std::string_view doc{};
  std::int64_t min = 0;                          // value_kind::integer
  std::int64_t max = 0;                          // value_kind::integer and the seconds kinds
  std::span<const std::string_view> choices{};   // string and string_array
  apply_fn apply = nullptr;                      // null for tables
};

/** Every row, parents before children, in the order of the reference file. Thread-safe. */
std::span<const schema_row> schema() noexcept;

/** The row of `key` ("server.threads", "route.prefix"), or nullptr. */
const schema_row* find_row(std::string_view key) noexcept;

/** The type of a row as the docs name it ("integer", "array of strings", ...). */
std::string_view type_name(const schema_row& row) noexcept;

/** The checked constraint in words: range, choices and `constraint` ("0..1024", "\"a\" | \"b\""). */
std::string constraint_text(const schema_row& row);

enum class schema_format {
  text,      // for a terminal: one block per key
  markdown,  // one table per section, for docs
};

/**
 * Writes every key with its type, default, constraint and doc string (`cbagate --print-schema`).
 * Never throws except for what `out` throws.
 */
void print_schema(std::ostream& out, schema_format format = schema_format::text);

}  // namespace cbagate::config
