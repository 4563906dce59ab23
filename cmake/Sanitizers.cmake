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
  endif()
endfunction()
