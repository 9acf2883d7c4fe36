# diffuse_dev: the warning set for diffuse's own tests, examples and benchmarks. Linking it is how a
# target opts in; diffuse::diffuse never carries it, so consumers keep their own flags.
add_library(diffuse_dev INTERFACE)

if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(diffuse_dev INTERFACE
    -Wall -Wextra -Wpedantic
    -Wshadow                # a local hiding a member or outer name is how one t becomes another
    -Wnon-virtual-dtor      # layers are used through base pointers
    -Woverloaded-virtual
    -Wold-style-cast        # casts between float/double/index types should be visible
    -Wcast-align
    -Wformat=2
    -Wimplicit-fallthrough
    # Not -Wconversion/-Wsign-conversion: Eigen's Index is signed and std sizes are not, so every
    # shape computation would need a cast and the casts would hide the real bugs.
    $<$<CXX_COMPILER_ID:GNU>:-Wduplicated-cond -Wlogical-op>
    $<$<BOOL:${DIFFUSE_WERROR}>:-Werror>)
elseif(MSVC)
  target_compile_options(diffuse_dev INTERFACE /W4 /permissive- /external:anglebrackets /external:W0
    $<$<BOOL:${DIFFUSE_WERROR}>:/WX>)
endif()

# Eigen's own headers are not ours to fix, so they must never trip -Werror. An imported Eigen3::Eigen
# is already -isystem; saying it here also covers an Eigen brought in with add_subdirectory.
target_include_directories(diffuse_dev SYSTEM INTERFACE
  $<TARGET_PROPERTY:Eigen3::Eigen,INTERFACE_INCLUDE_DIRECTORIES>)

# diffuse_gcc12_avx512: linked by every target compiled for AVX-512 (-march=native on an AVX-512
# processor, the x86-64-v4 kernel tests and compile checks). GCC 12's own avx512fintrin.h defines
# _mm512_undefined_*() as `__m512 __Y = __Y;`, and once Eigen's packet code inlines it GCC 12 reports,
# from its own header, "'__Y' may be used uninitialized [-Wmaybe-uninitialized]" or, for the same
# line reached another way (Eigen's ptranspose through _mm512_unpacklo_ps), "'__Y' is used
# uninitialized [-Wuninitialized]" (GCC bug 105593, fixed in GCC 13). This turns off that one false
# positive, in its two spellings, for GCC 12 only and on AVX-512 code only; every other compiler,
# version and instruction set keeps both warnings. It must follow -Wall, so it is linked after diffuse_dev.
add_library(diffuse_gcc12_avx512 INTERFACE)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12
   AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(diffuse_gcc12_avx512 INTERFACE -Wno-maybe-uninitialized -Wno-uninitialized)
endif()
