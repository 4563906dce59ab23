#pragma once
// ActiveSync pieces of the mock Exchange: the request query (plain and base64 forms, MS-ASHTTP
// 2.2.1.1.1), the command table, WBXML decoding through libwbxml2 and a tiny WBXML writer for
// the few responses whose values vary (reference: shared/reference/activesync/README.md §1-3).
// Everything here is a pure function on values: no sockets, no globals.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cbagate::mock {

/** The ActiveSync request parameters, from either query form. */
struct eas_query {
  std::string form;                     ///< "plain" or "base64"
  std::string cmd;                      ///< command name ("" when absent or unknown code)
  std::string user;                     ///< User parameter ("" when absent)
  std::string device_id;                ///< DeviceId (base64 form: as-is when printable, else hex)
  std::string device_type;              ///< DeviceType
  std::optional<std::string> version;   ///< base64 form only: "14.1" etc.
  std::optional<std::uint32_t> policy_key;  ///< base64 form only
  std::optional<std::uint16_t> locale;  ///< base64 form only (LCID)
  std::vector<std::pair<std::string, std::string>> params;  ///< every other parameter, in order
};

/**
 * Parses the query string of `/Microsoft-Server-ActiveSync?<query>` (without the '?').
 * A query with '&' or an inner '=' is the plain form (percent-decoded, keys Cmd/User/DeviceId/
 * DeviceType matched case-insensitively); otherwise it is decoded as the base64 form, and falls
 * back to the plain form when it is not valid base64 of the binary layout.
 * @return the parameters; fields absent from the request stay empty.
 */
[[nodiscard]] eas_query parse_eas_query(std::string_view query);

/** The command name for a base64-form command code, or "" when the code is unknown. */
[[nodiscard]] std::string_view eas_command_name(unsigned code);

/** True when `cmd` is an ActiveSync command name Exchange knows (case-sensitive, as sent). */
[[nodiscard]] bool eas_known_command(std::string_view cmd);

/** Standard base64 (RFC 4648 §4) decoding, padding optional; nullopt on any invalid byte. */
[[nodiscard]] std::optional<std::string> base64_decode(std::string_view in);

/** Percent-decoding of a query component ('+' is a space); invalid escapes are kept verbatim. */
[[nodiscard]] std::string percent_decode(std::string_view in);

/** The outcome of decoding a WBXML body. */
struct wbxml_decoded {
  std::string xml;    ///< compact XML (empty on error)
  std::string root;   ///< name of the root element
  std::string error;  ///< libwbxml's message, "" on success
};

/**
 * Decodes an ActiveSync WBXML document with libwbxml2 (language ACTIVESYNC, compact XML).
 * Never throws and never crashes on malformed input; the error is reported in the result.
 * Thread-safe (no shared state).
 */
[[nodiscard]] wbxml_decoded decode_wbxml(std::string_view wbxml);

/**
 * The text of the first element named `name` (any namespace prefix-free spelling, with or
 * without attributes) in compact XML, or nullopt. `<Name/>` gives "".
 */
[[nodiscard]] std::optional<std::string> xml_element_text(std::string_view xml,
                                                          std::string_view name);

/** How many elements named `name` the XML contains (open or empty tags). */
[[nodiscard]] std::size_t xml_element_count(std::string_view xml, std::string_view name);

/**
 * A minimal WBXML 1.3 writer for ActiveSync responses: header `03 01 6A 00`, SWITCH_PAGE when
 * the code page changes, STR_I text, END. Tokens are given without the 0x40 content bit.
 */
class wbxml_writer {
 public:
  wbxml_writer();
  /** Opens an element with content on code page `page`. */
  wbxml_writer& open(unsigned page, unsigned token);
  /** Writes inline text (STR_I). */
  wbxml_writer& text(std::string_view s);
  /** Closes the innermost open element. */
  wbxml_writer& close();
  /** open + text + close. */
  wbxml_writer& leaf(unsigned page, unsigned token, std::string_view s);
  /** The document so far. */
  [[nodiscard]] const std::string& bytes() const noexcept { return out_; }

 private:
  std::string out_;
  unsigned page_ = 0;
};

/** `<Ping><Status>s</Status>[<HeartbeatInterval>hb</HeartbeatInterval>][<MaxFolders>..]</Ping>` */
[[nodiscard]] std::string ping_response(unsigned status, std::optional<unsigned> heartbeat = {},
                                        std::optional<unsigned> max_folders = {});

/** `<Sync><Collections><Collection><SyncKey/><CollectionId/><Status/></Collection>...` */
[[nodiscard]] std::string sync_response(std::string_view sync_key, std::string_view collection_id,
                                        unsigned status);

}  // namespace cbagate::mock
