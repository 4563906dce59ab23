#include "config/detail/cursor.hpp"

#include "config/secret_file.hpp"
#include "config/validate.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

namespace cbagate::config::detail {
namespace fs = std::filesystem;

void context::error(position where, std::string key, std::string message) {
  errors.push_back(diagnostic{file, where.line, where.column, std::move(key), std::move(message)});
}

position cursor::where_of(std::string_view key) const noexcept {
  const auto it = ctx_.seen.find(key);
  return it == ctx_.seen.end() ? position{} : it->second;
}

void cursor::error(std::string message) { ctx_.error(where_, key_, std::move(message)); }

void cursor::error(const element& at, std::size_t i, std::string message) {
  ctx_.error(at.where, key_ + "[" + std::to_string(i) + "]", std::move(message));
}

std::size_t cursor::choice() const noexcept {
  for (std::size_t i = 0; i < row_.choices.size(); ++i) {
    if (row_.choices[i] == value_.text) return i;
  }
  return 0;  // unreachable: the loader checked membership
}

std::vector<std::size_t> cursor::choice_list() const {
  std::vector<std::size_t> out;
  for (const element& e : value_.items) {
    for (std::size_t i = 0; i < row_.choices.size(); ++i) {
      if (row_.choices[i] == e.text) out.push_back(i);
    }
  }
  return out;
}

std::string cursor::resolve(const std::string& text) const {
  fs::path p(text);
  if (p.is_relative()) p = fs::path(ctx_.base_dir) / p;
  return p.lexically_normal().string();
}

std::string cursor::check_input_file(const std::string& text, position where,
                                     const std::string& key) {
  const std::string path = resolve(text);
  const std::string hint =
      fs::path(text).is_relative() ? " (relative to " + ctx_.base_dir + ")" : std::string();
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) {
    ctx_.error(where, key, "file not found: " + path + hint);
    return path;
  }
  if (fs::is_directory(st)) {
    ctx_.error(where, key, "is a directory, not a file: " + path);
    return path;
  }
  if (!fs::is_regular_file(st)) {
    ctx_.error(where, key, "not a regular file: " + path);
    return path;
  }
  // Opening is the only reliable readability test (ACLs, root, read-only mounts).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    ctx_.error(where, key,
               "cannot read " + path + ": " + std::generic_category().message(err));
    return path;
  }
  ::close(fd);
  return path;
}

std::string cursor::input_file(bool check) {
  const std::string& text = value_.text;
  if (text.empty()) {
    if (check && row_.need != presence::optional) error("must name a file");
    return {};
  }
  return check ? check_input_file(text, where_, key_) : resolve(text);
}

std::string cursor::secret_file(bool check) {
  const std::size_t errors_before = ctx_.errors.size();
  std::string path = input_file(check);
  // Only a file that exists and opens gets the permission check: one error per key.
  if (!check || path.empty() || ctx_.errors.size() != errors_before) return path;
  if (auto problem = secret_file_problem(path)) error(std::move(*problem));
  return path;
}

std::vector<std::string> cursor::input_files() {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < value_.items.size(); ++i) {
    const element& e = value_.items[i];
    if (e.text.empty()) {
      error(e, i, "must name a file");
      continue;
    }
    out.push_back(check_input_file(e.text, e.where, key_ + "[" + std::to_string(i) + "]"));
  }
  return out;
}

std::string cursor::output_file(std::initializer_list<std::string_view> specials) {
  const std::string& text = value_.text;
  for (const std::string_view s : specials) {
    if (text == s) return text;
  }
  if (text.empty()) {
    error("must not be empty");
    return text;
  }
  const std::string path = resolve(text);
  const fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    error("directory does not exist: " + dir.string());
  } else if (fs::is_directory(path, ec)) {
    error("is a directory, not a file: " + path);
  }
  return path;
}

std::vector<endpoint> cursor::endpoints() {
  std::vector<endpoint> out;
  for (std::size_t i = 0; i < value_.items.size(); ++i) {
    std::string why;
    if (auto ep = parse_endpoint(value_.items[i].text, why)) {
      out.push_back(std::move(*ep));
    } else {
      error(value_.items[i], i, "bad listen address \"" + value_.items[i].text + "\": " + why);
    }
  }
  return out;
}

std::string cursor::endpoint_or_empty() {
  if (value_.text.empty()) return {};
  std::string why;
  if (!parse_endpoint(value_.text, why)) {
    error("bad address \"" + value_.text + "\": " + why);
  }
  return value_.text;
}

std::vector<upstream_server> cursor::upstream_servers() {
  std::vector<upstream_server> out;
  for (std::size_t i = 0; i < value_.items.size(); ++i) {
    const element& e = value_.items[i];
    std::string why;
    auto s = parse_upstream_url(e.text, why);
    if (!s) {
      error(e, i, "bad upstream URL \"" + e.text + "\": " + why);
      continue;
    }
    for (const upstream_server& prev : out) {
      if (prev.tls == s->tls && prev.port == s->port && iequals(prev.host, s->host)) {
        error(e, i, "the same server as \"" + prev.url + "\"");
      }
    }
    out.push_back(std::move(*s));
  }
  return out;
}

std::string cursor::route_prefix() {
  std::string why;
  if (!is_valid_route_prefix(value_.text, why)) {
    error("bad route prefix \"" + value_.text + "\": " + why);
    return {};
  }
  return value_.text;
}

std::string cursor::header_name() {
  std::string why;
  if (!is_valid_identity_header(value_.text, why)) {
    error("bad header name: " + why);
  }
  return value_.text;
}

std::string cursor::host_name_or_empty() {
  if (value_.text.empty()) return {};
  std::string why;
  if (!is_valid_host_name(value_.text, why)) {
    error("bad host name \"" + value_.text + "\": " + why);
  }
  return value_.text;
}

std::vector<std::string> cursor::sni_names() {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < value_.items.size(); ++i) {
    std::string why;
    if (is_valid_sni_name(value_.items[i].text, why)) {
      out.push_back(value_.items[i].text);
    } else {
      error(value_.items[i], i, "bad server name \"" + value_.items[i].text + "\": " + why);
    }
  }
  return out;
}

std::string cursor::no_spaces() {
  if (value_.text.empty()) {
    error("must not be empty");
  } else if (value_.text.find(' ') != std::string::npos) {
    error("must not contain spaces");
  }
  return value_.text;
}

}  // namespace cbagate::config::detail
