# core.http_server: its spec (spec/integration/httpd_spec.lua) runs with the
# other busted specs. Here: the benchmark ceiling, and a memcheck run.

# A trivial libmicrohttpd server in the same single-thread epoll mode, the
# ceiling for the simulator benchmark. Not a test. `--target mhd_trivial`
add_executable(mhd_trivial EXCLUDE_FROM_ALL bench/mhd_trivial.c)
target_compile_options(mhd_trivial PRIVATE ${EIDKIT_WARNINGS})
target_link_libraries(mhd_trivial PRIVATE PkgConfig::MHD)

# bench/serve's bare server: libmicrohttpd and the C client on one loop,
# answering /eid/result with one GetEidResult and nothing of eidkit's own
# work (bench/serve/bare.c). Not a test. `--target serve_bare`
add_executable(serve_bare EXCLUDE_FROM_ALL bench/serve/bare.c)
target_compile_options(serve_bare PRIVATE ${EIDKIT_WARNINGS})
target_link_libraries(serve_bare PRIVATE eidkit PkgConfig::MHD PkgConfig::CJSON)
if(JEMALLOC_FOUND)  # the allocator the eidkit program runs with
  target_link_libraries(serve_bare PRIVATE PkgConfig::JEMALLOC)
endif()

# The server under valgrind: create, serve curl requests of every kind
# (delays, faults, errors, 413), close.
find_program(CURL curl)
if(VALGRIND AND CURL AND NOT EIDKIT_SANITIZE)
  add_test(NAME httpd_valgrind COMMAND ${VALGRIND} --quiet --error-exitcode=99
    --leak-check=full --errors-for-leak-kinds=definite,indirect
    $<TARGET_FILE:eidkit_host> ${CMAKE_CURRENT_SOURCE_DIR}/spec/fixtures/httpd_memcheck.lua)
  set_tests_properties(httpd_valgrind PROPERTIES TIMEOUT 120)
endif()
