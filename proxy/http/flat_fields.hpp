#pragma once
// A message header's fields in one flat array (issue 14). boost::beast::http::fields keeps each
// field in its own heap node, in a red-black tree ordered by a case-insensitive compare: one
// malloc and free per field and several string compares per lookup, 12-15k instructions of a
// keep-alive request. Here the fields are an array of {enum, name, value} whose bytes live in
// one growable buffer; lookups compare the enum (field::unknown names case-insensitively), and
// clear() keeps both allocations for the next message.
//
// It models Beast's Fields concept, so boost::beast::http::message<isRequest, Body,
// flat_fields> and Beast's serializer work on it, with every message helper (keep_alive(),
// chunked(), has_content_length(), method(), target(), reason()) computed exactly as Beast 1.81
// computes it for basic_fields. The observable behaviour equals basic_fields': iteration order
// (a field whose name is already present goes right after the last field of that name, as
// Beast keeps duplicates together), values trimmed of leading and trailing SP/HTAB on insert
// and set, set() replacing every copy and appending, erase(pos) returning the next field.
// flat_parser.hpp fills it from Beast's own parser.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/optional/optional.hpp>

namespace cbagate::http {

/**
 * The fields of one HTTP/1 message header, and its method, target or reason strings.
 * Not thread-safe. String views into it (names, values, target) stay valid until clear(),
 * assignment or destruction, even across inserts, sets and erases (their bytes are never moved
 * or reused before clear()). Iterators are positions in an array: an insert, set or erase
 * invalidates them (erase(pos) returns the next one).
 */
class flat_fields {
 public:
  using field = boost::beast::http::field;

  /** One field: its enum (field::unknown for a name Beast does not know), its name as
      received, its value (trimmed). */
  class value_type {
   public:
    field name() const noexcept { return id_; }
    std::string_view name_string() const noexcept { return {name_, name_len_}; }
    std::string_view value() const noexcept { return {value_, value_len_}; }

   private:
    friend class flat_fields;
    const char* name_ = nullptr;
    const char* value_ = nullptr;
    std::uint32_t name_len_ = 0;
    std::uint32_t value_len_ = 0;
    field id_ = field::unknown;
  };
  using const_iterator = const value_type*;
  using iterator = const_iterator;

  flat_fields() = default;
  flat_fields(const flat_fields& other);
  /** Takes the fields and the storage; `other` is left empty, without storage. */
  flat_fields(flat_fields&& other) noexcept;
  flat_fields& operator=(const flat_fields& other);
  flat_fields& operator=(flat_fields&& other) noexcept;
  ~flat_fields() = default;

  const_iterator begin() const noexcept { return entries_.data(); }
  const_iterator end() const noexcept { return entries_.data() + entries_.size(); }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }

  /** Room for `bytes` of names, values and start-line strings and for `count` fields: a
      message of that size then costs no further allocation. */
  void reserve(std::size_t bytes, std::size_t count);
  /** Removes every field and the start-line strings; keeps the allocations (reuse). */
  void clear() noexcept;
  /** Bytes of the current storage block (what a cleared flat_fields holds on to). */
  std::size_t capacity() const noexcept { return capacity_; }

  /** Adds a field after the last one of the same name, or at the end (Beast's insert). */
  void insert(field name, std::string_view value);
  void insert(std::string_view name, std::string_view value);
  /** `name` must be the enum of `name_string` (as Beast's parser reports them). */
  void insert(field name, std::string_view name_string, std::string_view value);

  /** Removes every field of this name, then appends one (Beast's set). */
  void set(field name, std::string_view value);
  void set(std::string_view name, std::string_view value);

  /** Removes the field at `pos`. @return the field that followed it. */
  const_iterator erase(const_iterator pos) noexcept;
  /** Removes every field of this name. @return how many. */
  std::size_t erase(field name) noexcept;
  std::size_t erase(std::string_view name) noexcept;

  /** The first field of this name, or end(). */
  const_iterator find(field name) const noexcept;
  const_iterator find(std::string_view name) const noexcept;
  std::size_t count(field name) const noexcept;
  std::size_t count(std::string_view name) const noexcept;
  /** The fields of this name, which are adjacent (see insert). */
  std::pair<const_iterator, const_iterator> equal_range(field name) const noexcept;
  std::pair<const_iterator, const_iterator> equal_range(std::string_view name) const noexcept;
  /** The value of the first field of this name, or "". */
  std::string_view operator[](field name) const noexcept;
  std::string_view operator[](std::string_view name) const noexcept;

  /** Beast's Fields::writer: the whole header as one buffer (as serialize.hpp writes it). */
  class writer {
   public:
    using const_buffers_type = boost::asio::const_buffer;
    writer(const flat_fields& f, unsigned version, boost::beast::http::verb method);
    writer(const flat_fields& f, unsigned version, unsigned code);
    const_buffers_type get() const noexcept { return {bytes_.get(), size_}; }

   private:
    std::unique_ptr<char[]> bytes_;
    std::size_t size_ = 0;
  };

  /** The bytes of the start line's strings and fields, as serialize.hpp writes them. */
  static std::size_t request_size(const flat_fields& f, unsigned version,
                                  boost::beast::http::verb method) noexcept;
  static std::size_t response_size(const flat_fields& f, unsigned version,
                                   unsigned code) noexcept;
  static char* put_request(const flat_fields& f, unsigned version,
                           boost::beast::http::verb method, char* out) noexcept;
  static char* put_response(const flat_fields& f, unsigned version, unsigned code,
                            char* out) noexcept;

 protected:
  // Beast's Fields concept (boost/beast/http/detail/type_traits.hpp fields_model), called by
  // boost::beast::http::header and message; each does what basic_fields' does.
  std::string_view get_method_impl() const noexcept { return method_; }
  std::string_view get_target_impl() const noexcept { return target_; }
  std::string_view get_reason_impl() const noexcept { return reason_; }
  bool get_chunked_impl() const;
  bool get_keep_alive_impl(unsigned version) const;
  bool has_content_length_impl() const noexcept;
  void set_method_impl(std::string_view s) { method_ = store(s); }
  void set_target_impl(std::string_view s) { target_ = store(s); }
  void set_reason_impl(std::string_view s) { reason_ = store(s); }
  void set_chunked_impl(bool value);
  void set_content_length_impl(const boost::optional<std::uint64_t>& value);
  void set_keep_alive_impl(unsigned version, bool keep_alive);

 private:
  // Copies `s` into the current block (a new one when it is full).
  std::string_view store(std::string_view s);
  void grow(std::size_t need);
  void append(field name, std::string_view name_string, std::string_view value);
  static bool same(const value_type& e, field name, std::string_view name_string) noexcept;

  std::vector<value_type> entries_;
  std::unique_ptr<char[]> bytes_;  // the current block: bytes_[0, used_) hold strings
  std::vector<std::unique_ptr<char[]>> retired_;  // full blocks, kept until clear()
  std::size_t used_ = 0;
  std::size_t capacity_ = 0;
  std::string_view method_;  // only for a method Beast does not know (verb::unknown)
  std::string_view target_;
  std::string_view reason_;
};

}  // namespace cbagate::http
