#include "http/flat_fields.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <iterator>
#include <utility>

#include <boost/beast/core/detail/temporary_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/status.hpp>

namespace cbagate::http {
namespace {

namespace bhttp = boost::beast::http;

constexpr std::string_view sv(boost::beast::string_view s) noexcept { return {s.data(), s.size()}; }

// Beast trims a value of leading and trailing SP and HTAB on insert and set
// (basic_fields::new_element, detail::trim).
std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

void put(char*& p, std::string_view s) noexcept {
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  p += s.size();
}

// "HTTP/X.Y"; Beast writes the version as two digits (11 -> "1.1").
void put_version(char*& p, unsigned version) noexcept {
  put(p, "HTTP/");
  *p++ = static_cast<char>('0' + version / 10);
  *p++ = '.';
  *p++ = static_cast<char>('0' + version % 10);
}

std::string_view method_of(bhttp::verb method, std::string_view stored) noexcept {
  return method == bhttp::verb::unknown ? stored : sv(bhttp::to_string(method));
}

std::string_view reason_of(std::string_view stored, unsigned code) noexcept {
  return stored.empty() ? sv(bhttp::obsolete_reason(static_cast<bhttp::status>(code))) : stored;
}

std::size_t fields_size(const flat_fields& f) noexcept {
  std::size_t n = 2;  // the blank line
  for (const auto& e : f) n += e.name_string().size() + 2 + e.value().size() + 2;
  return n;
}

void put_fields(char*& p, const flat_fields& f) noexcept {
  for (const auto& e : f) {
    put(p, e.name_string());
    put(p, ": ");
    put(p, e.value());
    put(p, "\r\n");
  }
  put(p, "\r\n");
}

}  // namespace

flat_fields::flat_fields(const flat_fields& other) { *this = other; }

flat_fields::flat_fields(flat_fields&& other) noexcept
    : entries_(std::move(other.entries_)),
      bytes_(std::move(other.bytes_)),
      retired_(std::move(other.retired_)),
      used_(std::exchange(other.used_, 0)),
      capacity_(std::exchange(other.capacity_, 0)),
      method_(std::exchange(other.method_, {})),
      target_(std::exchange(other.target_, {})),
      reason_(std::exchange(other.reason_, {})) {
  other.entries_.clear();
  other.retired_.clear();
}

flat_fields& flat_fields::operator=(flat_fields&& other) noexcept {
  if (this == &other) return *this;
  entries_ = std::move(other.entries_);
  bytes_ = std::move(other.bytes_);
  retired_ = std::move(other.retired_);
  used_ = std::exchange(other.used_, 0);
  capacity_ = std::exchange(other.capacity_, 0);
  method_ = std::exchange(other.method_, {});
  target_ = std::exchange(other.target_, {});
  reason_ = std::exchange(other.reason_, {});
  other.entries_.clear();
  other.retired_.clear();
  return *this;
}

flat_fields& flat_fields::operator=(const flat_fields& other) {
  if (this == &other) return *this;
  clear();
  std::size_t bytes = other.method_.size() + other.target_.size() + other.reason_.size();
  for (const auto& e : other) bytes += e.name_string().size() + e.value().size();
  reserve(bytes, other.entries_.size());
  method_ = store(other.method_);
  target_ = store(other.target_);
  reason_ = store(other.reason_);
  for (const auto& e : other) append(e.id_, e.name_string(), e.value());
  return *this;
}

void flat_fields::reserve(std::size_t bytes, std::size_t count) {
  entries_.reserve(count);
  if (bytes > capacity_ - used_) grow(bytes);  // only at the start of a message: one block
}

void flat_fields::clear() noexcept {
  entries_.clear();
  retired_.clear();  // the newest, largest block is kept for the next message
  used_ = 0;
  method_ = {};
  target_ = {};
  reason_ = {};
}

void flat_fields::grow(std::size_t need) {
  // A new block for the bytes to come; the full one stays until clear(), so every view into
  // the fields (a value a caller holds across a set(), as the session holds Host's) stays valid.
  const std::size_t cap = std::max({capacity_ * 2, need, std::size_t{256}});
  if (bytes_) retired_.push_back(std::move(bytes_));
  bytes_ = std::make_unique_for_overwrite<char[]>(cap);
  used_ = 0;
  capacity_ = cap;
}

std::string_view flat_fields::store(std::string_view s) {
  // An empty value still points somewhere, as Beast's do (its token and buffer helpers
  // memcpy from value().data()).
  if (s.empty()) return {"", 0};
  if (s.size() > capacity_ - used_) grow(s.size());
  char* const p = bytes_.get() + used_;
  std::memcpy(p, s.data(), s.size());
  used_ += s.size();
  return {p, s.size()};
}

bool flat_fields::same(const value_type& e, field name, std::string_view name_string) noexcept {
  if (name != field::unknown) return e.id_ == name;
  return e.id_ == field::unknown && boost::beast::iequals(e.name_string(), name_string);
}

void flat_fields::append(field name, std::string_view name_string, std::string_view value) {
  value_type e;
  e.id_ = name;
  // A known name spelled as Beast spells it needs no copy: its static string serves.
  const std::string_view canonical =
      name == field::unknown ? std::string_view{} : sv(bhttp::to_string(name));
  const std::string_view n = name_string != canonical ? store(name_string) : canonical;
  const std::string_view v = store(value);
  e.name_ = n.data();
  e.name_len_ = static_cast<std::uint32_t>(n.size());
  e.value_ = v.data();
  e.value_len_ = static_cast<std::uint32_t>(v.size());
  // Beast keeps fields of one name together: a repeated name goes after its last field.
  std::size_t pos = entries_.size();
  for (std::size_t i = entries_.size(); i-- > 0;) {
    if (same(entries_[i], name, name_string)) {
      pos = i + 1;
      break;
    }
  }
  entries_.insert(entries_.begin() + static_cast<std::ptrdiff_t>(pos), e);
}

void flat_fields::insert(field name, std::string_view value) {
  insert(name, sv(bhttp::to_string(name)), value);
}

void flat_fields::insert(std::string_view name, std::string_view value) {
  insert(bhttp::string_to_field(name), name, value);
}

void flat_fields::insert(field name, std::string_view name_string, std::string_view value) {
  append(name, name_string, trim(value));
}

void flat_fields::set(field name, std::string_view value) {
  const std::string_view v = store(trim(value));
  erase(name);
  value_type e;
  e.id_ = name;
  const std::string_view n = sv(bhttp::to_string(name));
  e.name_ = n.data();
  e.name_len_ = static_cast<std::uint32_t>(n.size());
  e.value_ = v.data();
  e.value_len_ = static_cast<std::uint32_t>(v.size());
  entries_.push_back(e);
}

void flat_fields::set(std::string_view name, std::string_view value) {
  const field id = bhttp::string_to_field(name);
  const std::string_view v = store(trim(value));
  const std::string_view n = store(name);
  if (id != field::unknown) {
    erase(id);
  } else {
    std::erase_if(entries_, [&](const value_type& e) { return same(e, id, n); });
  }
  value_type e;
  e.id_ = id;
  e.name_ = n.data();
  e.name_len_ = static_cast<std::uint32_t>(n.size());
  e.value_ = v.data();
  e.value_len_ = static_cast<std::uint32_t>(v.size());
  entries_.push_back(e);
}

flat_fields::const_iterator flat_fields::erase(const_iterator pos) noexcept {
  const auto i = pos - entries_.data();
  entries_.erase(entries_.begin() + i);
  return entries_.data() + i;
}

std::size_t flat_fields::erase(field name) noexcept {
  return std::erase_if(entries_, [name](const value_type& e) { return e.id_ == name; });
}

std::size_t flat_fields::erase(std::string_view name) noexcept {
  const field id = bhttp::string_to_field(name);
  if (id != field::unknown) return erase(id);
  return std::erase_if(entries_, [&](const value_type& e) { return same(e, id, name); });
}

flat_fields::const_iterator flat_fields::find(field name) const noexcept {
  return std::find_if(begin(), end(), [name](const value_type& e) { return e.id_ == name; });
}

flat_fields::const_iterator flat_fields::find(std::string_view name) const noexcept {
  const field id = bhttp::string_to_field(name);
  if (id != field::unknown) return find(id);
  return std::find_if(begin(), end(), [&](const value_type& e) { return same(e, id, name); });
}

std::size_t flat_fields::count(field name) const noexcept {
  return static_cast<std::size_t>(
      std::count_if(begin(), end(), [name](const value_type& e) { return e.id_ == name; }));
}

std::size_t flat_fields::count(std::string_view name) const noexcept {
  const auto r = equal_range(name);
  return static_cast<std::size_t>(r.second - r.first);
}

std::pair<flat_fields::const_iterator, flat_fields::const_iterator> flat_fields::equal_range(
    field name) const noexcept {
  const_iterator first = find(name);
  const_iterator last = first;
  while (last != end() && last->id_ == name) ++last;
  return {first, last};
}

std::pair<flat_fields::const_iterator, flat_fields::const_iterator> flat_fields::equal_range(
    std::string_view name) const noexcept {
  const field id = bhttp::string_to_field(name);
  if (id != field::unknown) return equal_range(id);
  const_iterator first = find(name);
  const_iterator last = first;
  while (last != end() && same(*last, id, name)) ++last;
  return {first, last};
}

std::string_view flat_fields::operator[](field name) const noexcept {
  const auto it = find(name);
  return it == end() ? std::string_view{} : it->value();
}

std::string_view flat_fields::operator[](std::string_view name) const noexcept {
  const auto it = find(name);
  return it == end() ? std::string_view{} : it->value();
}

// --- Beast's Fields concept, as basic_fields does it (boost/beast/http/impl/fields.hpp) ---------

bool flat_fields::get_chunked_impl() const {
  const bhttp::token_list te{(*this)[field::transfer_encoding]};
  for (auto it = te.begin(); it != te.end();) {
    const auto next = std::next(it);
    if (next == te.end()) return boost::beast::iequals(*it, "chunked");
    it = next;
  }
  return false;
}

bool flat_fields::get_keep_alive_impl(unsigned version) const {
  const auto it = find(field::connection);
  if (version < 11) {
    if (it == end()) return false;
    return bhttp::token_list{it->value()}.exists("keep-alive");
  }
  if (it == end()) return true;
  return !bhttp::token_list{it->value()}.exists("close");
}

bool flat_fields::has_content_length_impl() const noexcept {
  return find(field::content_length) != end();
}

void flat_fields::set_chunked_impl(bool value) {
  boost::beast::detail::temporary_buffer buf;
  const auto it = find(field::transfer_encoding);
  if (value) {
    // append "chunked"
    if (it == end()) {
      set(field::transfer_encoding, "chunked");
      return;
    }
    const bhttp::token_list te{it->value()};
    for (auto itt = te.begin();;) {
      const auto next = std::next(itt);
      if (next == te.end()) {
        if (boost::beast::iequals(*itt, "chunked")) return;  // already set
        break;
      }
      itt = next;
    }
    buf.append(it->value(), ", chunked");
    set(field::transfer_encoding, buf.view());
    return;
  }
  // filter "chunked"
  if (it == end()) return;
  bhttp::detail::filter_token_list_last(buf, it->value(), {"chunked", {}});
  if (!buf.empty())
    set(field::transfer_encoding, buf.view());
  else
    erase(field::transfer_encoding);
}

void flat_fields::set_content_length_impl(const boost::optional<std::uint64_t>& value) {
  if (!value) {
    erase(field::content_length);
    return;
  }
  char digits[24];
  const auto r = std::to_chars(digits, digits + sizeof digits, *value);
  set(field::content_length, std::string_view(digits, static_cast<std::size_t>(r.ptr - digits)));
}

void flat_fields::set_keep_alive_impl(unsigned version, bool keep_alive) {
  const std::string_view value = (*this)[field::connection];
  boost::beast::detail::temporary_buffer buf;
  bhttp::detail::keep_alive_impl(buf, value, version, keep_alive);
  if (buf.empty())
    erase(field::connection);
  else
    set(field::connection, buf.view());
}

// --- bytes ----------------------------------------------------------------------------------------

std::size_t flat_fields::request_size(const flat_fields& f, unsigned version,
                                        bhttp::verb method) noexcept {
  // "<method> <target> HTTP/X.Y\r\n"
  (void)version;
  return method_of(method, f.method_).size() + 1 + f.target_.size() + 1 + 8 + 2 +
         fields_size(f);
}

std::size_t flat_fields::response_size(const flat_fields& f, unsigned version,
                                         unsigned code) noexcept {
  // "HTTP/X.Y ### <reason>\r\n"
  (void)version;
  return 8 + 1 + 3 + 1 + reason_of(f.reason_, code).size() + 2 + fields_size(f);
}

char* flat_fields::put_request(const flat_fields& f, unsigned version, bhttp::verb method,
                                 char* p) noexcept {
  put(p, method_of(method, f.method_));
  *p++ = ' ';
  put(p, f.target_);
  *p++ = ' ';
  put_version(p, version);
  put(p, "\r\n");
  put_fields(p, f);
  return p;
}

char* flat_fields::put_response(const flat_fields& f, unsigned version, unsigned code,
                                  char* p) noexcept {
  put_version(p, version);
  *p++ = ' ';
  *p++ = static_cast<char>('0' + code / 100 % 10);
  *p++ = static_cast<char>('0' + code / 10 % 10);
  *p++ = static_cast<char>('0' + code % 10);
  *p++ = ' ';
  put(p, reason_of(f.reason_, code));
  put(p, "\r\n");
  put_fields(p, f);
  return p;
}

flat_fields::writer::writer(const flat_fields& f, unsigned version, bhttp::verb method)
    : size_(request_size(f, version, method)) {
  bytes_ = std::make_unique_for_overwrite<char[]>(size_);
  put_request(f, version, method, bytes_.get());
}

flat_fields::writer::writer(const flat_fields& f, unsigned version, unsigned code)
    : size_(response_size(f, version, code)) {
  bytes_ = std::make_unique_for_overwrite<char[]>(size_);
  put_response(f, version, code, bytes_.get());
}

}  // namespace cbagate::http
