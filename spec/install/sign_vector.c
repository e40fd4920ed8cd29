/*
 * A C user of an installed eidkit (spec/install_test.sh): built against the
 * installed headers and library through pkg-config or find_package(eidkit),
 * it signs one TC3 vector and prints the Authorization value.
 * Usage: sign_vector SECRET_ID SECRET_KEY SERVICE HOST ACTION VERSION REGION
 *                    TIMESTAMP CONTENT_TYPE BODY
 */
#include <eidkit/eidkit.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr,
                "usage: %s SECRET_ID SECRET_KEY SERVICE HOST ACTION VERSION REGION "
                "TIMESTAMP CONTENT_TYPE BODY\n",
                argv[0]);
        return 2;
    }
    eid_sign_request req = {0};
    req.secret_id = argv[1];
    req.secret_key = argv[2];
    req.secret_key_len = strlen(argv[2]);
    req.service = argv[3];
    req.host = argv[4];
    req.action = argv[5];
    req.version = argv[6];
    req.region = argv[7];
    req.timestamp = strtoll(argv[8], NULL, 10);
    req.content_type = argv[9];
    req.body = argv[10];
    req.body_len = strlen(argv[10]);

    eid_signer *signer = NULL;
    eid_signature sig;
    eid_error err = {0};
    eid_status st = eid_signer_new(NULL, &signer);
    if (st == EID_OK) st = eid_signer_sign(signer, &req, &sig, &err);
    eid_signer_free(signer);
    if (st != EID_OK) {
        fprintf(stderr, "%s: %s\n", eid_status_code(st), err.message);
        return 1;
    }
    printf("%s\n", sig.authorization);
    return 0;
}
