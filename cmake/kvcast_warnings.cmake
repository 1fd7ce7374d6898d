# Warnings for kvcast's own tests, benchmarks and examples (never imposed on consumers).
function(kvcast_warnings target)
  set(host_flags -Wall -Wextra -Wshadow)
  if(KVCAST_WERROR)
    list(APPEND host_flags -Werror)
  endif()
  list(JOIN host_flags "," host_csv)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:${host_flags}>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${host_csv}>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${KVCAST_WERROR}>>:--Werror=all-warnings>)
endfunction()
