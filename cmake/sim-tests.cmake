# The simulator's conformance with clients we did not write
# (spec/conformance/run): the official Node.js SDK, Debian's chromium on the
# H5 page through puppeteer-core, and 1,000 concurrent connections under
# injected latency; and the examples against `eidkit serve --sim`, which
# h5_serve and miniprogram start themselves (the H5 pages in chromium, the
# mini-program under a fake WeChat). About 25 s alone on two cores; the
# timeout leaves room for two chromium launches on a loaded machine.
# Needs node and node/node_modules (scripts/setup-deps);
# the driver fails loudly when they are missing. Its busted specs run with
# the suite-wide busted tests. Not under the sanitizers: the simulator is
# Lua on core.http_server, which the busted specs already run there.
if(EIDKIT_BUSTED AND NOT EIDKIT_SANITIZE)
  find_program(NODE node)
  if(NOT NODE)
    message(FATAL_ERROR "node is required for the simulator conformance tests "
      "(run scripts/setup-deps, or configure with -DEIDKIT_BUSTED=OFF)")
  endif()
  add_test(NAME sim_conformance COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/spec/conformance/run
    WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR})
  set_tests_properties(sim_conformance PROPERTIES ENVIRONMENT "${spec_env}" TIMEOUT 240
    LABELS conformance)
endif()
