# diffuse_native: optimisation flags for benchmarks and examples only. Tests keep the build type's
# flags, and diffuse::diffuse never carries -march=native, since a consumer's binary must run on
# machines other than the one that built it.
add_library(diffuse_native INTERFACE)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # -O3 even in Debug builds: the trainer and the benchmarks are unusable at -O0.
  target_compile_options(diffuse_native INTERFACE -O3)
  if(DIFFUSE_NATIVE)
    include(CheckCXXCompilerFlag)
    check_cxx_compiler_flag(-march=native DIFFUSE_HAVE_MARCH_NATIVE)
    if(DIFFUSE_HAVE_MARCH_NATIVE)
      target_compile_options(diffuse_native INTERFACE -march=native)
    else()
      message(STATUS "diffuse: ${CMAKE_CXX_COMPILER_ID} lacks -march=native; using portable flags")
    endif()
  endif()
elseif(MSVC)
  target_compile_options(diffuse_native INTERFACE /O2)
endif()
