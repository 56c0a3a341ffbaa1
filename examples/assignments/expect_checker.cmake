# expect_checker.cmake: run one assignment checker and require the expected verdict.
#   cmake -DEXE=path/to/checker -DEXPECT=pass|fail -P expect_checker.cmake
# pass: exit status 0, at least one PASS line and no FAIL line.
# fail: exit status 1 (a clean failure, not a crash) and no PASS line: every part fails, the
#       untouched skeleton earns nothing.
if(NOT EXE OR NOT EXPECT)
  message(FATAL_ERROR "usage: cmake -DEXE=checker -DEXPECT=pass|fail -P expect_checker.cmake")
endif()
execute_process(COMMAND ${EXE} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
# a verdict line is "PASS  N. ..." or "FAIL  N. ..." at the start of a line
string(REGEX MATCHALL "\nPASS  [0-9]+\\." passes "\n${out}")
string(REGEX MATCHALL "\nFAIL  [0-9]+\\." fails "\n${out}")
list(LENGTH passes n_pass)
list(LENGTH fails n_fail)
if(EXPECT STREQUAL "pass")
  if(NOT rc EQUAL 0 OR n_fail GREATER 0 OR n_pass EQUAL 0)
    message(FATAL_ERROR "expected the checker to pass on the solution: exit ${rc}, ${n_pass} PASS, ${n_fail} FAIL")
  endif()
elseif(EXPECT STREQUAL "fail")
  if(NOT rc EQUAL 1 OR n_pass GREATER 0 OR n_fail EQUAL 0)
    message(FATAL_ERROR "expected the checker to fail every part on the skeleton with exit 1: exit ${rc}, ${n_pass} PASS, ${n_fail} FAIL")
  endif()
else()
  message(FATAL_ERROR "EXPECT must be pass or fail, got ${EXPECT}")
endif()
message("checker verdict as expected (${EXPECT}): ${n_pass} PASS, ${n_fail} FAIL")
