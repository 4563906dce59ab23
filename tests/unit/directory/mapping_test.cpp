#include "directory/mapping.hpp"

#include <doctest/doctest.h>

#include <ldap.h>

#include <string>
#include <vector>

using namespace cbagate::directory;

namespace {

// OpenLDAP's own escaper, as the reference for ours.
std::string openldap_escape(const std::string& value) {
  berval in{};
  in.bv_val = const_cast<char*>(value.data());
  in.bv_len = value.size();
  berval out{};
  REQUIRE(ldap_bv2escaped_filter_value(&in, &out) == 0);
  std::string s(out.bv_val, out.bv_len);
  ber_memfree(out.bv_val);
  return s;
}

// alice of the reference lab: serial 2B0000000011AC0000000012 (Microsoft's KB5014754 example).
certificate_view alice() {
  certificate_view c;
  c.upn = "alice@lab.test";
  c.issuer_dn = "DC=test,DC=lab,CN=Lab Issuing CA";
  c.subject_dn = "DC=test,DC=lab,CN=alice";
  c.serial = "2B0000000011AC0000000012";
  c.ski = "0A1B2C3D4E5F60718293A4B5C6D7E8F901234567";
  c.sha1 = "00112233445566778899AABBCCDDEEFF00112233";
  return c;
}

}  // namespace

TEST_CASE("escape_filter_value: RFC 4515 specials, controls, non-ASCII, as OpenLDAP does") {
  CHECK(escape_filter_value("*)(userPrincipalName=*") == "\\2A\\29\\28userPrincipalName=\\2A");
  CHECK(escape_filter_value(std::string("a\0b\\c", 5)) == "a\\00b\\5Cc");
  CHECK(escape_filter_value("zo\xC3\xAB@lab.test") == "zo\\C3\\AB@lab.test");
  for (const std::string& v : {std::string("*)(userPrincipalName=*"), std::string("plain@lab.test"),
                              std::string("zo\xC3\xAB\x01\x7F(x)"), std::string("a\\b*c")}) {
    CAPTURE(v);
    // Same bytes up to hex case.
    std::string ours = escape_filter_value(v), theirs = openldap_escape(v);
    for (auto* s : {&ours, &theirs})
      for (char& c : *s)
        if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 32);
    CHECK(ours == theirs);
  }
  CHECK(upn_filter("*)(userPrincipalName=*") ==
        "(&(sAMAccountType=805306368)(userPrincipalName=\\2A\\29\\28userPrincipalName=\\2A))");
}

TEST_CASE("strong_strings: Microsoft's byte order for <SR>") {
  const auto s = strong_strings(alice());
  REQUIRE(s.size() == 3);
  CHECK(s[0] == "X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<SR>1200000000AC11000000002B");
  CHECK(s[1] == "X509:<SKI>0A1B2C3D4E5F60718293A4B5C6D7E8F901234567");
  CHECK(s[2] == "X509:<SHA1-PUKEY>00112233445566778899AABBCCDDEEFF00112233");
  auto no_ski = alice();
  no_ski.ski.clear();
  CHECK(strong_strings(no_ski).size() == 2);
  const auto w = weak_strings(alice());
  CHECK(w[0] == "X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<S>DC=test,DC=lab,CN=alice");
}

TEST_CASE("parse_alt_security_identity: forms and strength") {
  auto a = parse_alt_security_identity("X509:<I>DC=test,CN=CA<SR>0102");
  CHECK(a.valid);
  CHECK(a.strong);
  CHECK(*a.issuer == "DC=test,CN=CA");
  CHECK(*a.serial == "0102");
  CHECK(parse_alt_security_identity("X509:<SKI>ab").strong);
  CHECK(parse_alt_security_identity("X509:<SHA1-PUKEY>ab").strong);
  CHECK(parse_alt_security_identity("X509: <RFC822>a@b").valid);  // text before '<' ignored
  for (const char* weak : {"X509:<I>DC=x<S>CN=y", "X509:<S>CN=y", "X509:<RFC822>a@b",
                           "X509:<I>DC=x<SID>S-1-5-21-1-2-3-500"}) {
    CAPTURE(weak);
    const auto m = parse_alt_security_identity(weak);
    CHECK(m.valid);
    CHECK_FALSE(m.strong);
  }
  for (const char* bad : {"Kerberos:alice@LAB.TEST", "X509:", "X509:<SR>", "X509:<sr>0102",
                          "X509:<SKI>ab<SKI>cd", "X509:<FOO>x", "X509:<SKI", "x509:<SKI>ab"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_alt_security_identity(bad).valid);
    CHECK_FALSE(parse_alt_security_identity(bad).strong);
  }
}

TEST_CASE("strong_match: every tag must match the certificate") {
  const auto c = alice();
  auto match = [&](const char* v) { return strong_match(parse_alt_security_identity(v), c); };
  CHECK(match("X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<SR>1200000000AC11000000002B"));
  CHECK(match("X509:<I>dc=test, DC=lab, CN=lab issuing ca<SR>1200000000ac11000000002b"));
  CHECK(match("X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<SR>1200000000AC11000000002B00"));
  // The serial as printed (not reversed) is another number.
  CHECK_FALSE(match("X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<SR>2B0000000011AC0000000012"));
  // Same serial, another issuer (a rogue CA with the same name order differs here).
  CHECK_FALSE(match("X509:<I>DC=test,DC=lab,CN=Rogue CA<SR>1200000000AC11000000002B"));
  // RFC 4514 order of the issuer is not AD's order.
  CHECK_FALSE(match("X509:<I>CN=Lab Issuing CA,DC=lab,DC=test<SR>1200000000AC11000000002B"));
  CHECK(match("X509:<SKI>0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"));
  CHECK_FALSE(match("X509:<SKI>0A1B2C3D"));
  CHECK(match("X509:<SHA1-PUKEY>00112233445566778899AABBCCDDEEFF00112233"));
  CHECK_FALSE(match("X509:<SHA1-PUKEY>00112233445566778899AABBCCDDEEFF00112234"));
  // Weak forms never match, even when true.
  CHECK_FALSE(match("X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<S>DC=test,DC=lab,CN=alice"));
  CHECK_FALSE(match("X509:<S>DC=test,DC=lab,CN=alice"));
  // A strong form with an extra subject that does not match.
  CHECK_FALSE(match("X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<S>CN=bob<SR>1200000000AC11000000002B"));
  auto no_ski = c;
  no_ski.ski.clear();
  CHECK_FALSE(strong_match(parse_alt_security_identity("X509:<SKI>00"), no_ski));
}

TEST_CASE("serial with the high bit set: trailing 00 sign byte tolerated") {
  certificate_view c = alice();
  c.serial = "81236B9D39CE928D4AB6506D86CADCFF";
  auto match = [&](const char* v) { return strong_match(parse_alt_security_identity(v), c); };
  const std::string prefix = "X509:<I>DC=test,DC=lab,CN=Lab Issuing CA<SR>";
  CHECK(match((prefix + "FFDCCA866D50B64A8D92CE399D6B2381").c_str()));
  CHECK(match((prefix + "ffdcca866d50b64a8d92ce399d6b238100").c_str()));
  CHECK_FALSE(match((prefix + "81236B9D39CE928D4AB6506D86CADCFF").c_str()));
  CHECK(strong_strings(c)[0] == prefix + "FFDCCA866D50B64A8D92CE399D6B2381");
}

TEST_CASE("SIDs: string <-> binary, strict") {
  // alice's objectSid of the reference lab ([MS-DTYP] 2.4.2.2, sub-authorities little-endian).
  const std::vector<std::uint8_t> bin = {0x01, 0x05, 0, 0, 0, 0, 0, 0x05, 0x15, 0, 0, 0,
                                         0xdc, 0xf4, 0xdc, 0x3b, 0x83, 0x3d, 0x2b, 0x46,
                                         0x82, 0x8b, 0xa6, 0x28, 0x4f, 0x04, 0, 0};
  const auto parsed = parse_sid("S-1-5-21-1004336348-1177238915-682003330-1103");
  REQUIRE(parsed.has_value());
  CHECK(*parsed == bin);
  CHECK(sid_to_string(bin) == "S-1-5-21-1004336348-1177238915-682003330-1103");
  for (const char* bad : {"", "S-1", "S-1-5", "S-2-5-21", "S-1-5-", "S-1-5-21-01", "s-1-5-21",
                          "S-1-5-21-4294967296", "S-1-5-21-x", "S-1-5-21--3", " S-1-5-21",
                          "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_sid(bad).has_value());
  }
  CHECK(sid_to_string(std::vector<std::uint8_t>{1, 2, 0}).empty());
}
