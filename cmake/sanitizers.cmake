# ASan + UBSan for one target. -fno-sanitize-recover makes every UBSan report fatal, so a
# sanitizer finding fails the test instead of scrolling past in its log.
function(diffuse_enable_sanitizers target)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    message(FATAL_ERROR "diffuse_enable_sanitizers: ${CMAKE_CXX_COMPILER_ID} is not supported "
                        "(set DIFFUSE_SANITIZER_TESTS=OFF)")
  endif()
  set(flags -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_compile_options(${target} PRIVATE ${flags})
  target_link_options(${target} PRIVATE ${flags})
endfunction()
