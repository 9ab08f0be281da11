/*
 * Fuzz target: flashgate-load scenario files (lt_scenario_parse, then
 * lt_scenario_validate and the profile length).
 * Promises: never crashes; a refusal says why in errbuf.
 */
#include "loadtest/lt_scenario.h"
#include "tests/fuzz/fuzz.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 16384)
        return 0;
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    lt_scenario_t *sc = calloc(1, sizeof(*sc));
    char err[512];
    err[0] = '\0';
    if (lt_scenario_parse(sc, s, err, sizeof(err)) == 0) {
        err[0] = '\0';
        if (lt_scenario_validate(sc, err, sizeof(err)) == 0)
            FZ_CHECK(lt_scenario_profile_s(sc) >= 0);
        else
            FZ_CHECK(err[0] != '\0');
    } else {
        FZ_CHECK(err[0] != '\0');
    }
    lt_scenario_free(sc);
    free(sc);
    free(s);
    return 0;
}
