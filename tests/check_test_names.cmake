# Fails, naming the culprit, when a Catch test name would break catch_discover_tests: CMake reads
# '[' ... ']' inside a list as a group, so a name with an unbalanced bracket (or a ';') merges with
# every later name into one ctest test that matches no test case, and those tests silently stop
# running. Usage: cmake -D TEST_EXECUTABLE=<path> -P check_test_names.cmake
execute_process(COMMAND "${TEST_EXECUTABLE}" --list-test-names-only
                OUTPUT_VARIABLE names RESULT_VARIABLE result)
if(result LESS 0 OR NOT result MATCHES "^[0-9]+$")
  message(FATAL_ERROR "${TEST_EXECUTABLE} --list-test-names-only failed: ${result}")
endif()

# Walk the output line by line with string(FIND), not as a list: a list is what breaks.
set(bad "")
while(NOT names STREQUAL "")
  string(FIND "${names}" "\n" eol)
  if(eol EQUAL -1)
    set(line "${names}")
    set(names "")
  else()
    string(SUBSTRING "${names}" 0 ${eol} line)
    math(EXPR eol "${eol} + 1")
    string(SUBSTRING "${names}" ${eol} -1 names)
  endif()
  string(REGEX REPLACE "[^[]" "" opens "${line}")
  string(REGEX REPLACE "[^]]" "" closes "${line}")
  string(LENGTH "${opens}" n_opens)
  string(LENGTH "${closes}" n_closes)
  string(FIND "${line}" ";" semicolon)
  if(NOT n_opens EQUAL n_closes OR NOT semicolon EQUAL -1)
    string(APPEND bad "\n  \"${line}\"")
  endif()
endwhile()

if(bad)
  message(FATAL_ERROR "Rename these test cases: ctest cannot register a name with an unbalanced "
                      "'[' or ']', or a ';' (write [0, 1) as 0 <= p < 1, for example):${bad}")
endif()
