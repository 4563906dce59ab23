#include "tls/certificate_memo.hpp"

#include <openssl/asn1.h>

namespace cbagate::tls {
namespace {

// The memo of the server handshake running on this thread, if any. A thread-local rather than
// an argument: libssl calls d2i_X509 with no context of ours (certificate_memo::scope sets it).
thread_local certificate_memo* active_memo = nullptr;

// What libcrypto's d2i_X509 is (IMPLEMENT_ASN1_FUNCTIONS(X509) in crypto/x509/x_x509.c).
X509* decode_plain(X509** a, const unsigned char** in, long len) {
  return reinterpret_cast<X509*>(
      ASN1_item_d2i(reinterpret_cast<ASN1_VALUE**>(a), in, len, ASN1_ITEM_rptr(X509)));
}

// The size of the definite-length SEQUENCE (a certificate's outer TLV) at `p`, or 0 when `p`
// does not start with one that fits in `len` bytes (then the plain decoder decides).
std::size_t sequence_size(const unsigned char* p, long len) {
  if (p == nullptr || len < 2 || p[0] != 0x30) return 0;
  const auto avail = static_cast<std::size_t>(len);
  if (p[1] < 0x80) return 2u + p[1] <= avail ? 2u + p[1] : 0;
  const std::size_t octets = p[1] & 0x7Fu;
  if (octets == 0 || octets > 3 || 2 + octets > avail) return 0;  // indefinite, or over 16 MiB
  std::size_t body = 0;
  for (std::size_t i = 0; i < octets; ++i) body = (body << 8) | p[2 + i];
  const std::size_t total = 2 + octets + body;
  return total <= avail ? total : 0;
}

}  // namespace

certificate_memo::certificate_memo(std::size_t capacity)
    : certs_(capacity),
      sha256_(EVP_MD_fetch(nullptr, "SHA256", nullptr)) {}

certificate_memo::~certificate_memo() { EVP_MD_free(sha256_); }

certificate_memo::scope::scope(certificate_memo* memo) noexcept : previous_(active_memo) {
  active_memo = memo;
}

certificate_memo::scope::~scope() { active_memo = previous_; }

X509* certificate_memo::decode(X509** a, const unsigned char** in, long len) {
  const std::size_t size = in != nullptr ? sequence_size(*in, len) : 0;
  key k{};
  unsigned int klen = 0;
  if (size == 0 || sha256_ == nullptr ||
      EVP_Digest(*in, size, k.data(), &klen, sha256_, nullptr) != 1 || klen != k.size())
    return decode_plain(a, in, len);  // not remembered: exactly libcrypto's decoding
  const unsigned char* end = *in + size;
  X509* cert = find(k);
  if (cert == nullptr) {
    // Into a fresh object, never into *a: a remembered certificate is shared, and a caller
    // that hands its object back for the next certificate must not overwrite it in place.
    const unsigned char* p = *in;
    cert = decode_plain(nullptr, &p, len);
    if (cert == nullptr) {
      if (a != nullptr) {  // as libcrypto: a failed decode frees what *a held
        X509_free(*a);
        *a = nullptr;
      }
      return nullptr;
    }
    // Remembered only when the decoder read exactly the bytes the key covers.
    if (p == end) insert(k, cert);
    end = p;
  }
  if (a != nullptr) {
    X509_free(*a);
    *a = cert;
  }
  *in = end;
  return cert;
}

X509* certificate_memo::find(const key& k) {
  X509* cert = nullptr;
  certs_.find(k, [&](const ossl::x509_ptr& c) {
    cert = c.get();
    X509_up_ref(cert);
    return true;
  });
  if (cert != nullptr) hits_.fetch_add(1, std::memory_order_relaxed);
  return cert;
}

void certificate_memo::insert(const key& k, X509* cert) {
  X509_up_ref(cert);
  // Decoded on another thread meanwhile: the first stays. What leaves the memo (an evicted
  // certificate, or this reference when not taken) is freed here, outside the lock: it may be
  // the last reference.
  certs_.put(k, ossl::x509_ptr(cert), /*replace=*/false);
}

std::size_t certificate_memo::size() const { return certs_.size(); }

}  // namespace cbagate::tls

// libcrypto's d2i_X509, interposed (see certificate_memo.hpp): through the memo of the server
// handshake running on this thread, else exactly libcrypto's decoding.
extern "C" X509* d2i_X509(X509** a, const unsigned char** in, long len) {
  if (cbagate::tls::certificate_memo* memo = cbagate::tls::active_memo)
    return memo->decode(a, in, len);
  return cbagate::tls::decode_plain(a, in, len);
}
