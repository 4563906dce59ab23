# PROXY_SANITIZER = "address,undefined" or "thread"; empty means none.
function(proxy_set_sanitizers target)
  if(PROXY_SANITIZER)
    target_compile_options(${target} INTERFACE
      -fsanitize=${PROXY_SANITIZER} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(${target} INTERFACE -fsanitize=${PROXY_SANITIZER})
    # Clang 14's UBSan "function" check cannot compile our coroutines ("Cannot represent a
    # difference across sections" in tls/proxy_header_reader.cpp); GCC has no such check.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang" AND PROXY_SANITIZER MATCHES "undefined")
      target_compile_options(${target} INTERFACE -fno-sanitize=function)
    endif()
    # GCC 12 warns (-Wtsan) that TSan does not model std::atomic_thread_fence, which Boost.Asio's
    # std_fenced_block (in every completion handler's do_complete) uses; with -Werror no TU that
    # runs an Asio handler compiles. The fence is in the library: a race it
    # would hide is Asio's, suppressed with its reason in tests/support/tsan.supp if it shows.
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND PROXY_SANITIZER MATCHES "thread")
      target_compile_options(${target} INTERFACE -Wno-tsan)
    endif()
  endif()
endfunction()
