# diffuse_native: optimisation flags for benchmarks and examples only. Tests keep the build type's
# flags, and diffuse::diffuse never carries -march=native, since a consumer's binary must run on
# machines other than the one that built it.
add_library(diffuse_native INTERFACE)

# The test preset lowers it to -O2: the example programs there only run the few-hundred-image tests.
set(DIFFUSE_OPTIMIZE "-O3" CACHE STRING "Optimisation flag of the examples and benchmarks (GCC/Clang)")

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  # Even in Debug builds: the trainer and the benchmarks are unusable at -O0.
  target_compile_options(diffuse_native INTERFACE ${DIFFUSE_OPTIMIZE})
  if(DIFFUSE_NATIVE)
    include(CheckCXXCompilerFlag)
    include(CheckCXXSourceCompiles)
    check_cxx_compiler_flag(-march=native DIFFUSE_HAVE_MARCH_NATIVE)
    if(DIFFUSE_HAVE_MARCH_NATIVE)
      target_compile_options(diffuse_native INTERFACE -march=native)
      # Whether this processor gives AVX-512 code, for the GCC 12 workaround of warnings.cmake.
      set(CMAKE_REQUIRED_FLAGS -march=native)
      check_cxx_source_compiles("#ifndef __AVX512F__\n#error no AVX-512\n#endif\nint main() {}"
                                DIFFUSE_NATIVE_HAS_AVX512)
      unset(CMAKE_REQUIRED_FLAGS)
      if(DIFFUSE_NATIVE_HAS_AVX512)
        target_link_libraries(diffuse_native INTERFACE diffuse_gcc12_avx512)
      endif()
    else()
      message(STATUS "diffuse: ${CMAKE_CXX_COMPILER_ID} lacks -march=native; using portable flags")
    endif()
  endif()
elseif(MSVC)
  target_compile_options(diffuse_native INTERFACE /O2)
endif()
