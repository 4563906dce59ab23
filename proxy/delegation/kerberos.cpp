#include "delegation/kerberos.hpp"

#include "common/gss_ptr.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <krb5/krb5.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <list>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace cbagate::delegation {
namespace {

using clock = std::chrono::steady_clock;

/** Where in the exchange a GSS call failed: the same krb5 code means different things. */
enum class step { proxy_cred, s4u2self, store, s4u2proxy, token };

/** Maps a GSS status to errc by the krb5 code behind the minor status (krb5 mech calls only:
 *  the mechglue passes the first mapping of a krb5 code through unchanged). */
errc classify(step where, OM_uint32 major, OM_uint32 minor) noexcept {
  const auto code = static_cast<krb5_error_code>(minor);
  switch (code) {
    case KRB5_KDC_UNREACH:
    case KRB5_REALM_CANT_RESOLVE:
    case KRB5_REALM_UNKNOWN:
      return errc::kdc_unreachable;
    default: break;
  }
  switch (where) {
    case step::proxy_cred:
      // Missing keytab shows up as "No credentials cache found", a rotated key as a decrypt
      // integrity failure, an unknown proxy principal as C_PRINCIPAL_UNKNOWN: all the keytab's.
      return errc::keytab;
    case step::s4u2self:
      switch (code) {
        case KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN: return errc::unknown_user;
        case KRB5KDC_ERR_CLIENT_REVOKED:
        case KRB5KDC_ERR_NAME_EXP:
          return errc::user_disabled;
        case KRB5KDC_ERR_BADOPTION:
        case KRB5KDC_ERR_POLICY:
        case KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN:  // the proxy itself is unknown as a service
          return errc::delegation_refused;
        case KRB5KRB_AP_ERR_TKT_EXPIRED:  // the proxy TGT in the slot expired meanwhile
        default: break;
      }
      break;
    case step::s4u2proxy:
      switch (code) {
        case KRB5KDC_ERR_BADOPTION:  // target not in krbAllowedToDelegateTo, evidence not forwardable
        case KRB5KDC_ERR_POLICY:
        case KRB5KDC_ERR_S_PRINCIPAL_UNKNOWN:  // the target SPN is unknown
          return errc::delegation_refused;
        case KRB5KDC_ERR_CLIENT_REVOKED:
        case KRB5KDC_ERR_NAME_EXP:
          return errc::user_disabled;
        case KRB5KDC_ERR_C_PRINCIPAL_UNKNOWN: return errc::unknown_user;
        default: break;
      }
      break;
    case step::store:
    case step::token:
      break;
  }
  (void)major;
  return errc::internal;
}

std::string base64(std::span<const unsigned char> in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), in.data(),
                                static_cast<int>(in.size()));
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0U);
  return out;
}

/** Appends a DER definite-form length (X.690 8.1.3). */
void der_length(std::vector<unsigned char>& out, std::size_t n) {
  if (n < 0x80) {
    out.push_back(static_cast<unsigned char>(n));
    return;
  }
  unsigned char bytes[sizeof(std::size_t)];
  std::size_t count = 0;
  for (; n != 0; n >>= 8) bytes[count++] = static_cast<unsigned char>(n & 0xff);
  out.push_back(static_cast<unsigned char>(0x80 | count));
  while (count != 0) out.push_back(bytes[--count]);
}

std::size_t der_length_size(std::size_t n) {
  std::size_t size = 1;
  if (n >= 0x80)
    for (; n != 0; n >>= 8) ++size;
  return size;
}

/**
 * The SPNEGO initial token around a Kerberos (RFC 4121) initial token: RFC 2743 3.1 framing with
 * the SPNEGO OID, then an RFC 4178 4.2.1 NegTokenInit whose mechTypes offers only Kerberos
 * 1.2.840.113554.1.2.2 and whose mechToken is `krb5_token`; no reqFlags, no mechListMIC (MIC
 * only follows a renegotiated mech). Byte for byte what MIT's SPNEGO initiator (1.20) sends for a
 * krb5-only credential; made here so a warm token needs no SPNEGO layer, which re-imports the
 * target into the krb5 mech on every call (two krb5 contexts, i.e. two krb5.conf reads).
 */
std::vector<unsigned char> spnego_init_token(std::span<const unsigned char> krb5_token) {
  static constexpr unsigned char spnego_oid[] = {0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02};
  static constexpr unsigned char mech_types[] = {  // [0] MechTypeList { krb5 }
      0xa0, 0x0d, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02};
  const std::size_t octets = 1 + der_length_size(krb5_token.size()) + krb5_token.size();
  const std::size_t mech_token = 1 + der_length_size(octets) + octets;  // [2] OCTET STRING
  const std::size_t seq_body = sizeof mech_types + mech_token;
  const std::size_t seq = 1 + der_length_size(seq_body) + seq_body;   // NegTokenInit
  const std::size_t choice = 1 + der_length_size(seq) + seq;          // [0] negTokenInit
  const std::size_t body = sizeof spnego_oid + choice;
  std::vector<unsigned char> out;
  out.reserve(1 + der_length_size(body) + body);
  out.push_back(0x60);  // [APPLICATION 0]
  der_length(out, body);
  out.insert(out.end(), std::begin(spnego_oid), std::end(spnego_oid));
  out.push_back(0xa0);
  der_length(out, seq);
  out.push_back(0x30);
  der_length(out, seq_body);
  out.insert(out.end(), std::begin(mech_types), std::end(mech_types));
  out.push_back(0xa2);
  der_length(out, octets);
  out.push_back(0x04);
  der_length(out, krb5_token.size());
  out.insert(out.end(), krb5_token.begin(), krb5_token.end());
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

/** The realm part of a principal name ("a/b@R" -> "R"), "" without one. */
std::string_view realm_of(std::string_view principal) {
  const auto at = principal.rfind('@');
  return at == std::string_view::npos ? std::string_view{} : principal.substr(at + 1);
}

expected<gss::name_ptr> import_name(std::string_view text, gss_OID type) {
  OM_uint32 minor = 0;
  gss_buffer_desc in = gss::input_buffer(text);
  gss_name_t out = GSS_C_NO_NAME;
  const OM_uint32 major = gss_import_name(&minor, &in, type, &out);
  if (GSS_ERROR(major)) return make_error_code(errc::internal);
  return gss::name_ptr(out);
}

struct slot {
  std::string ccache;  // MEMORY: ccache holding this worker's proxy TGT
};

}  // namespace

struct kerberos_delegator::impl {
  config::kerberos_section section;
  kerberos_options options;
  std::string realm;        // the proxy principal's realm
  std::string target_text;  // the name imported for the target
  gss_OID target_type = GSS_C_NO_OID;
  gss_OID_desc krb5_oid{9, const_cast<char*>("\x2a\x86\x48\x86\xf7\x12\x01\x02\x02")};
  gss_OID_set_desc krb5_set{1, &krb5_oid};
  std::string id;  // unique prefix for this delegator's ccache names
  std::atomic<std::uint64_t> seq{0};
  // The target as a union name, imported once at create() (no mech involved yet, so no DNS).
  gss::name_ptr target;
  // The same name canonicalized for the krb5 mech, made once on a worker (krb5_sname_to_principal:
  // with dns_canonicalize_hostname a DNS lookup) and then read by every worker: the mechglue
  // passes a name whose mech matches straight to the mech, which only copies it
  // (g_init_sec_context.c, kg_duplicate_name under the name's own lock). Released in ~impl.
  std::atomic<gss_name_t> target_krb5{GSS_C_NO_NAME};

  /** A user's delegated credential: the MEMORY ccache with the evidence and S4U2Proxy tickets,
   *  and one GSS handle on it acquired when the entry is made, so a warm token acquires nothing.
   *  Shared (shared_ptr) by the cache and every worker using it: an evicted entry is freed by
   *  its last user, handle first, then the ccache the handle reads. MIT krb5 creds carry their
   *  own lock, so concurrent gss_init_sec_context calls on one handle are safe. */
  struct delegated {
    impl& owner;
    std::string ccache;
    gss::cred_ptr cred;
    delegated(impl& o, std::string cc, gss::cred_ptr c)
        : owner(o), ccache(std::move(cc)), cred(std::move(c)) {}
    delegated(const delegated&) = delete;
    delegated& operator=(const delegated&) = delete;
    ~delegated() {
      cred.reset();
      owner.destroy_ccaches({ccache});
    }
  };
  using delegated_ptr = std::shared_ptr<const delegated>;

  struct cache_entry {
    delegated_ptr cred;
    clock::time_point expires;
    std::list<std::string>::iterator lru;  // position in lru (front = most recent)
  };

  std::mutex slots_mutex;
  std::vector<slot> free_slots;
  std::vector<std::string> all_slot_ccaches;

  mutable std::mutex cache_mutex;
  std::unordered_map<std::string, cache_entry> cache;
  std::list<std::string> lru;

  // Refusals the KDC gave for a principal, until their expiry (options.refusal_ttl); bounded
  // like the credential cache.
  std::mutex refusals_mutex;
  std::unordered_map<std::string, std::pair<errc, std::chrono::steady_clock::time_point>> refusals;

  std::mutex krb_mutex;
  krb5_context kctx = nullptr;

  std::atomic<std::uint64_t> tokens{0}, hits{0}, misses{0}, evictions{0}, deadline_expired{0},
      rejected_busy{0}, s4u_count{0}, s4u_micros{0}, credential_acquires{0};
  std::atomic<std::uint64_t> errors[7] = {};
  std::atomic<std::size_t> pending{0};

  boost::asio::thread_pool pool;  // last: destroyed (joined) first, while the rest still lives

  impl(const config::kerberos_section& s, kerberos_options o)
      : section(s), options(o), pool(std::max<std::size_t>(o.workers, 1)) {}

  ~impl() {
    pool.join();
    cache.clear();  // no worker holds an entry now: frees every handle and its ccache
    lru.clear();
    destroy_ccaches(all_slot_ccaches);
    gss::name_ptr release_target(target_krb5.exchange(GSS_C_NO_NAME));
    target.reset();
    if (kctx != nullptr) krb5_free_context(kctx);
  }

  std::string next_ccache(std::string_view kind) {
    return "MEMORY:cbagate-" + std::string(kind) + "-" + id + "-" + std::to_string(++seq);
  }

  void destroy_ccaches(const std::vector<std::string>& names) {
    if (names.empty()) return;
    std::lock_guard lock(krb_mutex);
    for (const auto& n : names) {
      krb5_ccache cc = nullptr;
      if (krb5_cc_resolve(kctx, n.c_str(), &cc) == 0) krb5_cc_destroy(kctx, cc);
    }
  }

  expected<std::string> fail(errc e) {
    ++errors[static_cast<std::size_t>(e)];
    return make_error_code(e);
  }

  // --- cache (entries that leave it die outside cache_mutex: their last owner frees them) ---
  delegated_ptr lookup(const std::string& principal) {
    delegated_ptr dead;
    std::lock_guard lock(cache_mutex);
    auto it = cache.find(principal);
    if (it == cache.end()) return nullptr;
    if (clock::now() >= it->second.expires) {
      dead = std::move(it->second.cred);
      lru.erase(it->second.lru);
      cache.erase(it);
      ++evictions;
      return nullptr;  // unlocks, then `dead` goes
    }
    lru.splice(lru.begin(), lru, it->second.lru);
    return it->second.cred;
  }

  void forget(const std::string& principal, const delegated_ptr& cred) {
    delegated_ptr dead;
    std::lock_guard lock(cache_mutex);
    auto it = cache.find(principal);
    if (it != cache.end() && it->second.cred == cred) {
      dead = std::move(it->second.cred);
      lru.erase(it->second.lru);
      cache.erase(it);
    }
  }

  /** Caches `cred` for `principal`; returns the credential to use now: `cred`, or the one a
   *  concurrent cold call for the same principal put there first (`cred` is then dropped). */
  delegated_ptr insert(const std::string& principal, delegated_ptr cred, clock::time_point expires) {
    std::vector<delegated_ptr> dead;
    std::lock_guard lock(cache_mutex);
    if (auto it = cache.find(principal); it != cache.end() && it->second.expires > clock::now()) {
      dead.push_back(std::move(cred));
      return it->second.cred;
    } else if (it != cache.end()) {
      dead.push_back(std::move(it->second.cred));
      lru.erase(it->second.lru);
      cache.erase(it);
    }
    lru.push_front(principal);
    auto& fresh = cache.emplace(principal, cache_entry{std::move(cred), expires, lru.begin()})
                      .first->second;
    const auto now = clock::now();
    // Expired entries first, then least recently used, down to capacity.
    for (auto i = cache.begin(); i != cache.end();) {
      if (i->second.expires <= now && i->first != principal) {
        dead.push_back(std::move(i->second.cred));
        lru.erase(i->second.lru);
        i = cache.erase(i);
        ++evictions;
      } else {
        ++i;
      }
    }
    while (cache.size() > std::max<std::size_t>(options.cache_capacity, 1)) {
      auto victim = cache.find(lru.back());
      dead.push_back(std::move(victim->second.cred));
      cache.erase(victim);
      lru.pop_back();
      ++evictions;
    }
    return fresh.cred;
  }

  // --- worker slots: one proxy credential (ccache) per concurrent caller -------------------
  slot take_slot() {
    std::lock_guard lock(slots_mutex);
    if (!free_slots.empty()) {
      slot s = std::move(free_slots.back());
      free_slots.pop_back();
      return s;
    }
    slot s{next_ccache("proxy")};
    all_slot_ccaches.push_back(s.ccache);
    return s;
  }
  void give_back(slot s) {
    std::lock_guard lock(slots_mutex);
    free_slots.push_back(std::move(s));
  }

  // --- GSS steps ----------------------------------------------------------------------------
  expected<gss_name_t> krb5_target() {
    if (gss_name_t n = target_krb5.load(std::memory_order_acquire); n != GSS_C_NO_NAME) return n;
    OM_uint32 minor = 0;
    gss_name_t fresh = GSS_C_NO_NAME;
    if (GSS_ERROR(gss_canonicalize_name(&minor, target.get(), &krb5_oid, &fresh)))
      return make_error_code(errc::internal);
    gss_name_t first = GSS_C_NO_NAME;
    if (target_krb5.compare_exchange_strong(first, fresh, std::memory_order_acq_rel)) return fresh;
    gss::name_ptr drop(fresh);  // another worker was first
    return first;
  }

  /** A fresh SPNEGO token from a delegated credential: no KDC request, nothing acquired or
   *  imported. The krb5 mech makes the token (flags as SPNEGO asks it: mutual + integrity), and
   *  spnego_init_token wraps it. */
  expected<std::string> token_from(const delegated& d, std::span<const unsigned char> cb) {
    auto target_name = krb5_target();
    if (!target_name) return target_name.error();
    OM_uint32 minor = 0;
    std::string app_data;
    gss_channel_bindings_struct bindings{};
    if (!cb.empty()) {
      app_data = "tls-server-end-point:";
      app_data.append(reinterpret_cast<const char*>(cb.data()), cb.size());
      bindings.initiator_addrtype = GSS_C_AF_UNSPEC;
      bindings.acceptor_addrtype = GSS_C_AF_UNSPEC;
      bindings.application_data = gss::input_buffer(std::string_view(app_data));
    }
    gss_ctx_id_t raw_ctx = GSS_C_NO_CONTEXT;
    gss::buffer out;
    const OM_uint32 major = gss_init_sec_context(
        &minor, d.cred.get(), &raw_ctx, *target_name, &krb5_oid,
        GSS_C_MUTUAL_FLAG | GSS_C_INTEG_FLAG, GSS_C_INDEFINITE,
        cb.empty() ? GSS_C_NO_CHANNEL_BINDINGS : &bindings, GSS_C_NO_BUFFER, nullptr, out.out(),
        nullptr, nullptr);
    gss::ctx_ptr ctx(raw_ctx);
    if (GSS_ERROR(major) || out.empty()) return make_error_code(classify(step::token, major, minor));
    return base64(spnego_init_token(out.bytes()));
  }

  /** S4U2Self + S4U2Proxy for `principal`; the delegated credential lands in a new ccache. */
  expected<std::pair<delegated_ptr, clock::time_point>> delegate(const std::string& principal) {
    const auto t0 = clock::now();
    slot s = take_slot();
    struct slot_return {
      impl& self;
      slot& s;
      ~slot_return() { self.give_back(std::move(s)); }
    } returner{*this, s};

    OM_uint32 minor = 0;
    // 1. This worker's proxy credential, re-acquired each time: MIT renews a keytab TGT only
    //    inside gss_acquire_cred* (an AS exchange when due, else ~0.1 ms and no KDC traffic).
    auto proxy_name = import_name(section.principal, GSS_KRB5_NT_PRINCIPAL_NAME);
    if (!proxy_name) return proxy_name.error();
    gss_key_value_element_desc proxy_elems[2] = {{"client_keytab", section.keytab.c_str()},
                                                 {"ccache", s.ccache.c_str()}};
    gss_key_value_set_desc proxy_store{2, proxy_elems};
    gss_cred_id_t raw = GSS_C_NO_CREDENTIAL;
    OM_uint32 major = gss_acquire_cred_from(&minor, proxy_name->get(), GSS_C_INDEFINITE, &krb5_set,
                                            GSS_C_INITIATE, &proxy_store, &raw, nullptr, nullptr);
    if (GSS_ERROR(major)) return make_error_code(classify(step::proxy_cred, major, minor));
    gss::cred_ptr proxy(raw);

    // 2. S4U2Self through the krb5 mech (raw krb5 codes on failure).
    auto user = import_name(principal, section.upn_to_principal == config::upn_mapping::enterprise
                                           ? GSS_KRB5_NT_ENTERPRISE_NAME
                                           : GSS_KRB5_NT_PRINCIPAL_NAME);
    if (!user) return user.error();
    raw = GSS_C_NO_CREDENTIAL;
    OM_uint32 lifetime = 0;
    major = gss_acquire_cred_impersonate_name(&minor, proxy.get(), user->get(), GSS_C_INDEFINITE,
                                              &krb5_set, GSS_C_INITIATE, &raw, nullptr, &lifetime);
    if (GSS_ERROR(major)) return make_error_code(classify(step::s4u2self, major, minor));
    gss::cred_ptr impersonated(raw);

    // 3. Into a named MEMORY ccache that outlives the handle (it keeps proxy_impersonator).
    std::string ccache = next_ccache("user");
    gss_key_value_element_desc user_elem{"ccache", ccache.c_str()};
    gss_key_value_set_desc user_store{1, &user_elem};
    major = gss_store_cred_into(&minor, impersonated.get(), GSS_C_INITIATE, &krb5_oid, 1, 0,
                                &user_store, nullptr, nullptr);
    if (GSS_ERROR(major)) {
      destroy_ccaches({ccache});
      return make_error_code(classify(step::store, major, minor));
    }

    // 4. S4U2Proxy through the krb5 mech on a credential read from that ccache, so the service
    //    ticket for the target is cached there for every later token, made on this same handle.
    raw = GSS_C_NO_CREDENTIAL;
    major = gss_acquire_cred_from(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE, &krb5_set, GSS_C_INITIATE,
                                  &user_store, &raw, nullptr, nullptr);
    if (GSS_ERROR(major)) {
      destroy_ccaches({ccache});
      return make_error_code(classify(step::store, major, minor));
    }
    gss::cred_ptr krb5_cred(raw);
    ++credential_acquires;
    auto target_name = krb5_target();
    if (!target_name) {
      destroy_ccaches({ccache});
      return target_name.error();
    }
    gss_ctx_id_t raw_ctx = GSS_C_NO_CONTEXT;
    gss::buffer discard;
    major = gss_init_sec_context(&minor, krb5_cred.get(), &raw_ctx, *target_name, &krb5_oid, 0,
                                 GSS_C_INDEFINITE, GSS_C_NO_CHANNEL_BINDINGS, GSS_C_NO_BUFFER,
                                 nullptr, discard.out(), nullptr, nullptr);
    gss::ctx_ptr ctx(raw_ctx);
    if (GSS_ERROR(major)) {
      destroy_ccaches({ccache});
      return make_error_code(classify(step::s4u2proxy, major, minor));
    }

    auto cred = std::make_shared<const delegated>(*this, std::move(ccache), std::move(krb5_cred));

    const auto now = clock::now();
    const auto life = lifetime == GSS_C_INDEFINITE ? std::chrono::seconds(36000)
                                                   : std::chrono::seconds(lifetime);
    const auto keep = life > options.renew_before * 2 ? life - options.renew_before : life / 2;
    ++s4u_count;
    s4u_micros += static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - t0).count());
    return std::pair{std::move(cred), now + keep};
  }

  std::optional<errc> refused(const std::string& principal) {
    std::lock_guard lock(refusals_mutex);
    auto it = refusals.find(principal);
    if (it == refusals.end()) return std::nullopt;
    if (std::chrono::steady_clock::now() >= it->second.second) {
      refusals.erase(it);
      return std::nullopt;
    }
    return it->second.first;
  }

  void remember_refusal(const std::string& principal, errc e) {
    if (options.refusal_ttl.count() <= 0) return;
    if (e != errc::unknown_user && e != errc::user_disabled && e != errc::delegation_refused)
      return;  // an unreachable KDC or our own keytab says nothing about the user
    std::lock_guard lock(refusals_mutex);
    const auto now = std::chrono::steady_clock::now();
    if (refusals.size() >= std::max<std::size_t>(options.cache_capacity, 1)) {
      std::erase_if(refusals, [&](const auto& kv) { return now >= kv.second.second; });
      if (refusals.size() >= std::max<std::size_t>(options.cache_capacity, 1)) refusals.clear();
    }
    refusals[principal] = {e, now + options.refusal_ttl};
  }

  expected<std::string> token(const std::string& principal, std::span<const unsigned char> cb) {
    if (auto e = refused(principal)) return fail(*e);
    if (auto cred = lookup(principal)) {
      auto t = token_from(*cred, cb);
      if (t) {
        ++hits;
        ++tokens;
        return t;
      }
      forget(principal, cred);  // e.g. a ticket expired under us: start over once
    }
    ++misses;
    auto d = delegate(principal);
    if (!d) {
      remember_refusal(principal, static_cast<errc>(d.error().value()));
      return fail(static_cast<errc>(d.error().value()));
    }
    const auto cred = insert(principal, std::move(d->first), d->second);
    auto t = token_from(*cred, cb);
    if (!t) return fail(static_cast<errc>(t.error().value()));
    ++tokens;
    return t;
  }
};

expected<void> apply_krb5_config(const config::kerberos_section& section) {
  if (section.krb5_config.empty()) return {};
  if (::access(section.krb5_config.c_str(), R_OK) != 0) return make_error_code(errc::internal);
  if (::setenv("KRB5_CONFIG", section.krb5_config.c_str(), 1) != 0)
    return make_error_code(errc::internal);
  return {};
}

expected<std::string> upn_to_principal(std::string_view upn, config::upn_mapping mapping,
                                       std::string_view default_realm) {
  if (upn.empty() || upn.find_first_of(" \t\r\n/\\") != std::string_view::npos)
    return make_error_code(errc::internal);
  const auto at = upn.rfind('@');
  if (mapping == config::upn_mapping::enterprise) {
    if (at == std::string_view::npos || at == 0 || at + 1 == upn.size())
      return make_error_code(errc::internal);
    return std::string(upn);
  }
  if (at == std::string_view::npos) {
    if (default_realm.empty()) return std::string(upn);
    return std::string(upn) + "@" + std::string(default_realm);
  }
  if (at == 0 || at + 1 == upn.size() || upn.substr(0, at).find('@') != std::string_view::npos)
    return make_error_code(errc::internal);
  return std::string(upn.substr(0, at)) + "@" + upper(upn.substr(at + 1));
}

kerberos_delegator::kerberos_delegator(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
kerberos_delegator::~kerberos_delegator() = default;

expected<std::unique_ptr<kerberos_delegator>> kerberos_delegator::create(
    const config::kerberos_section& section, kerberos_options options) {
  if (section.keytab.empty() || ::access(section.keytab.c_str(), R_OK) != 0)
    return make_error_code(errc::keytab);
  if (section.principal.empty() || section.target_spn.empty()) return make_error_code(errc::internal);

  auto d = std::make_unique<impl>(section, options);
  d->realm = std::string(realm_of(section.principal));
  // "HTTP/host" -> host-based "HTTP@host" (realm from krb5.conf); "HTTP/host@REALM" as written.
  if (realm_of(section.target_spn).empty()) {
    const auto slash = section.target_spn.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == section.target_spn.size())
      return make_error_code(errc::internal);
    d->target_text = section.target_spn.substr(0, slash) + "@" + section.target_spn.substr(slash + 1);
    d->target_type = GSS_C_NT_HOSTBASED_SERVICE;
  } else {
    d->target_text = section.target_spn;
    d->target_type = GSS_KRB5_NT_PRINCIPAL_NAME;
  }
  if (!import_name(section.principal, GSS_KRB5_NT_PRINCIPAL_NAME)) return make_error_code(errc::internal);
  auto target = import_name(d->target_text, d->target_type);
  if (!target) return make_error_code(errc::internal);
  d->target = std::move(*target);
  if (krb5_init_context(&d->kctx) != 0) return make_error_code(errc::internal);
  d->id = std::to_string(::getpid()) + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(d.get()));
  return std::unique_ptr<kerberos_delegator>(new kerberos_delegator(std::move(d)));
}

std::string kerberos_delegator::realm() const { return impl_->realm; }

expected<std::string> kerberos_delegator::principal_for(std::string_view upn) const {
  return upn_to_principal(upn, impl_->section.upn_to_principal, impl_->realm);
}

expected<std::string> kerberos_delegator::negotiate_token(const std::string& upn,
                                                          std::span<const unsigned char> channel_bindings) {
  auto principal = principal_for(upn);
  if (!principal) return impl_->fail(errc::internal);
  return impl_->token(*principal, channel_bindings);
}

boost::asio::awaitable<expected<std::string>> kerberos_delegator::async_token(
    std::string upn, std::vector<unsigned char> channel_bindings) {
  co_return co_await async_token_impl(std::move(upn), std::move(channel_bindings), false);
}

boost::asio::awaitable<expected<std::string>> kerberos_delegator::async_token_for_principal(
    std::string principal, std::vector<unsigned char> channel_bindings) {
  co_return co_await async_token_impl(std::move(principal), std::move(channel_bindings), true);
}

boost::asio::awaitable<expected<std::string>> kerberos_delegator::async_token_impl(
    std::string name, std::vector<unsigned char> channel_bindings, bool is_principal) {
  auto ex = co_await boost::asio::this_coro::executor;
  impl& d = *impl_;
  if (d.pending.fetch_add(1) >= d.options.max_pending) {
    d.pending.fetch_sub(1);
    ++d.rejected_busy;
    co_return d.fail(errc::kdc_unreachable);
  }
  struct rendezvous {
    explicit rendezvous(const boost::asio::any_io_executor& e) : timer(e) {}
    std::mutex m;
    std::optional<expected<std::string>> result;
    boost::asio::steady_timer timer;
  };
  auto rv = std::make_shared<rendezvous>(ex);
  rv->timer.expires_after(d.options.deadline);
  boost::asio::post(d.pool, [this, rv, is_principal, upn = std::move(name),
                             cb = std::move(channel_bindings)] {
    auto r = is_principal ? impl_->token(upn, cb) : negotiate_token(upn, cb);
    impl_->pending.fetch_sub(1);
    {
      std::lock_guard lock(rv->m);
      rv->result = std::move(r);
    }
    boost::asio::post(rv->timer.get_executor(), [rv] { rv->timer.cancel(); });
  });
  co_await rv->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  std::optional<expected<std::string>> result;
  {
    std::lock_guard lock(rv->m);
    result = std::move(rv->result);
  }
  if (result) co_return std::move(*result);
  ++d.deadline_expired;
  co_return d.fail(errc::kdc_unreachable);
}

bool kerberos_delegator::cached(const std::string& principal) const {
  std::lock_guard lock(impl_->cache_mutex);
  auto it = impl_->cache.find(principal);
  return it != impl_->cache.end() && clock::now() < it->second.expires;
}

std::optional<std::chrono::steady_clock::time_point> kerberos_delegator::cached_until(
    const std::string& principal) const {
  std::lock_guard lock(impl_->cache_mutex);
  auto it = impl_->cache.find(principal);
  if (it == impl_->cache.end() || clock::now() >= it->second.expires) return std::nullopt;
  return it->second.expires;
}

void kerberos_delegator::clear_cache() {
  std::vector<impl::delegated_ptr> dead;  // freed after the lock, by their last user
  std::lock_guard lock(impl_->cache_mutex);
  dead.reserve(impl_->cache.size());
  for (auto& [_, e] : impl_->cache) dead.push_back(std::move(e.cred));
  impl_->evictions += impl_->cache.size();
  impl_->cache.clear();
  impl_->lru.clear();
}

kerberos_stats kerberos_delegator::stats() const {
  const impl& d = *impl_;
  kerberos_stats s;
  s.tokens = d.tokens;
  s.cache_hits = d.hits;
  s.cache_misses = d.misses;
  s.evictions = d.evictions;
  s.deadline_expired = d.deadline_expired;
  s.rejected_busy = d.rejected_busy;
  for (std::size_t i = 0; i < 7; ++i) s.errors[i] = d.errors[i];
  s.s4u_count = d.s4u_count;
  s.s4u_micros_total = d.s4u_micros;
  s.credential_acquires = d.credential_acquires;
  return s;
}

}  // namespace cbagate::delegation
