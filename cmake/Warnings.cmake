# The warning set of STYLE.md 5.10, applied through the proxy_options interface target.
function(proxy_set_warnings target)
  target_compile_options(${target} INTERFACE
    -Wall -Wextra -Wpedantic -Wshadow -Wformat=2 -Wimplicit-fallthrough
    -Wnon-virtual-dtor -Wold-style-cast -Wnull-dereference -Wcast-align -Wconversion
    -Wno-sign-conversion)
  if(PROXY_WARNINGS_AS_ERRORS)
    # GCC 12's -Wnull-dereference reports false positives inside libstdc++ and Asio at -O2
    # (istreambuf_iterator, the scheduler): it stays a warning, never an error.
    target_compile_options(${target} INTERFACE -Werror -Wno-error=null-dereference)
  endif()
endfunction()
