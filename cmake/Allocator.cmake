# PROXY_MIMALLOC: the cbagate executable allocates with mimalloc (Debian 12's libmimalloc2.0,
# found through the CMake package libmimalloc-dev installs). Linked as a shared library ahead of
# libstdc++ and libc, its malloc, free and operator new/delete are the ones every object of the
# process binds to (libc, libstdc++, OpenSSL, krb5, plugins loaded later), not only our code's.
# Against glibc's malloc (callgrind): 5-8 % fewer instructions per keep-alive GET, 11 % per new
# connection; about the same memory per idle connection (README, "Counted per request").
# tests/integration/allocator checks the binding at run time.
#
# Off in sanitizer and fuzz builds: ASan and TSan bring their own allocator and must see every
# allocation. The tests and tools stay on glibc's allocator: they measure or drive cbagate, and
# the bench's counting allocator (tests/bench/alloc-count) forwards to whichever one is linked.
option(PROXY_MIMALLOC "Link cbagate with mimalloc (libmimalloc-dev)" ON)

# --no-as-needed: nothing of ours calls mi_* directly, so a linker that drops unreferenced
# libraries by default (--as-needed, as on Ubuntu) would drop mimalloc and the override with it.
# Read when the build is generated, in the linked target's directory: set here, before any.
set(CMAKE_LINK_LIBRARY_USING_proxy_no_as_needed
  "LINKER:--push-state,--no-as-needed" "<LINK_ITEM>" "LINKER:--pop-state")
set(CMAKE_LINK_LIBRARY_USING_proxy_no_as_needed_SUPPORTED TRUE)

# proxy_use_mimalloc(target): links `target` with mimalloc when PROXY_MIMALLOC applies to this
# build; sets PROXY_MIMALLOC_LINKED (ON/OFF) in the caller's scope either way.
function(proxy_use_mimalloc target)
  set(PROXY_MIMALLOC_LINKED OFF PARENT_SCOPE)
  if(NOT PROXY_MIMALLOC)
    message(STATUS "mimalloc: off (PROXY_MIMALLOC=OFF); ${target} uses glibc's malloc")
    return()
  endif()
  if(PROXY_SANITIZER OR PROXY_FUZZ)
    message(STATUS "mimalloc: off in this sanitizer/fuzz build; ${target} uses the sanitizer's allocator")
    return()
  endif()
  # A missing package is an error, not a silent fallback: the allocator of a release binary must
  # not depend on what happens to be installed on the build host.
  find_package(mimalloc 2.0 CONFIG QUIET GLOBAL)
  if(NOT mimalloc_FOUND)
    message(FATAL_ERROR "mimalloc: the CMake package 'mimalloc' (>= 2.0) was not found. "
      "Install Debian's libmimalloc-dev (tests/support/install-deps build does), "
      "or configure with -DPROXY_MIMALLOC=OFF to build with glibc's malloc.")
  endif()
  target_link_libraries(${target} PRIVATE "$<LINK_LIBRARY:proxy_no_as_needed,mimalloc>")
  get_target_property(location mimalloc LOCATION)
  message(STATUS "mimalloc: ${target} allocates with ${location} (${mimalloc_VERSION})")
  set(PROXY_MIMALLOC_LINKED ON PARENT_SCOPE)
endfunction()
