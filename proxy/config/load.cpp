#include "config/load.hpp"

#include "config/detail/cursor.hpp"
#include "config/schema.hpp"
#include "config/validate.hpp"

#include <toml++/toml.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <optional>
#include <ostream>
#include <sstream>
#include <system_error>

namespace cbagate::config {
namespace {

namespace fs = std::filesystem;
using detail::context;
using detail::cursor;
using detail::position;
using detail::value;

constexpr std::size_t max_file_bytes = 16 << 20;

position position_of(const toml::source_region& r) noexcept {
  return position{r.begin.line, r.begin.column};
}

// `fallback` stands in for nodes without a source (implicitly created tables).
position position_of(const toml::node& n, position fallback) noexcept {
  const position p = position_of(n.source());
  return p.line == 0 ? fallback : p;
}

std::string_view parent_of(std::string_view key) noexcept {
  const std::size_t dot = key.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : key.substr(0, dot);
}

std::string_view leaf_of(std::string_view key) noexcept {
  const std::size_t dot = key.rfind('.');
  return dot == std::string_view::npos ? key : key.substr(dot + 1);
}

std::string_view describe(const toml::node& n) noexcept {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string expected_type(const schema_row& row) {
  switch (row.kind) {
    case value_kind::boolean:
      return "a boolean (true or false)";
    case value_kind::integer:
      return "an integer";
    case value_kind::seconds:
    case value_kind::seconds_or_zero:
      return "a number of seconds (integer or float)";
    case value_kind::duration:
    case value_kind::duration_or_zero:
      return "a duration (\"100ms\", \"5s\", \"5m\", \"1h\") or a number of seconds";
    case value_kind::string:
      return "a string";
    case value_kind::string_array:
      return "an array of strings";
    case value_kind::table:
      return "a table ([" + std::string(row.key) + "])";
    case value_kind::table_array:
      return "an array of tables ([[" + std::string(row.key) + "]])";
  }
  return "?";
}

std::string quoted_choices(const schema_row& row) {
  std::string out;
  for (std::size_t i = 0; i < row.choices.size(); ++i) {
    out += (i ? ", \"" : "\"") + std::string(row.choices[i]) + "\"";
  }
  return out;
}

bool has_control_char(std::string_view s) noexcept {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// "<number><unit>" with unit ms, s, m or h; the number is digits with an optional fraction.
// Seconds, or nothing when the text is not such a duration.
std::optional<double> parse_duration(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) ++i;
  const std::string_view number = text.substr(0, i);
  const std::string_view unit = text.substr(i);
  if (number.empty() || number.front() == '.' || number.back() == '.' ||
      std::count(number.begin(), number.end(), '.') > 1 || number.size() > 20)
    return std::nullopt;
  double scale = 0;
  if (unit == "ms") scale = 0.001;
  else if (unit == "s") scale = 1;
  else if (unit == "m") scale = 60;
  else if (unit == "h") scale = 3600;
  else return std::nullopt;
  double whole = 0;
  double frac = 0;
  double place = 1;
  bool after_dot = false;
  for (const char c : number) {
    if (c == '.') {
      after_dot = true;
      continue;
    }
    if (after_dot) {
      place /= 10;
      frac += (c - '0') * place;
    } else {
      whole = whole * 10 + (c - '0');
    }
  }
  return (whole + frac) * scale;
}

// A table in which rows look up their keys: the root, [server], or one [[route]] element.
struct scope {
  const toml::table* table = nullptr;  // nullptr: the table is not in the file
  std::string prefix;                  // display prefix: "", "server.", "route[2]."
  position where;                      // of the table, or of its nearest written ancestor
  std::size_t index = 0;               // element of the enclosing array of tables
};

class loader {
 public:
  loader(context& ctx, const toml::table& root) : ctx_(ctx), root_(root) {}

  void run() {
    check_unknown(root_, "", "");
    for (const schema_row& row : schema()) check_row(row);
    if (ctx_.errors.empty()) check_directory();
  }

 private:
  // Pass 3: what depends on several keys of [directory] (auth.mapping = "directory").
  void check_directory() {
    const directory_section& d = ctx_.snap.directory;
    if (ctx_.snap.auth.upn_from_directory && ctx_.snap.auth.mapping != mapping_mode::directory) {
      const auto it = ctx_.seen.find("auth.upn_sources");
      ctx_.error(it != ctx_.seen.end() ? it->second : position{1, 1}, "auth.upn_sources",
                 "\"directory\" needs auth.mapping = \"directory\" (the account is located in "
                 "[directory] by the certificate's strong strings)");
    }
    if (ctx_.snap.auth.mapping != mapping_mode::directory) return;
    const auto at = [this](std::string_view key) {
      const auto it = ctx_.seen.find(key);
      if (it != ctx_.seen.end()) return it->second;
      const auto dir = ctx_.seen.find("directory.uris");
      return dir != ctx_.seen.end() ? dir->second : position{1, 1};
    };
    // directory.tls against directory.uris: ldaps wants ldaps:// URIs, starttls and none want
    // ldap:// ones, and none is for loopback literals only (a bind password or a verdict must
    // never cross a network in clear).
    for (std::size_t i = 0; i < d.uris.size(); ++i) {
      std::string why;
      const auto uri = parse_ldap_uri(d.uris[i], why);
      if (!uri) continue;
      const std::string key = "directory.uris[" + std::to_string(i) + "]";
      const position where = ctx_.seen.count("directory.tls") ? at("directory.tls") : at(key);
      if (d.tls == directory_tls::ldaps && !uri->ldaps) {
        ctx_.error(where, "directory.tls", "\"ldaps\" needs ldaps:// URIs, got \"" + d.uris[i] + "\"");
      } else if (d.tls != directory_tls::ldaps && uri->ldaps) {
        ctx_.error(where, "directory.tls",
                   "an ldaps:// URI (\"" + d.uris[i] + "\") needs tls = \"ldaps\"");
      } else if (d.tls == directory_tls::none && !uri->loopback) {
        ctx_.error(where, "directory.tls",
                   "\"none\" (no TLS) is allowed only for loopback IP addresses, not \"" +
                       d.uris[i] + "\"; use \"starttls\" or \"ldaps\"");
      }
    }
    if (d.bind == directory_bind::simple) {
      if (d.bind_dn.empty())
        ctx_.error(at("directory.bind"), "directory.bind_dn", "required with bind = \"simple\"");
      if (d.password_file.empty())
        ctx_.error(at("directory.bind"), "directory.password_file",
                   "required with bind = \"simple\"");
    } else if (d.keytab.empty() && ctx_.snap.kerberos.keytab.empty()) {
      ctx_.error(at("directory.bind"), "directory.keytab",
                 "bind = \"sasl_gssapi\" needs a keytab: directory.keytab or kerberos.keytab");
    }
  }

  // Pass 1: every key in the file must have a row; a typo never becomes a default.
  void check_unknown(const toml::table& table, const std::string& schema_prefix,
                     const std::string& display_prefix) {
    for (auto&& [k, node] : table) {
      const std::string key = schema_prefix + std::string(k.str());
      const std::string shown = display_prefix + std::string(k.str());
      const schema_row* row = find_row(key);
      if (row == nullptr) {
        const position at = position_of(k.source()).line ? position_of(k.source())
                                                          : position_of(node, position{1, 1});
        ctx_.error(at, shown, (node.is_table() ? "unknown table" : "unknown key") +
                                  suggestion(schema_prefix, k.str()));
        continue;
      }
      if (row->kind == value_kind::table && node.is_table()) {
        check_unknown(*node.as_table(), key + ".", shown + ".");
      } else if (row->kind == value_kind::table_array && node.is_array()) {
        const toml::array& array = *node.as_array();
        for (std::size_t i = 0; i < array.size(); ++i) {
          if (const toml::table* t = array.get(i)->as_table()) {
            check_unknown(*t, key + ".", shown + "[" + std::to_string(i) + "].");
          }
        }
      }
    }
  }

  static std::string suggestion(std::string_view schema_prefix, std::string_view leaf) {
    const std::string_view parent =
        schema_prefix.empty() ? schema_prefix : schema_prefix.substr(0, schema_prefix.size() - 1);
    std::string_view best;
    std::size_t best_distance = leaf.size() <= 4 ? 1 : 2;
    for (const schema_row& r : schema()) {
      if (parent_of(r.key) != parent) continue;
      const std::size_t d = edit_distance(leaf, leaf_of(r.key));
      if (d <= best_distance) {
        best = leaf_of(r.key);
        best_distance = d;
      }
    }
    if (!best.empty()) return "; did you mean \"" + std::string(best) + "\"?";
    // Not a typo of a sibling: maybe a key of another table, as written or misspelt.
    std::string_view elsewhere;
    best_distance = leaf.size() <= 4 ? 1 : 2;
    for (const schema_row& r : schema()) {
      if (parent_of(r.key).empty() || parent_of(r.key) == parent) continue;
      const std::size_t d = edit_distance(leaf, leaf_of(r.key));
      if (d < best_distance || (d == best_distance && elsewhere.empty())) {
        elsewhere = r.key;
        best_distance = d;
      }
    }
    if (elsewhere.empty()) return {};
    if (leaf_of(elsewhere) == leaf) {
      return "; \"" + std::string(leaf) + "\" belongs in [" + std::string(parent_of(elsewhere)) +
             "]";
    }
    return "; did you mean " + std::string(elsewhere) + "?";
  }

  // The tables in which the children of `table_key` live ("" = the root).
  std::vector<scope> scopes_for(std::string_view table_key) const {
    if (table_key.empty()) return {scope{&root_, "", position{1, 1}, 0}};
    const schema_row* row = find_row(table_key);
    const std::string_view leaf = leaf_of(table_key);
    std::vector<scope> out;
    for (const scope& parent : scopes_for(parent_of(table_key))) {
      const toml::node* node = parent.table ? parent.table->get(leaf) : nullptr;
      const std::string prefix = parent.prefix + std::string(leaf);
      if (row->kind == value_kind::table) {
        if (node == nullptr) {
          out.push_back(scope{nullptr, prefix + ".", parent.where, parent.index});
        } else if (const toml::table* t = node->as_table()) {
          out.push_back(scope{t, prefix + ".", position_of(*t, parent.where), parent.index});
        }  // else the wrong type, reported by the table's own row
      } else if (node != nullptr && is_table_array(*node)) {
        const toml::array& array = *node->as_array();
        for (std::size_t i = 0; i < array.size(); ++i) {
          const toml::table& t = *array.get(i)->as_table();
          out.push_back(scope{&t, prefix + "[" + std::to_string(i) + "].",
                              position_of(t, parent.where), i});
        }
      }
    }
    return out;
  }

  static bool is_table_array(const toml::node& node) noexcept {
    const toml::array* array = node.as_array();
    if (array == nullptr) return false;
    return std::all_of(array->begin(), array->end(),
                       [](const toml::node& n) { return n.is_table(); });
  }

  // Pass 2: each row, in schema order, in each table where it may appear.
  void check_row(const schema_row& row) {
    const std::string_view leaf = leaf_of(row.key);
    for (const scope& s : scopes_for(parent_of(row.key))) {
      const std::string shown = s.prefix + std::string(leaf);
      const toml::node* node = s.table ? s.table->get(leaf) : nullptr;
      if (node == nullptr) {
        missing(row, s, shown);
        continue;
      }
      const position where = position_of(*node, s.where);
      value v;
      if (!convert(row, *node, shown, where, v)) continue;
      ctx_.seen.emplace(shown, where);
      if (row.apply != nullptr) {
        cursor c(ctx_, row, shown, s.index, where, v);
        row.apply(c);
      }
    }
  }

  void missing(const schema_row& row, const scope& s, const std::string& shown) {
    if (row.need == presence::required) {
      ctx_.error(s.where, shown,
                 row.kind == value_kind::table_array
                     ? "at least one [[" + std::string(row.key) + "]] is required"
                     : "missing required key");
    } else if (row.need == presence::kerberos &&
               ctx_.snap.identity.mode == identity_mode::kerberos) {
      position at = s.where;
      if (s.table == nullptr) {
        const auto mode = ctx_.seen.find("identity.mode");
        if (mode != ctx_.seen.end()) at = mode->second;
      }
      ctx_.error(at, shown, "missing; required when identity.mode = \"kerberos\"");
    } else if (row.need == presence::directory &&
               ctx_.snap.auth.mapping == mapping_mode::directory) {
      position at = s.where;
      if (s.table == nullptr) {
        const auto mode = ctx_.seen.find("auth.mapping");
        if (mode != ctx_.seen.end()) at = mode->second;
      }
      ctx_.error(at, shown, "missing; required when auth.mapping = \"directory\"");
    }
  }

  // Type check, then the row's generic constraints; fills `v`. False after reporting an error.
  bool convert(const schema_row& row, const toml::node& node, const std::string& shown,
               position where, value& v) {
    auto wrong_type = [&](position at, const std::string& key, const toml::node& n,
                          const std::string& want) {
      std::string message = "expected " + want + ", got " + std::string(describe(n));
      if (row.kind == value_kind::string_array && n.is_string()) {
        message += " (write [\"...\"])";
      }
      ctx_.error(at, key, std::move(message));
      return false;
    };
    switch (row.kind) {
      case value_kind::boolean:
        if (!node.is_boolean()) return wrong_type(where, shown, node, expected_type(row));
        v.boolean = node.as_boolean()->get();
        return true;
      case value_kind::integer: {
        if (!node.is_integer()) return wrong_type(where, shown, node, expected_type(row));
        v.integer = node.as_integer()->get();
        if (v.integer < row.min || v.integer > row.max) {
          ctx_.error(where, shown, "must be in " + constraint_text(row) + ", got " +
                                       std::to_string(v.integer));
          return false;
        }
        return true;
      }
      case value_kind::seconds:
      case value_kind::seconds_or_zero: {
        if (node.is_integer()) {
          v.seconds = static_cast<double>(node.as_integer()->get());
        } else if (node.is_floating_point()) {
          v.seconds = node.as_floating_point()->get();
        } else {
          return wrong_type(where, shown, node, expected_type(row));
        }
        const bool zero_ok = row.kind == value_kind::seconds_or_zero;
        if (!std::isfinite(v.seconds) || v.seconds < 0 || (!zero_ok && v.seconds == 0) ||
            v.seconds > static_cast<double>(row.max)) {
          std::ostringstream got;
          got << v.seconds;
          ctx_.error(where, shown,
                     "must be " + constraint_text(row) + " (seconds), got " + got.str());
          return false;
        }
        return true;
      }
      case value_kind::duration:
      case value_kind::duration_or_zero: {
        if (node.is_integer()) {
          v.seconds = static_cast<double>(node.as_integer()->get());
        } else if (node.is_floating_point()) {
          v.seconds = node.as_floating_point()->get();
        } else if (node.is_string()) {
          const std::string& text = node.as_string()->get();
          const auto parsed = parse_duration(text);
          if (!parsed) {
            ctx_.error(where, shown,
                       "must be a duration such as \"100ms\", \"5s\", \"5m\" or \"1h\", got \"" +
                           (has_control_char(text) ? std::string("?") : text) + "\"");
            return false;
          }
          v.seconds = *parsed;
        } else {
          return wrong_type(where, shown, node, expected_type(row));
        }
        const bool zero_ok = row.kind == value_kind::duration_or_zero;
        if (!std::isfinite(v.seconds) || v.seconds < 0 || (!zero_ok && v.seconds == 0) ||
            v.seconds > static_cast<double>(row.max)) {
          std::ostringstream got;
          got << v.seconds;
          ctx_.error(where, shown,
                     std::string(zero_ok ? "must be 0.." : "must be > 0, at most ") +
                         std::to_string(row.max) + " seconds, got " + got.str() + "s");
          return false;
        }
        return true;
      }
      case value_kind::string: {
        if (!node.is_string()) return wrong_type(where, shown, node, expected_type(row));
        v.text = node.as_string()->get();
        return check_string(row, v.text, where, shown);
      }
      case value_kind::string_array: {
        const toml::array* array = node.as_array();
        if (array == nullptr) return wrong_type(where, shown, node, expected_type(row));
        bool ok = true;
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& e = *array->get(i);
          const std::string key = shown + "[" + std::to_string(i) + "]";
          const position at = position_of(e, where);
          if (!e.is_string()) {
            ok = wrong_type(at, key, e, "a string");
            continue;
          }
          detail::element el{e.as_string()->get(), at};
          if (!check_string(row, el.text, at, key)) {
            ok = false;
            continue;
          }
          for (const detail::element& earlier : v.items) {
            // Two "host:0" listeners are two different ephemeral ports, not a repetition.
            if (earlier.text == el.text && !el.text.ends_with(":0")) {
              ctx_.error(at, key, "\"" + el.text + "\" is listed twice");
              ok = false;
            }
          }
          v.items.push_back(std::move(el));
        }
        if (ok && static_cast<std::int64_t>(array->size()) < row.min) {
          ctx_.error(where, shown, row.min == 1 ? std::string("must not be empty")
                                                : "must list at least " + std::to_string(row.min));
          ok = false;
        }
        return ok;
      }
      case value_kind::table:
        if (!node.is_table()) return wrong_type(where, shown, node, expected_type(row));
        return true;
      case value_kind::table_array: {
        if (!is_table_array(node)) return wrong_type(where, shown, node, expected_type(row));
        v.count = node.as_array()->size();
        if (v.count == 0 && row.need == presence::required) {
          ctx_.error(where, shown, "at least one [[" + std::string(row.key) + "]] is required");
          return false;
        }
        return true;
      }
    }
    return false;
  }

  bool check_string(const schema_row& row, const std::string& text, position where,
                    const std::string& key) {
    if (has_control_char(text)) {
      ctx_.error(where, key, "must not contain control characters");
      return false;
    }
    if (!row.choices.empty() &&
        std::find(row.choices.begin(), row.choices.end(), text) == row.choices.end()) {
      ctx_.error(where, key, "must be one of " + quoted_choices(row) + ", got \"" + text + "\"");
      return false;
    }
    return true;
  }

  context& ctx_;
  const toml::table& root_;
};

std::string absolute_dir(const std::string& dir) {
  std::error_code ec;
  fs::path p = dir.empty() ? fs::current_path(ec) : fs::absolute(dir, ec);
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

load_result load_text(std::string_view text, std::string file, std::string source,
                      std::string base_dir) {
  load_result result;
  context ctx;
  ctx.file = std::move(file);
  try {
    ctx.base_dir = absolute_dir(base_dir);
    ctx.snap.source = std::move(source);
    toml::table root;
    try {
      root = toml::parse(text);
    } catch (const toml::parse_error& e) {
      ctx.error(position_of(e.source()), "", std::string(e.description()));
    }
    if (ctx.errors.empty()) loader(ctx, root).run();
  } catch (const std::exception& e) {
    ctx.error(position{}, "", std::string("internal error while loading: ") + e.what());
  }
  std::stable_sort(ctx.errors.begin(), ctx.errors.end(),
                   [](const diagnostic& a, const diagnostic& b) {
                     return a.line != b.line ? a.line < b.line : a.column < b.column;
                   });
  result.errors = std::move(ctx.errors);
  if (result.errors.empty()) result.value = std::make_shared<const snapshot>(std::move(ctx.snap));
  return result;
}

}  // namespace

std::string diagnostic::to_string() const {
  std::string out = file;
  if (line != 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  out += message;
  return out;
}

load_result load_string(std::string_view toml_text, std::string source_name,
                        std::string base_dir) {
  std::string file = source_name;
  return load_text(toml_text, std::move(file), std::move(source_name), std::move(base_dir));
}

load_result load_file(const std::string& path) {
  auto fail = [&path](std::string message) {
    load_result r;
    r.errors.push_back(diagnostic{path, 0, 0, "", std::move(message)});
    return r;
  };
  try {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
      return fail("cannot open the configuration file: " + std::generic_category().message(errno));
    }
    std::string text;
    char buffer[65536];
    int read_errno = 0;
    while (true) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) read_errno = errno;
      if (n <= 0) break;
      text.append(buffer, static_cast<std::size_t>(n));
      if (text.size() > max_file_bytes) break;
    }
    ::close(fd);
    if (read_errno != 0) {
      return fail("cannot read the configuration file: " +
                  std::generic_category().message(read_errno));
    }
    if (text.size() > max_file_bytes) {
      return fail("the configuration file is larger than " + std::to_string(max_file_bytes) +
                  " bytes");
    }
    std::error_code ec;
    const fs::path absolute = fs::absolute(path, ec).lexically_normal();
    return load_text(text, path, absolute.string(), absolute.parent_path().string());
  } catch (const std::exception& e) {
    return fail(std::string("internal error while loading: ") + e.what());
  }
}

int check_config(const std::string& path, std::ostream& out, std::ostream& err) {
  const load_result r = load_file(path);
  if (r.ok()) {
    out << "cbagate: configuration file " << path << " test is successful\n";
    return 0;
  }
  for (const diagnostic& d : r.errors) err << d.to_string() << '\n';
  err << "cbagate: configuration file " << path << " test failed\n";
  return 2;
}

}  // namespace cbagate::config
