# The identity crypto in C: known answers, layouts, key forms and failures
# (spec/c/test_crypto.c) also under valgrind where it is installed, and the
# allocation-failure sweep (ASan checks it in the sanitizer build; under
# valgrind its 3,000 failed PEM loads take minutes).
set(EIDKIT_CRYPTO_FIXTURES ${CMAKE_CURRENT_SOURCE_DIR}/spec/fixtures/crypto)
add_executable(test_crypto spec/c/test_crypto.c)
target_compile_options(test_crypto PRIVATE ${EIDKIT_WARNINGS})
target_link_libraries(test_crypto PRIVATE eidkit)
add_test(NAME c_crypto COMMAND test_crypto ${EIDKIT_CRYPTO_FIXTURES})

add_executable(test_crypto_alloc spec/c/test_crypto_alloc.c)
target_compile_options(test_crypto_alloc PRIVATE ${EIDKIT_WARNINGS})
target_link_libraries(test_crypto_alloc PRIVATE eidkit OpenSSL::Crypto)
add_test(NAME c_crypto_alloc_failure COMMAND test_crypto_alloc ${EIDKIT_CRYPTO_FIXTURES})

if(VALGRIND AND NOT EIDKIT_SANITIZE)
  add_test(NAME c_crypto_valgrind COMMAND ${VALGRIND} --quiet --error-exitcode=99
    --leak-check=full --errors-for-leak-kinds=definite,indirect
    $<TARGET_FILE:test_crypto> ${EIDKIT_CRYPTO_FIXTURES})
endif()
