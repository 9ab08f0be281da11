/*
 * What the binary was built from: the version (CMake's project version,
 * FLASHGATE_VERSION) and the commit.
 */
#ifndef CM_BUILD_H
#define CM_BUILD_H

/* `git describe --always --dirty` of the source tree at build time
 * (cmake/git_commit.cmake), or "unknown" when built without git. Static,
 * NUL-terminated, read-only: safe from any thread. */
extern const char cm_build_commit[];

#endif
