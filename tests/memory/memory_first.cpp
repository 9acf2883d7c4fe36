// core/memory.hpp included before anything else, as a program's first line may: on glibc,
// keep_freed_memory() must take the setting (it once compiled to a no-op here, because __GLIBC__ was
// tested before any header had defined it). Not a Catch test: the unit tests' precompiled header
// would define __GLIBC__ first and hide exactly this.
#include <diffuse/core/memory.hpp>

#include <cstdio>

int main() {
    const bool kept = diffuse::keep_freed_memory();
#if defined(__GLIBC__)
    if (!kept) {
        std::fprintf(stderr, "keep_freed_memory() returned false on glibc %d.%d\n", __GLIBC__, __GLIBC_MINOR__);
        return 1;
    }
    std::printf("keep_freed_memory() took the setting on glibc %d.%d\n", __GLIBC__, __GLIBC_MINOR__);
#else
    std::printf("not glibc: keep_freed_memory() returned %s and has nothing to set\n", kept ? "true" : "false");
#endif
    return 0;
}
