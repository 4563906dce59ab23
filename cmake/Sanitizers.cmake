# PROXY_SANITIZER = "address,undefined" or "thread"; empty means none.
function(proxy_set_sanitizers target)
  if(PROXY_SANITIZER)
    target_compile_options(${target} INTERFACE
      -fsanitize=${PROXY_SANITIZER} -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(${target} INTERFACE -fsanitize=${PROXY_SANITIZER})
  endif()
endfunction()
