/* Reading the JSON test vectors with cJSON, for the C tests that share them. */
#ifndef EIDKIT_JSON_FILE_H
#define EIDKIT_JSON_FILE_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static inline const char *jstr(const cJSON *v, const char *key) {
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, key));
}

static inline int64_t jint(const cJSON *v, const char *key) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(v, key);
    return cJSON_IsNumber(n) ? (int64_t)n->valuedouble : 0;
}

/* The JSON document in path, or NULL after saying so on stderr. */
static inline cJSON *load_json(const char *path) {
    cJSON *root = NULL;
    FILE *f = fopen(path, "rb");
    long size = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *text = size >= 0 && fseek(f, 0, SEEK_SET) == 0 ? malloc((size_t)size + 1) : NULL;
    if (text && fread(text, 1, (size_t)size, f) == (size_t)size)
        root = cJSON_ParseWithLength(text, (size_t)size);
    if (root == NULL) fprintf(stderr, "cannot read %s as JSON\n", path);
    free(text);
    if (f) fclose(f);
    return root;
}

#endif
