#!/usr/bin/env bash
# Run the eidkit program under valgrind memcheck on a few representative jobs;
# any memory error or definite leak fails. Usage: host_valgrind.sh VALGRIND EIDKIT SRC_DIR
set -euo pipefail
valgrind="$1" eidkit="$2" src="$3"
export TENCENTCLOUD_SECRET_ID=AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000
export TENCENTCLOUD_SECRET_KEY=FakeSecretKeyForTestVectors000000
# The program may be linked with jemalloc: the synonym makes memcheck replace
# its malloc as it does the C library's, so leaks and bad frees still show.
vg() { "$valgrind" --quiet --error-exitcode=99 --leak-check=full --soname-synonyms=somalloc='*jemalloc*' \
  --errors-for-leak-kinds=definite,indirect "$eidkit" "$@"; }
n=0
vg run "$src/examples/sign.lua" TOKEN >/dev/null; n=$((n + 1))
vg sign --explain --json --action GetEidToken --timestamp 1700000000 \
  --body-file "$src/examples/get-eid-token.json" --token T --signed-header x-tc-token >/dev/null
n=$((n + 1))
# A script error must be reported (exit 1), not leak or crash the host.
set +e
echo 'local s = require("eidkit").signer{}; error("merchant bug")' | vg run - 2>/dev/null
rc=$?
set -e
[ "$rc" -eq 1 ] || { echo "script error: expected exit 1, got $rc" >&2; exit 1; }
n=$((n + 1))
echo "host_valgrind: $n passed, 0 failed"
