#pragma once
// RAII for GSSAPI handles (MIT krb5): every gss_name_t, gss_cred_id_t, gss_ctx_id_t, gss_OID_set
// and output gss_buffer_desc the proxy obtains is owned by one of these.
#include <gssapi/gssapi.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>
#include <type_traits>

namespace cbagate::gss {

struct name_deleter {
  void operator()(gss_name_t n) const noexcept {
    OM_uint32 minor = 0;
    gss_release_name(&minor, &n);
  }
};
struct cred_deleter {
  void operator()(gss_cred_id_t c) const noexcept {
    OM_uint32 minor = 0;
    gss_release_cred(&minor, &c);
  }
};
struct ctx_deleter {
  void operator()(gss_ctx_id_t c) const noexcept {
    OM_uint32 minor = 0;
    gss_delete_sec_context(&minor, &c, GSS_C_NO_BUFFER);
  }
};
struct oid_set_deleter {
  void operator()(gss_OID_set s) const noexcept {
    OM_uint32 minor = 0;
    gss_release_oid_set(&minor, &s);
  }
};

/** Owning handles; `.get()` passes them to GSS calls that only read them. */
using name_ptr = std::unique_ptr<std::remove_pointer_t<gss_name_t>, name_deleter>;
using cred_ptr = std::unique_ptr<std::remove_pointer_t<gss_cred_id_t>, cred_deleter>;
using ctx_ptr = std::unique_ptr<std::remove_pointer_t<gss_ctx_id_t>, ctx_deleter>;
using oid_set_ptr = std::unique_ptr<std::remove_pointer_t<gss_OID_set>, oid_set_deleter>;

/**
 * An output buffer filled by GSSAPI (`gss_init_sec_context`, `gss_display_name`, ...), released
 * with gss_release_buffer. Pass `out()` as the output argument. Not copyable.
 */
class buffer {
 public:
  buffer() noexcept = default;
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;
  ~buffer() { reset(); }

  /** For a GSS call's output parameter; releases what the buffer held before. */
  gss_buffer_t out() noexcept {
    reset();
    return &desc_;
  }
  [[nodiscard]] bool empty() const noexcept { return desc_.length == 0; }
  [[nodiscard]] std::span<const unsigned char> bytes() const noexcept {
    return {static_cast<const unsigned char*>(desc_.value), desc_.length};
  }
  [[nodiscard]] std::string_view view() const noexcept {
    return {static_cast<const char*>(desc_.value), desc_.length};
  }
  void reset() noexcept {
    if (desc_.value != nullptr) {
      OM_uint32 minor = 0;
      gss_release_buffer(&minor, &desc_);
    }
    desc_ = GSS_C_EMPTY_BUFFER;
  }

 private:
  gss_buffer_desc desc_ = GSS_C_EMPTY_BUFFER;
};

/** A non-owning input buffer over `s` (GSSAPI takes non-const pointers but does not write). */
inline gss_buffer_desc input_buffer(std::string_view s) noexcept {
  return gss_buffer_desc{s.size(), const_cast<char*>(s.data())};
}
inline gss_buffer_desc input_buffer(std::span<const unsigned char> s) noexcept {
  return gss_buffer_desc{s.size(), const_cast<unsigned char*>(s.data())};
}

}  // namespace cbagate::gss
