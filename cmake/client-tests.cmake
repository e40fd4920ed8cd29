# C tests of the API client: test_client starts its own `eidkit sim`;
# test_client_retry checks the retry rules (retry.c, compiled in) on their own.
add_executable(test_client_retry spec/c/test_client_retry.c core/src/retry.c core/src/status.c)
target_include_directories(test_client_retry PRIVATE core/include core/src)
target_compile_options(test_client_retry PRIVATE ${EIDKIT_WARNINGS})
add_test(NAME c_client_retry COMMAND test_client_retry)

add_executable(test_client spec/c/test_client.c)
target_compile_options(test_client PRIVATE ${EIDKIT_WARNINGS})
target_link_libraries(test_client PRIVATE eidkit PkgConfig::CURL)
add_test(NAME c_client COMMAND test_client $<TARGET_FILE:eidkit_host>)
set_tests_properties(c_client PROPERTIES ENVIRONMENT "${spec_env}" TIMEOUT 120)

if(VALGRIND AND NOT EIDKIT_SANITIZE)
  add_test(NAME c_client_valgrind COMMAND ${VALGRIND} --quiet --error-exitcode=99
    --leak-check=full --errors-for-leak-kinds=definite,indirect
    $<TARGET_FILE:test_client> $<TARGET_FILE:eidkit_host>)
  set_tests_properties(c_client_valgrind PROPERTIES ENVIRONMENT "${spec_env}" TIMEOUT 300)
endif()

# The allocation-failure sweep replaces malloc in its executable, which the
# sanitizers and valgrind do themselves: plain builds only.
if(NOT EIDKIT_SANITIZE)
  add_executable(test_client_alloc spec/c/test_client_alloc.c)
  target_compile_options(test_client_alloc PRIVATE ${EIDKIT_WARNINGS})
  target_link_libraries(test_client_alloc PRIVATE eidkit OpenSSL::Crypto ${CMAKE_DL_LIBS})
  add_test(NAME c_client_alloc_failure COMMAND test_client_alloc $<TARGET_FILE:eidkit_host>)
  set_tests_properties(c_client_alloc_failure PROPERTIES ENVIRONMENT "${spec_env}" TIMEOUT 300)
endif()

# The options' one source: test_client_options compiles core/src/client.c
# into itself (it reads the fields eid_client_new filled), and the rest of
# libeidkit's sources beside it (their internal symbols are hidden in the
# library).
set(client_options_sources ${EIDKIT_CORE_SOURCES})
list(REMOVE_ITEM client_options_sources core/src/client.c)
add_executable(test_client_options spec/c/test_client_options.c ${client_options_sources})
target_include_directories(test_client_options PRIVATE core/include core/src)
target_compile_options(test_client_options PRIVATE ${EIDKIT_WARNINGS})
# libm directly: an unoptimised build calls floor() (libeidkit gets it through
# its users; an executable must name it).
target_link_libraries(test_client_options PRIVATE ${EIDKIT_CORE_LIBS} m)
add_test(NAME c_client_options COMMAND test_client_options)
