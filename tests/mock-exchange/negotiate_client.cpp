// mock-negotiate-client: a test initiator that prints one base64 Negotiate token, optionally with
// RFC 5929 tls-server-end-point channel bindings (curl sends none, so this is how the tests show
// that the mock's channel-binding check accepts correct bindings and refuses wrong ones).
//
//   mock-negotiate-client --service HTTP@exchange.lab.test [--cb-hash HEX] [--mech spnego|krb5]
//
// The credential is the default ccache (KRB5CCNAME). Exit 0 and the token on stdout; else 1.
#include "negotiate.hpp"

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

namespace {

std::string status_text(OM_uint32 code, int type) {
  std::string out;
  OM_uint32 more = 0;
  do {
    OM_uint32 m = 0;
    gss_buffer_desc t = GSS_C_EMPTY_BUFFER;
    if (GSS_ERROR(gss_display_status(&m, code, type, GSS_C_NO_OID, &more, &t))) break;
    out.append(static_cast<const char*>(t.value), t.length);
    out += "; ";
    gss_release_buffer(&m, &t);
  } while (more != 0);
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string service;
  std::string cb_hex;
  std::string mech_name = "spnego";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view a = argv[i];
    if (a == "--service") {
      service = argv[i + 1];
    } else if (a == "--cb-hash") {
      cb_hex = argv[i + 1];
    } else if (a == "--mech") {
      mech_name = argv[i + 1];
    } else {
      std::fprintf(stderr, "mock-negotiate-client: unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (service.empty() || cb_hex.size() % 2 != 0 || (mech_name != "spnego" && mech_name != "krb5")) {
    std::fputs("usage: mock-negotiate-client --service SVC@HOST [--cb-hash HEX] [--mech spnego|krb5]\n",
               stderr);
    return 2;
  }
  std::string app_data;
  if (!cb_hex.empty()) {
    app_data = "tls-server-end-point:";
    for (std::size_t i = 0; i < cb_hex.size(); i += 2) {
      int hi = hex_value(cb_hex[i]);
      int lo = hex_value(cb_hex[i + 1]);
      if (hi < 0 || lo < 0) {
        std::fputs("mock-negotiate-client: --cb-hash is not hex\n", stderr);
        return 2;
      }
      app_data += static_cast<char>(hi * 16 + lo);
    }
  }
  static gss_OID_desc spnego{6, const_cast<char*>("\x2b\x06\x01\x05\x05\x02")};
  gss_OID mech = mech_name == "spnego" ? &spnego : const_cast<gss_OID>(gss_mech_krb5);

  OM_uint32 minor = 0;
  gss_name_t target = GSS_C_NO_NAME;
  gss_buffer_desc nb{service.size(), service.data()};
  OM_uint32 major = gss_import_name(&minor, &nb, GSS_C_NT_HOSTBASED_SERVICE, &target);
  if (GSS_ERROR(major)) {
    std::fprintf(stderr, "gss_import_name: %s\n", status_text(major, GSS_C_GSS_CODE).c_str());
    return 1;
  }
  gss_channel_bindings_struct cb{};
  gss_channel_bindings_t bindings = GSS_C_NO_CHANNEL_BINDINGS;
  if (!app_data.empty()) {
    cb.initiator_addrtype = GSS_C_AF_UNSPEC;
    cb.acceptor_addrtype = GSS_C_AF_UNSPEC;
    cb.application_data.length = app_data.size();
    cb.application_data.value = app_data.data();
    bindings = &cb;
  }
  gss_ctx_id_t ctx = GSS_C_NO_CONTEXT;
  gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
  major = gss_init_sec_context(&minor, GSS_C_NO_CREDENTIAL, &ctx, target, mech,
                               GSS_C_MUTUAL_FLAG | GSS_C_REPLAY_FLAG, 0, bindings,
                               GSS_C_NO_BUFFER, nullptr, &out, nullptr, nullptr);
  int rc = 0;
  if (GSS_ERROR(major)) {
    std::fprintf(stderr, "gss_init_sec_context: %s%s\n", status_text(major, GSS_C_GSS_CODE).c_str(),
                 status_text(minor, GSS_C_MECH_CODE).c_str());
    rc = 1;
  } else {
    std::string token(static_cast<const char*>(out.value), out.length);
    std::printf("%s\n", cbagate::mock::base64_encode(token).c_str());
  }
  gss_release_buffer(&minor, &out);
  if (ctx != GSS_C_NO_CONTEXT) gss_delete_sec_context(&minor, &ctx, GSS_C_NO_BUFFER);
  gss_release_name(&minor, &target);
  return rc;
}
