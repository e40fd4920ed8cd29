# The examples as a merchant runs them: examples/flow_spec.lua (busted, on
# eidkit.testing) under the eidkit program and stock lua5.4, and
# examples/flow.lua through `eidkit run` for each way the user can end.
# The suite-wide busted tests run spec/ only.
if(EIDKIT_BUSTED)
  set(examples_dir ${CMAKE_CURRENT_SOURCE_DIR}/examples)
  add_test(NAME examples_spec_eidkit_host
    COMMAND ${BUSTED} --lua=$<TARGET_FILE:eidkit_host> -o utfTerminal ${examples_dir}/flow_spec.lua
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set(examples_tests examples_spec_eidkit_host)
  if(NOT EIDKIT_SANITIZE)
    add_test(NAME examples_spec_lua54
      COMMAND ${BUSTED} --lua=${LUA54} -o utfTerminal ${examples_dir}/flow_spec.lua
      WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND examples_tests examples_spec_lua54)
  endif()
  foreach(user pass fail:2016 fail:1001 abandon)
    string(REPLACE ":" "_" name "examples_flow_${user}")
    add_test(NAME ${name}
      COMMAND $<TARGET_FILE:eidkit_host> run ${examples_dir}/flow.lua --user ${user}
      WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
    list(APPEND examples_tests ${name})
  endforeach()
  set_tests_properties(examples_flow_pass PROPERTIES PASS_REGULAR_EXPRESSION "status=passed code=0")
  set_tests_properties(examples_flow_fail_2016 PROPERTIES
    PASS_REGULAR_EXPRESSION "status=failed code=2016 reason=identity_rejected")
  set_tests_properties(examples_flow_fail_1001 PROPERTIES
    PASS_REGULAR_EXPRESSION "status=failed code=1001 reason=user_retry retry_with_new_token=true")
  set_tests_properties(examples_flow_abandon PROPERTIES
    PASS_REGULAR_EXPRESSION "status=expired code=15 reason=token_expired")
  # A pass regex replaces the exit-code check, so an error after the outcome
  # line must still fail the test.
  set_tests_properties(examples_flow_pass examples_flow_fail_2016 examples_flow_fail_1001
    examples_flow_abandon PROPERTIES FAIL_REGULAR_EXPRESSION "traceback|^eidkit: ")
  set_tests_properties(${examples_tests} PROPERTIES ENVIRONMENT "${spec_env}" TIMEOUT 60)
endif()
