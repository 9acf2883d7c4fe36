# diffuse_isa_checks (DIFFUSE_ISA_CHECKS=ON): compiles the examples, the benchmarks and every public
# header, with the warning set, for each x86-64 level: the baseline (SSE2), x86-64-v3 (AVX2, FMA) and
# x86-64-v4 (AVX-512), whatever processor builds them. Nothing is linked or run (the kernel tests in
# tests/CMakeLists.txt run what the machine can run); the point is that code which only one
# instruction set compiles, or warns about, fails here on any machine, as GCC 12's AVX-512 warning
# once failed every AVX-512 user while an AVX2 CI stayed green. The middle end's warnings
# (-Wmaybe-uninitialized among them) need optimisation. -O2: -O1 adds false positives of its own
# (Eigen's DenseStorage under the SVD), which -O2 and -O3 do not report.
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" OR NOT CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  message(STATUS "diffuse: no diffuse_isa_checks (${CMAKE_SYSTEM_PROCESSOR}, ${CMAKE_CXX_COMPILER_ID}): x86-64 GCC/Clang only")
  return()
endif()

# One source that includes every public header (and io.hpp where diffuse::io exists).
file(GLOB_RECURSE _diffuse_isa_headers CONFIGURE_DEPENDS
     RELATIVE "${PROJECT_SOURCE_DIR}/include" "${PROJECT_SOURCE_DIR}/include/diffuse/*.hpp")
if(NOT TARGET diffuse::io)
  list(FILTER _diffuse_isa_headers EXCLUDE REGEX "^diffuse/io[/.]")
endif()
if(NOT TARGET diffuse::mpi)
  list(FILTER _diffuse_isa_headers EXCLUDE REGEX "^diffuse/parallel/mpi[.]")
endif()
set(_diffuse_isa_all "")
foreach(header IN LISTS _diffuse_isa_headers)
  string(APPEND _diffuse_isa_all "#include <${header}>\n")
endforeach()
set(_diffuse_isa_headers_source "${PROJECT_BINARY_DIR}/isa_checks/all_headers.cpp")
file(CONFIGURE OUTPUT "${_diffuse_isa_headers_source}" CONTENT "${_diffuse_isa_all}")

# The sources, with what each needs beyond diffuse::diffuse.
set(_diffuse_isa_sources "${_diffuse_isa_headers_source}")
set(_diffuse_isa_libraries)
set(_diffuse_isa_definitions DIFFUSE_EXAMPLES_PLOTS_DIR="${PROJECT_SOURCE_DIR}/examples/plots")
if(TARGET diffuse::io)
  list(APPEND _diffuse_isa_libraries diffuse::io)
endif()
if(TARGET diffuse::mpi)  # diffuse_train's MPI path too
  list(APPEND _diffuse_isa_libraries diffuse::mpi)
  list(APPEND _diffuse_isa_definitions DIFFUSE_EXAMPLES_MPI)
endif()
if(TARGET diffuse_examples_cli)
  file(GLOB _diffuse_isa_examples CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/examples/*.cpp")
  foreach(example IN LISTS _diffuse_isa_examples)
    get_filename_component(name "${example}" NAME_WE)
    # Only the programs this build makes (their libraries were found).
    foreach(program diffuse_schedule:01_schedule diffuse_noising:02_noising diffuse_train:train
                    diffuse_sample:sample diffuse_evaluate:evaluate diffuse_train_classifier:train_classifier)
      string(REPLACE ":" ";" program "${program}")
      list(GET program 0 target)
      list(GET program 1 source)
      if(source STREQUAL name AND TARGET ${target})
        list(APPEND _diffuse_isa_sources "${example}")
      endif()
    endforeach()
  endforeach()
  if(TARGET diffuse_examples_report)
    list(APPEND _diffuse_isa_sources "${PROJECT_SOURCE_DIR}/examples/common/report.cpp")
  endif()
  list(APPEND _diffuse_isa_libraries diffuse_examples_cli)
  if(TARGET diffuse_examples_png)
    list(APPEND _diffuse_isa_libraries diffuse_examples_png)
  endif()
endif()
# benchmarks/ found Google Benchmark for its own directory only (imported targets are directory-scoped).
find_package(benchmark QUIET)
if(TARGET benchmark::benchmark)
  file(GLOB _diffuse_isa_benchmarks CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/benchmarks/*.cpp")
  if(NOT TARGET diffuse::mpi)
    list(FILTER _diffuse_isa_benchmarks EXCLUDE REGEX "/mpi_[^/]*\\.cpp$")
  endif()
  list(APPEND _diffuse_isa_sources ${_diffuse_isa_benchmarks})
  list(APPEND _diffuse_isa_libraries benchmark::benchmark)
endif()

add_custom_target(diffuse_isa_checks)
foreach(isa "x86-64:sse2" "x86-64-v3:avx2" "x86-64-v4:avx512")
  string(REPLACE ":" ";" isa "${isa}")
  list(GET isa 0 level)
  list(GET isa 1 simd)
  set(target diffuse_isa_check_${simd})
  add_library(${target} OBJECT EXCLUDE_FROM_ALL ${_diffuse_isa_sources})
  target_link_libraries(${target} PRIVATE diffuse::diffuse ${_diffuse_isa_libraries} diffuse_dev)
  if(simd STREQUAL "avx512")
    target_link_libraries(${target} PRIVATE diffuse_gcc12_avx512)
  endif()
  target_compile_options(${target} PRIVATE -O2 -march=${level})
  target_compile_definitions(${target} PRIVATE ${_diffuse_isa_definitions})
  add_dependencies(diffuse_isa_checks ${target})
endforeach()
list(LENGTH _diffuse_isa_sources _diffuse_isa_count)
message(STATUS "diffuse: diffuse_isa_checks compiles ${_diffuse_isa_count} sources for x86-64, x86-64-v3 and x86-64-v4")
