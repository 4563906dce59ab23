// A counting allocator for the bench (issue 14): LD_PRELOAD this library into cbagate and send
// the process SIGUSR2 to append one line to $ALLOC_COUNT_OUT:
//   "<allocations> <frees> <bytes requested>\n"
// totals since start; the bench takes one line before a load and one after, and divides the
// difference by the requests served. It counts every call of malloc, calloc, realloc,
// aligned_alloc, memalign, posix_memalign and operator new, and every free and operator delete,
// and passes each to the allocator the process would use without it: the next definition in
// symbol lookup order (dlsym RTLD_NEXT), glibc's malloc or mimalloc where cbagate is linked with
// it (PROXY_MIMALLOC). operator new and delete are counted here, as calls of malloc and free,
// because mimalloc defines its own that never call malloc: without them a mimalloc build would
// show only the C allocations. Not for production: the counters cost a few instructions per call.
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include <cstring>
#include <new>

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

namespace {

// The allocator behind this one, looked up on the first call (libstdc++ allocates before this
// library's constructors run).
struct next_allocator {
  void* (*malloc)(std::size_t);
  void* (*calloc)(std::size_t, std::size_t);
  void* (*realloc)(void*, std::size_t);
  void (*free)(void*);
  void* (*memalign)(std::size_t, std::size_t);
  void* (*aligned_alloc)(std::size_t, std::size_t);
  int (*posix_memalign)(void**, std::size_t, std::size_t);
};
next_allocator next_{};
bool resolving = false;

// dlsym may allocate (calloc) while it looks the others up: those few bytes come from here and
// are never freed.
alignas(64) char bootstrap[16384];
std::size_t bootstrap_used = 0;

bool from_bootstrap(const void* p) {
  return p >= static_cast<const void*>(bootstrap) &&
         p < static_cast<const void*>(bootstrap + sizeof bootstrap);
}

void* bootstrap_alloc(std::size_t n, std::size_t align = 16) {
  std::size_t at = (bootstrap_used + align - 1) & ~(align - 1);
  if (at + n > sizeof bootstrap) return nullptr;
  bootstrap_used = at + n;
  return bootstrap + at;  // zeroed: static storage, never reused
}

template <typename F>
void look_up(F& f, const char* name) {
  f = reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

// False while the lookup itself runs (the caller then serves from the bootstrap buffer).
bool resolved() {
  if (next_.free != nullptr) return true;
  if (resolving) return false;
  resolving = true;
  next_allocator n{};
  look_up(n.malloc, "malloc");
  look_up(n.calloc, "calloc");
  look_up(n.realloc, "realloc");
  look_up(n.memalign, "memalign");
  look_up(n.aligned_alloc, "aligned_alloc");
  look_up(n.posix_memalign, "posix_memalign");
  look_up(n.free, "free");
  if (n.malloc == nullptr || n.calloc == nullptr || n.realloc == nullptr || n.memalign == nullptr ||
      n.aligned_alloc == nullptr || n.posix_memalign == nullptr || n.free == nullptr) {
    static const char msg[] = "alloc-count: no allocator behind this one (dlsym RTLD_NEXT)\n";
    [[maybe_unused]] const ssize_t w = ::write(2, msg, sizeof msg - 1);
    ::abort();
  }
  next_ = n;
  resolving = false;
  return true;
}

std::uint64_t allocs = 0;  // relaxed atomics through __atomic builtins: no <atomic> init order
std::uint64_t frees = 0;
std::uint64_t bytes = 0;

inline void count(std::size_t n) {
  __atomic_fetch_add(&allocs, 1, __ATOMIC_RELAXED);
  __atomic_fetch_add(&bytes, n, __ATOMIC_RELAXED);
}

// Async-signal-safe: no stdio, no allocation.
char* put_u64(char* p, std::uint64_t v) {
  char tmp[24];
  int i = 0;
  do {
    tmp[i++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (i > 0) *p++ = tmp[--i];
  return p;
}

void on_usr2(int) {
  const int saved = errno;
  const char* path = ::getenv("ALLOC_COUNT_OUT");
  if (path != nullptr) {
    char line[96];
    char* p = put_u64(line, __atomic_load_n(&allocs, __ATOMIC_RELAXED));
    *p++ = ' ';
    p = put_u64(p, __atomic_load_n(&frees, __ATOMIC_RELAXED));
    *p++ = ' ';
    p = put_u64(p, __atomic_load_n(&bytes, __ATOMIC_RELAXED));
    *p++ = '\n';
    const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      [[maybe_unused]] const ssize_t w = ::write(fd, line, static_cast<std::size_t>(p - line));
      ::close(fd);
    }
  }
  errno = saved;
}

struct install {
  install() {
    struct sigaction sa {};
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGUSR2, &sa, nullptr);
  }
} installed;

}  // namespace

extern "C" {

void* malloc(std::size_t n) {
  count(n);
  return resolved() ? next_.malloc(n) : bootstrap_alloc(n);
}

void* calloc(std::size_t k, std::size_t n) {
  count(k * n);
  return resolved() ? next_.calloc(k, n) : bootstrap_alloc(k * n);
}

void* realloc(void* p, std::size_t n) {
  count(n);
  if (!resolved()) return nullptr;
  if (from_bootstrap(p)) {  // a bootstrap block's size is unknown: copy what may be there
    void* q = next_.malloc(n);
    if (q != nullptr) {
      const auto avail = static_cast<std::size_t>(bootstrap + sizeof bootstrap - static_cast<char*>(p));
      std::memcpy(q, p, n < avail ? n : avail);
    }
    return q;
  }
  return next_.realloc(p, n);
}

void free(void* p) {
  if (p == nullptr || from_bootstrap(p)) return;
  __atomic_fetch_add(&frees, 1, __ATOMIC_RELAXED);
  if (resolved()) next_.free(p);
}

void* memalign(std::size_t a, std::size_t n) {
  count(n);
  return resolved() ? next_.memalign(a, n) : bootstrap_alloc(n, a);
}

void* aligned_alloc(std::size_t a, std::size_t n) {
  count(n);
  return resolved() ? next_.aligned_alloc(a, n) : bootstrap_alloc(n, a);
}

int posix_memalign(void** out, std::size_t a, std::size_t n) {
  if (a < sizeof(void*) || (a & (a - 1)) != 0) return EINVAL;
  count(n);
  void* p = resolved() ? nullptr : bootstrap_alloc(n, a);
  if (p == nullptr) return resolved() ? next_.posix_memalign(out, a, n) : ENOMEM;
  *out = p;
  return 0;
}

}  // extern "C"

// operator new and delete as libstdc++ defines them (malloc and free, a new_handler loop), so
// they count the same with either allocator behind.
namespace {

void* new_or_throw(std::size_t n) {
  if (n == 0) n = 1;
  for (;;) {
    if (void* p = malloc(n)) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

void* new_aligned_or_throw(std::size_t n, std::align_val_t al) {
  auto a = static_cast<std::size_t>(al);
  if (a < sizeof(void*)) a = sizeof(void*);
  n = (n + a - 1) & ~(a - 1);  // aligned_alloc wants a multiple of the alignment
  if (n == 0) n = a;
  for (;;) {
    if (void* p = aligned_alloc(a, n)) return p;
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) throw std::bad_alloc();
    h();
  }
}

}  // namespace

void* operator new(std::size_t n) { return new_or_throw(n); }
void* operator new[](std::size_t n) { return new_or_throw(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return new_or_throw(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return new_or_throw(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a) { return new_aligned_or_throw(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return new_aligned_or_throw(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return new_aligned_or_throw(n, a);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return new_aligned_or_throw(n, a);
  } catch (...) {
    return nullptr;
  }
}

void operator delete(void* p) noexcept { free(p); }
void operator delete[](void* p) noexcept { free(p); }
void operator delete(void* p, std::size_t) noexcept { free(p); }
void operator delete[](void* p, std::size_t) noexcept { free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { free(p); }
void operator delete(void* p, std::align_val_t) noexcept { free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { free(p); }
