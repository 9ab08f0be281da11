/*
 * Shared by the fuzz targets (tests/fuzz/fuzz_*.c). Each target defines
 * LLVMFuzzerTestOneInput; it is linked either with libFuzzer (clang,
 * -DFLASHGATE_FUZZ=ON, `make fuzz`) or with standalone.c, which replays the
 * committed corpus and reproducers as an ordinary test in every build.
 * FZ_CHECK aborts, so a broken promise is a crash that libFuzzer saves.
 */
#ifndef FG_FUZZ_H
#define FG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
