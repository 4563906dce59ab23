#include "config/schema.hpp"

#include "config/load.hpp"
#include "config_fixture.hpp"

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <sstream>

using namespace config_test;
using namespace cbagate::config;

namespace {

std::string_view parent_key(std::string_view key) {
  const std::size_t dot = key.rfind('.');
  return dot == std::string_view::npos ? std::string_view() : key.substr(0, dot);
}

std::string_view leaf_key(std::string_view key) { return key.substr(key.rfind('.') + 1); }

const fs::path reference_file = fs::path(CBAGATE_SOURCE_DIR) / "config" / "cbagate.toml";
const fs::path lab_file = fs::path(CBAGATE_SOURCE_DIR) / "config" / "lab.toml";

// What config/cbagate.toml documents: "key = value" lines (set) and "#key = value" lines (left at
// the default shown), under "[table]" / "[[table]]" headers that may be commented the same way.
// Prose comments start with "# ". Returns key -> (value text, commented out?) of the first
// occurrence of each key.
struct documented {
  std::string value;
  bool commented = false;
};
std::map<std::string, documented> documented_keys(const std::string& text) {
  std::map<std::string, documented> keys;
  std::string table;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::string_view l = line;
    bool commented = false;
    if (!l.empty() && l.front() == '#') {
      l.remove_prefix(1);
      if (l.empty() || l.front() == ' ') continue;  // prose
      commented = true;
    }
    if (l.empty()) continue;
    if (l.front() == '[') {
      const bool array = l.substr(0, 2) == "[[";
      const std::size_t open = array ? 2 : 1;
      const std::size_t close = l.find(']');
      REQUIRE_MESSAGE(close != std::string_view::npos, line);
      table = std::string(l.substr(open, close - open));
      keys.emplace(table, documented{"", commented});
      continue;
    }
    const std::size_t eq = l.find(" = ");
    REQUIRE_MESSAGE(eq != std::string_view::npos, "neither a key, a table nor prose: " << line);
    std::string value(l.substr(eq + 3));
    if (const std::size_t hash = value.find("  #"); hash != std::string::npos) value.resize(hash);
    const std::string key = table.empty() ? std::string(l.substr(0, eq))
                                          : table + "." + std::string(l.substr(0, eq));
    keys.emplace(key, documented{value, commented});
  }
  return keys;
}

// A configuration that writes every key that has a default as its default_text, plus the
// required keys, generated from the schema rows.
std::string all_defaults_config() {
  const std::map<std::string_view, std::string_view> required = {
      {"server.listen", "[\"127.0.0.1:0\"]"},
      {"tls.certificate", "\"server-chain.pem\""},
      {"tls.private_key", "\"server.key\""},
      {"tls.client_ca", "\"client-roots.pem\""},
      {"upstream.servers", "[\"http://127.0.0.1:8080\"]"},
      {"route.prefix", "\"/owa\""},
  };
  std::string out;
  for (const schema_row& row : schema()) {
    if (row.key == "tls.sni" || parent_key(row.key) == "tls.sni") continue;  // no defaults there
    if (row.kind == value_kind::table) {
      out += "\n[" + std::string(row.key) + "]\n";
    } else if (row.kind == value_kind::table_array) {
      out += "\n[[" + std::string(row.key) + "]]\n";
    } else if (const auto it = required.find(row.key); it != required.end()) {
      out += std::string(leaf_key(row.key)) + " = " + std::string(it->second) + "\n";
    } else if (!row.default_text.empty()) {
      out += std::string(leaf_key(row.key)) + " = " + std::string(row.default_text) + "\n";
    }
  }
  return out;
}

}  // namespace

TEST_CASE("schema: every row is documented and well-formed") {
  std::set<std::string_view> seen;
  for (const schema_row& row : schema()) {
    CAPTURE(row.key);
    CHECK(seen.insert(row.key).second);
    CHECK(row.doc.size() > 10);
    CHECK(find_row(row.key) == &row);
    const std::string_view parent = parent_key(row.key);
    if (!parent.empty()) {
      const schema_row* p = find_row(parent);
      REQUIRE(p != nullptr);
      CHECK((p->kind == value_kind::table || p->kind == value_kind::table_array));
      CHECK(p < &row);  // parents come first
    } else {
      CHECK((row.kind == value_kind::table || row.kind == value_kind::table_array));
    }
    const bool has_apply = row.apply != nullptr;
    CHECK(has_apply == (row.kind != value_kind::table));
    if (row.kind == value_kind::integer) CHECK(row.min <= row.max);
    if (row.kind == value_kind::seconds || row.kind == value_kind::seconds_or_zero ||
        row.kind == value_kind::duration || row.kind == value_kind::duration_or_zero) {
      CHECK(row.max > 0);
    }
    if (row.need != presence::optional) CHECK(row.default_text.empty());
    if (!row.choices.empty() && row.kind == value_kind::string && !row.default_text.empty()) {
      bool found = false;
      for (const std::string_view c : row.choices) found |= "\"" + std::string(c) + "\"" == row.default_text;
      CHECK_MESSAGE(found, "default is not one of the choices");
    }
    CHECK_FALSE(type_name(row).empty());
  }
  CHECK(find_row("server.nope") == nullptr);
  // identity.mode decides whether the kerberos keys are required: it must come first.
  CHECK(find_row("identity.mode") < find_row("kerberos.keytab"));
}

TEST_CASE("schema: each default_text is the default of the snapshot field") {
  temp_dir dir;
  write_server_files(dir);
  const std::string text = all_defaults_config();
  INFO(text);
  const auto explicit_defaults = load(text, dir);
  for (const auto& d : explicit_defaults.errors) INFO(d.to_string());
  REQUIRE(explicit_defaults.ok());
  const auto implicit_defaults = load(minimal, dir);
  REQUIRE(implicit_defaults.ok());
  CHECK(*explicit_defaults.value == *implicit_defaults.value);
}

TEST_CASE("schema: config/cbagate.toml documents exactly the keys of the schema") {
  const auto keys = documented_keys(read_text(reference_file));
  for (const schema_row& row : schema()) {
    CHECK_MESSAGE(keys.count(std::string(row.key)) == 1,
                  "not in config/cbagate.toml: " << row.key);
  }
  for (const auto& [key, doc] : keys) {
    CHECK_MESSAGE(find_row(key) != nullptr, "in config/cbagate.toml but not a key: " << key);
  }
  // "#key = value" means "left at the default shown": it must be the schema's default.
  for (const auto& [key, doc] : keys) {
    const schema_row* row = find_row(key);
    if (row == nullptr || !doc.commented || row->default_text.empty()) continue;
    CAPTURE(key);
    CHECK(doc.value == row->default_text);
  }
}

TEST_CASE("schema: config/cbagate.toml loads next to the files it names") {
  temp_dir dir;
  write_server_files(dir);
  const std::string path = dir.write("cbagate.toml", read_text(reference_file));
  const auto r = load_file(path);
  for (const auto& d : r.errors) INFO(d.to_string());
  REQUIRE(r.ok());
  const snapshot& s = *r.value;
  CHECK(s.tls.certificate == dir.str() + "/server-chain.pem");
  REQUIRE(s.routes.size() == 13);
  // "/" redirects to OWA; Exchange's health pages are public for load balancers (issue 13).
  CHECK(s.routes[9].prefix == "/");
  CHECK(s.routes[9].redirect == "/owa/");
  CHECK(s.routes[9].client_cert == route_cert_policy::none);
  for (std::size_t i = 10; i < 13; ++i) {
    CHECK(s.routes[i].prefix.ends_with("/healthcheck.htm"));
    CHECK(s.routes[i].client_cert == route_cert_policy::none);
    CHECK(s.routes[i].redirect.empty());
  }
  CHECK(s.routes[0].prefix == "/owa");
  CHECK(s.routes[1].prefix == "/ecp");
  CHECK(s.routes[2].prefix == "/Microsoft-Server-ActiveSync");
  for (std::size_t i = 0; i < 3; ++i) CHECK(s.routes[i].client_cert == route_cert_policy::require);
  // The rest of the namespace (issue 10): Outlook brings its own credentials, which pass.
  const char* outlook[] = {"/Autodiscover", "/EWS", "/mapi", "/rpc", "/OAB"};
  for (std::size_t i = 0; i < 5; ++i) {
    CAPTURE(outlook[i]);
    CHECK(s.routes[3 + i].prefix == outlook[i]);
    CHECK(s.routes[3 + i].client_cert == route_cert_policy::none);
    CHECK_FALSE(s.routes[3 + i].pass_authorization.has_value());
  }
  CHECK(s.routes[6].methods ==
        std::vector<std::string>{"GET", "HEAD", "RPC_IN_DATA", "RPC_OUT_DATA"});
  CHECK(s.routes[8].prefix == "/PowerShell");
  CHECK(s.routes[8].client_cert == route_cert_policy::require);
  CHECK(s.identity.mode == identity_mode::header);
  CHECK(s.identity.header == "X-Client-UPN");

  SUBCASE("and fails, naming the file, when they are missing") {
    fs::remove(dir.path() / "server.key");
    const auto bad = load_file(path);
    REQUIRE(bad.errors.size() == 1);
    CHECK(bad.errors[0].key == "tls.private_key");
    CHECK(bad.errors[0].file == path);
  }
}

TEST_CASE("schema: config/lab.toml loads against the lab's PKI layout") {
  temp_dir dir;
  dir.write("config/lab.toml", read_text(lab_file));
  for (const char* f : {"server-chain.pem", "server.key", "client-roots.pem",
                        "client-intermediates.pem", "crl/issuing.crl.pem", "crl/root.crl.pem"}) {
    dir.write(std::string(".lab/pki/") + f);
  }
  const auto r = load_file(dir.str() + "/config/lab.toml");
  for (const auto& d : r.errors) INFO(d.to_string());
  REQUIRE(r.ok());
  const snapshot& s = *r.value;
  REQUIRE(s.server.listen.size() == 1);
  CHECK(s.server.listen[0] == endpoint{"127.0.0.1", 8443});
  CHECK(s.server.admin_listen == "127.0.0.1:9100");
  CHECK(s.tls.certificate == dir.str() + "/.lab/pki/server-chain.pem");
  // Both CRLs: with CRL checking on, a CA of the chain without a CRL means "status unknown".
  CHECK(s.tls.crl == std::vector<std::string>{dir.str() + "/.lab/pki/crl/issuing.crl.pem",
                                              dir.str() + "/.lab/pki/crl/root.crl.pem"});
  CHECK(s.upstream.servers.at(0).port == 8080);
  CHECK(s.access_log.path == "-");
  REQUIRE(s.routes.size() == 10);
  CHECK(s.routes[3].client_cert == route_cert_policy::none);
  CHECK(s.routes[7].prefix == "/rpc");
  CHECK(s.routes[9].prefix == "/PowerShell");
}

TEST_CASE("schema: the reference and lab files load with the PKI that certs-dev/make-pki makes") {
  const fs::path pki = CBAGATE_TEST_PKI;
  REQUIRE_MESSAGE(fs::exists(pki / "server-chain.pem"),
                  "no dev PKI in " << pki << " (made by the ctest fixture pki_setup)");
  const auto reference = load_string(read_text(reference_file), "cbagate.toml", pki.string());
  for (const auto& d : reference.errors) INFO(d.to_string());
  CHECK(reference.ok());

  // lab.toml names ../.lab/pki/...: give it a config/ folder whose ../.lab/pki is the dev PKI.
  temp_dir dir;
  fs::create_directories(dir.path() / "config");
  fs::create_directories(dir.path() / ".lab");
  fs::create_directory_symlink(pki, dir.path() / ".lab" / "pki");
  const auto lab = load_string(read_text(lab_file), "lab.toml", (dir.path() / "config").string());
  for (const auto& d : lab.errors) INFO(d.to_string());
  CHECK(lab.ok());
}

TEST_CASE("schema: print_schema lists every key with its type, default and doc") {
  std::ostringstream text;
  print_schema(text);
  std::ostringstream markdown;
  print_schema(markdown, schema_format::markdown);
  for (const schema_row& row : schema()) {
    CAPTURE(row.key);
    if (row.kind == value_kind::table) {
      CHECK(text.str().find("\n[" + std::string(row.key) + "]") != std::string::npos);
      continue;
    }
    if (row.kind == value_kind::table_array) {
      CHECK(text.str().find("\n[[" + std::string(row.key) + "]]") != std::string::npos);
      continue;
    }
    std::string head = "  " + std::string(row.key) + "  (" + std::string(type_name(row));
    if (!row.default_text.empty()) head += ", default " + std::string(row.default_text);
    CHECK(text.str().find(head) != std::string::npos);
    // The first words of the doc string (wrapping may split later ones).
    const std::string_view doc = row.doc.substr(0, row.doc.find(' ', 12));
    CHECK(text.str().find(doc) != std::string::npos);
    CHECK(markdown.str().find("| `" + std::string(leaf_key(row.key)) + "` | " +
                              std::string(type_name(row))) != std::string::npos);
  }
  CHECK(text.str().find("0..1024") != std::string::npos);            // server.threads
  CHECK(text.str().find("one of \"header\", \"kerberos\"") != std::string::npos);
  CHECK(text.str().find("required in kerberos mode") != std::string::npos);
}

TEST_CASE("schema: constraint_text states ranges, choices and the free text") {
  CHECK(constraint_text(*find_row("server.threads")) == "0..1024");
  CHECK(constraint_text(*find_row("identity.mode")) == "one of \"header\", \"kerberos\"");
  CHECK(constraint_text(*find_row("auth.upn_sources")) ==
        "at least 1, no duplicates; each one of \"san\", \"subject\", \"directory\"");
  CHECK(constraint_text(*find_row("timeouts.idle")) == "> 0, at most 86400");
  CHECK(constraint_text(*find_row("route.response_timeout")) == "0..86400");
}

TEST_CASE("schema: config/lab-scale.toml (compose profile scale) loads against the lab's PKI") {
  temp_dir dir;
  dir.write("config/lab-scale.toml",
            read_text(fs::path(CBAGATE_SOURCE_DIR) / "config" / "lab-scale.toml"));
  for (const char* f : {"server-chain.pem", "server.key", "client-roots.pem",
                        "client-intermediates.pem", "crl/issuing.crl.pem", "crl/root.crl.pem",
                        "ticket.keys"}) {
    dir.write(std::string(".lab/pki/") + f);
  }
  const auto r = load_file(dir.str() + "/config/lab-scale.toml");
  for (const auto& d : r.errors) INFO(d.to_string());
  REQUIRE(r.ok());
  const snapshot& s = *r.value;
  CHECK(s.server.proxy_protocol);
  REQUIRE(s.server.proxy_protocol_from.size() == 1);
  CHECK(s.server.proxy_protocol_from[0].text == "172.31.250.10");
  CHECK(s.tls.ticket_keys == dir.str() + "/.lab/pki/ticket.keys");
  CHECK(s.timeouts.drain_notice.count() == 3);
}
