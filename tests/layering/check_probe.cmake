# Builds one layering probe (tests/layering/CMakeLists.txt) and checks the outcome:
# EXPECTED=fail: the build must fail because HEADER is not found (any other failure is an error);
# EXPECTED=pass: the build must succeed.
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(log "${out}${err}")
if(EXPECTED STREQUAL "fail")
  if(rc EQUAL 0)
    message(FATAL_ERROR "layering not enforced: ${TARGET} includes ${HEADER}, a higher layer's header, and it built")
  endif()
  string(FIND "${log}" "${HEADER}: No such file or directory" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${TARGET} failed to build, but not because ${HEADER} is out of reach:\n${log}")
  endif()
  message(STATUS "${TARGET}: the back-edge to ${HEADER} does not build, as it must")
else()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "control probe ${TARGET} (includes ${HEADER}) failed to build:\n${log}")
  endif()
  message(STATUS "${TARGET}: builds")
endif()
