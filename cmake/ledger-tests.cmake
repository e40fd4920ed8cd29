# C tests of the token ledger. The busted conformance spec (spec/ledger/) is
# run by the suite-wide busted tests; it starts its own redis-server.
add_executable(test_ledger spec/c/test_ledger.c)
target_compile_options(test_ledger PRIVATE ${EIDKIT_WARNINGS})
# ledger_internal.h: the checkpoint interval the test fills the WAL past
target_include_directories(test_ledger PRIVATE core/src)
target_link_libraries(test_ledger PRIVATE eidkit PkgConfig::SQLITE3 OpenSSL::Crypto)
add_test(NAME c_ledger COMMAND test_ledger)

if(VALGRIND AND NOT EIDKIT_SANITIZE)
  add_test(NAME c_ledger_valgrind COMMAND ${VALGRIND} --quiet --error-exitcode=99
    --leak-check=full --errors-for-leak-kinds=definite,indirect $<TARGET_FILE:test_ledger>)
endif()

# The JSON digest and the record script's ARGV that libeidkit gives the nginx
# ledger (eid_ledger_digest_json, eid_ledger_redis_record_args).
add_executable(test_ledger_json spec/c/test_ledger_json.c)
target_compile_options(test_ledger_json PRIVATE ${EIDKIT_WARNINGS})
target_link_libraries(test_ledger_json PRIVATE eidkit OpenSSL::Crypto)
add_test(NAME c_ledger_json COMMAND test_ledger_json)
if(VALGRIND AND NOT EIDKIT_SANITIZE)
  add_test(NAME c_ledger_json_valgrind COMMAND ${VALGRIND} --quiet --error-exitcode=99
    --leak-check=full --errors-for-leak-kinds=definite,indirect $<TARGET_FILE:test_ledger_json>)
endif()
