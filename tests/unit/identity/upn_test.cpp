#include "identity/upn.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "test_certs.hpp"

using namespace std::string_literals;
using cbagate::identity::extract_upn_der;
using cbagate::identity::rejection;
using cbagate::identity::upn_options;
using cbagate::identity::upn_result;
namespace t = cbagate::identity::test;

namespace {

// A self-signed leaf (fresh EC key) with the given SAN UPN values; no chain needed here.
std::vector<unsigned char> cert_with(const t::cert_spec& spec) {
  auto key = t::make_key();
  auto cert = t::make_cert(spec, key.get());
  return t::der_of(cert.get());
}

upn_result upn_of(const t::cert_spec& spec, const upn_options& options = {}) {
  return extract_upn_der(cert_with(spec), options);
}

t::cert_spec san_upn(std::string bytes, int type = V_ASN1_UTF8STRING) {
  t::cert_spec spec;
  spec.upns.push_back({type, std::move(bytes)});
  return spec;
}

t::cert_spec subject_cn(std::string bytes, int type = V_ASN1_UTF8STRING) {
  t::cert_spec spec;
  spec.subject = {{NID_organizationName, V_ASN1_UTF8STRING, "lab"}, {NID_commonName, type, bytes}};
  return spec;
}

}  // namespace

TEST_CASE("upn: accepts one UTF8String UPN byte for byte") {
  SUBCASE("ascii") {
    const upn_result r = upn_of(san_upn("alice@lab.test"));
    CHECK(r.reason == rejection::none);
    CHECK(r.upn == "alice@lab.test");
    CHECK(r.detail.empty());
  }
  SUBCASE("case is kept") {
    CHECK(upn_of(san_upn("Alice.Example@LAB.Test")).upn == "Alice.Example@LAB.Test");
  }
  SUBCASE("non-ascii UTF-8") {
    const upn_result r = upn_of(san_upn("j\xC3\xBCrgen@lab.test"));
    CHECK(r.reason == rejection::none);
    CHECK(r.upn == "j\xC3\xBCrgen@lab.test");
  }
  SUBCASE("beside an rfc822Name") {
    t::cert_spec spec = san_upn("carol@lab.test");
    spec.emails = {"carol@mail.lab.test"};
    CHECK(upn_of(spec).upn == "carol@lab.test");
  }
}

TEST_CASE("upn: rejects a value that is not UTF8String") {
  SUBCASE("BMPString") {
    const upn_result r = upn_of(san_upn("\0a\0l\0i\0c\0e\0@\0l\0a\0b"s, V_ASN1_BMPSTRING));
    CHECK(r.reason == rejection::bad_upn_encoding);
    CHECK(r.detail.find("BMPString") != std::string::npos);
  }
  SUBCASE("IA5String") {
    const upn_result r = upn_of(san_upn("alice@lab.test", V_ASN1_IA5STRING));
    CHECK(r.reason == rejection::bad_upn_encoding);
    CHECK(r.detail.find("IA5String") != std::string::npos);
  }
  SUBCASE("OCTET STRING") {
    CHECK(upn_of(san_upn("alice@lab.test", V_ASN1_OCTET_STRING)).reason ==
          rejection::bad_upn_encoding);
  }
}

TEST_CASE("upn: rejects control characters") {
  SUBCASE("NUL") { CHECK(upn_of(san_upn("alice\0@lab.test"s)).reason == rejection::bad_upn_encoding); }
  SUBCASE("NUL truncation trick") {
    CHECK(upn_of(san_upn("admin@lab.test\0.evil.test"s)).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("DEL") { CHECK(upn_of(san_upn("alice\x7F@lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("CR") { CHECK(upn_of(san_upn("alice\r@lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("LF") {
    const upn_result r = upn_of(san_upn("eve\nadmin@lab.test"));
    CHECK(r.reason == rejection::bad_upn_encoding);
    CHECK(r.detail.find("U+000A at byte 3") != std::string::npos);
    CHECK(r.detail.find('\n') == std::string::npos);  // the detail is log-safe
  }
  SUBCASE("TAB") { CHECK(upn_of(san_upn("alice\t@lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("C1 NEL U+0085") {
    CHECK(upn_of(san_upn("alice\xC2\x85@lab.test")).reason == rejection::bad_upn_encoding);
  }
}

TEST_CASE("upn: rejects whitespace and invisible characters") {
  SUBCASE("space") { CHECK(upn_of(san_upn("alice @lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("no-break space") {
    CHECK(upn_of(san_upn("alice\xC2\xA0@lab.test")).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("zero width space") {
    CHECK(upn_of(san_upn("ali\xE2\x80\x8B" "ce@lab.test")).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("right-to-left override") {
    CHECK(upn_of(san_upn("alice\xE2\x80\xAE@lab.test")).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("byte order mark") {
    CHECK(upn_of(san_upn("\xEF\xBB\xBF" "alice@lab.test")).reason == rejection::bad_upn_encoding);
  }
}

TEST_CASE("upn: rejects invalid UTF-8") {
  SUBCASE("truncated sequence") {
    CHECK(upn_of(san_upn("al\xC3@lab.test")).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("bad continuation") {
    const upn_result r = upn_of(san_upn("al\xC3\x28ice@lab.test"));
    CHECK(r.reason == rejection::bad_upn_encoding);
    CHECK(r.detail.find("UTF-8 at byte 2") != std::string::npos);
  }
  SUBCASE("overlong slash") { CHECK(upn_of(san_upn("a\xC0\xAF@lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("overlong NUL") { CHECK(upn_of(san_upn("a\xC0\x80@lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("surrogate") {
    CHECK(upn_of(san_upn("a\xED\xA0\x80@lab.test")).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("above U+10FFFF") {
    CHECK(upn_of(san_upn("a\xF4\x90\x80\x80@lab.test")).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("lone continuation") { CHECK(upn_of(san_upn("a\x80@lab.test")).reason == rejection::bad_upn_encoding); }
  SUBCASE("0xFF") { CHECK(upn_of(san_upn("a\xFF@lab.test")).reason == rejection::bad_upn_encoding); }
}

TEST_CASE("upn: enforces the length limit") {
  const std::string domain = "@lab.test";
  SUBCASE("256 bytes is accepted") {
    const std::string upn = std::string(256 - domain.size(), 'a') + domain;
    CHECK(upn_of(san_upn(upn)).upn == upn);
  }
  SUBCASE("257 bytes is rejected") {
    const upn_result r = upn_of(san_upn(std::string(257 - domain.size(), 'a') + domain));
    CHECK(r.reason == rejection::bad_upn_encoding);
    CHECK(r.detail.find("257 bytes, limit 256") != std::string::npos);
  }
  SUBCASE("a configured limit") {
    upn_options options;
    options.max_length = 8;
    CHECK(upn_of(san_upn("ab@c.d"), options).reason == rejection::none);
    CHECK(upn_of(san_upn("alice@lab.test"), options).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("empty") {
    const upn_result r = upn_of(san_upn(""));
    CHECK(r.reason == rejection::bad_upn_encoding);
    CHECK(r.detail.find("empty") != std::string::npos);
  }
}

TEST_CASE("upn: requires the form local@domain") {
  CHECK(upn_of(san_upn("alice")).reason == rejection::bad_upn_encoding);
  CHECK(upn_of(san_upn("alice@lab@test")).reason == rejection::bad_upn_encoding);
  CHECK(upn_of(san_upn("@lab.test")).reason == rejection::bad_upn_encoding);
  CHECK(upn_of(san_upn("alice@")).reason == rejection::bad_upn_encoding);
  CHECK(upn_of(san_upn("@")).reason == rejection::bad_upn_encoding);
}

TEST_CASE("upn: two UPN otherNames are multi_upn") {
  SUBCASE("different") {
    t::cert_spec spec = san_upn("erin@lab.test");
    spec.upns.push_back({V_ASN1_UTF8STRING, "mallory@lab.test"});
    const upn_result r = upn_of(spec);
    CHECK(r.reason == rejection::multi_upn);
    CHECK(r.upn.empty());
  }
  SUBCASE("identical") {
    t::cert_spec spec = san_upn("alice@lab.test");
    spec.upns.push_back({V_ASN1_UTF8STRING, "alice@lab.test"});
    CHECK(upn_of(spec).reason == rejection::multi_upn);
  }
  SUBCASE("one of them badly encoded") {
    t::cert_spec spec = san_upn("alice@lab.test");
    spec.upns.push_back({V_ASN1_BMPSTRING, "\0b\0@\0c"s});
    CHECK(upn_of(spec).reason == rejection::multi_upn);
  }
}

TEST_CASE("upn: no UPN is no_upn") {
  SUBCASE("no SAN at all") { CHECK(upn_of(t::cert_spec{}).reason == rejection::no_upn); }
  SUBCASE("only an rfc822Name") {
    t::cert_spec spec;
    spec.emails = {"alice@lab.test"};
    CHECK(upn_of(spec).reason == rejection::no_upn);
  }
  SUBCASE("subject CN of UPN form is ignored by default") {
    CHECK(upn_of(subject_cn("dave@lab.test")).reason == rejection::no_upn);
  }
}

TEST_CASE("upn: a duplicated subjectAltName extension is invalid") {
  t::cert_spec spec = san_upn("alice@lab.test");
  spec.san_extensions = 2;
  const upn_result r = upn_of(spec);
  CHECK(r.reason == rejection::invalid);
  CHECK(r.detail.find("more than one subjectAltName") != std::string::npos);
}

TEST_CASE("upn: subject CN source") {
  upn_options subject_only;
  subject_only.from_san = false;
  subject_only.from_subject = true;
  upn_options both;
  both.from_subject = true;

  SUBCASE("one CN of UPN form") {
    const upn_result r = upn_of(subject_cn("dave@lab.test"), both);
    CHECK(r.reason == rejection::none);
    CHECK(r.upn == "dave@lab.test");
  }
  SUBCASE("CN without '@' is no UPN") {
    CHECK(upn_of(subject_cn("Dave Example"), both).reason == rejection::no_upn);
  }
  SUBCASE("two CNs give no UPN") {
    t::cert_spec spec = subject_cn("dave@lab.test");
    spec.subject.push_back({NID_commonName, V_ASN1_UTF8STRING, "erin@lab.test"});
    const upn_result r = upn_of(spec, both);
    CHECK(r.reason == rejection::no_upn);
    CHECK(r.detail.find("2 CNs") != std::string::npos);
  }
  SUBCASE("CN with a control character") {
    CHECK(upn_of(subject_cn("dave\n@lab.test"), both).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("CN as IA5String") {
    CHECK(upn_of(subject_cn("dave@lab.test", V_ASN1_IA5STRING), both).reason ==
          rejection::bad_upn_encoding);
  }
  SUBCASE("the SAN wins over the subject") {
    t::cert_spec spec = subject_cn("dave@lab.test");
    spec.upns.push_back({V_ASN1_UTF8STRING, "alice@lab.test"});
    CHECK(upn_of(spec, both).upn == "alice@lab.test");
  }
  SUBCASE("a bad SAN UPN does not fall back to the subject") {
    t::cert_spec spec = subject_cn("dave@lab.test");
    spec.upns.push_back({V_ASN1_BMPSTRING, "\0a\0@\0b"s});
    CHECK(upn_of(spec, both).reason == rejection::bad_upn_encoding);
  }
  SUBCASE("subject only ignores the SAN") {
    t::cert_spec spec = subject_cn("Alice Example");
    spec.upns.push_back({V_ASN1_UTF8STRING, "alice@lab.test"});
    CHECK(upn_of(spec, subject_only).reason == rejection::no_upn);
    CHECK(upn_of(subject_cn("dave@lab.test"), subject_only).upn == "dave@lab.test");
  }
}

TEST_CASE("upn: no source configured gives no_upn") {
  upn_options none;
  none.from_san = false;
  CHECK(upn_of(san_upn("alice@lab.test"), none).reason == rejection::no_upn);
}

TEST_CASE("upn: DER that is not a certificate is invalid") {
  const std::vector<unsigned char> garbage{0x30, 0x03, 0x02, 0x01, 0x01};
  CHECK(extract_upn_der(garbage, {}).reason == rejection::invalid);
  CHECK(extract_upn_der({}, {}).reason == rejection::invalid);
  std::vector<unsigned char> truncated = cert_with(san_upn("alice@lab.test"));
  truncated.resize(truncated.size() / 2);
  CHECK(extract_upn_der(truncated, {}).reason == rejection::invalid);
}

TEST_CASE("upn: check_upn reports the first problem") {
  std::string detail;
  CHECK(cbagate::identity::check_upn("alice@lab.test", 256, detail) == rejection::none);
  CHECK(detail.empty());
  CHECK(cbagate::identity::check_upn("a\x01@b", 256, detail) == rejection::bad_upn_encoding);
  CHECK(detail == "UPN has control character U+0001 at byte 1");
}
