// run_if_supported LEVEL PROGRAM [ARGS...]: runs PROGRAM if this processor (and its operating
// system) supports the x86-64 micro-architecture level LEVEL (x86-64, x86-64-v2, x86-64-v3,
// x86-64-v4), as cpuid reports it; otherwise says so and exits 77, which CTest reports as a
// skipped test. It is compiled for the baseline, so it runs on any x86-64 machine and never
// executes an instruction the processor lacks: a program built for x86-64-v4 must not even start
// on an AVX2 machine, since its static initialisers may already use AVX-512.

#include <cstdio>
#include <cstring>

#include <unistd.h>

namespace {

struct Level {
    const char* name;
    const char* what;
};

const Level levels[] = {{"x86-64", "SSE2"},
                        {"x86-64-v2", "SSE4.2, POPCNT"},
                        {"x86-64-v3", "AVX2, FMA, BMI2"},
                        {"x86-64-v4", "AVX-512 F, BW, CD, DQ, VL"}};

// 1 if the processor has the level, 0 if not, -1 for a name that is no level. __builtin_cpu_supports
// needs a string literal, hence one call per level; it returns any non-zero int (even a negative one)
// for yes.
int supported(const char* level) {
    __builtin_cpu_init();
    if (std::strcmp(level, "x86-64") == 0) return __builtin_cpu_supports("x86-64") != 0;
    if (std::strcmp(level, "x86-64-v2") == 0) return __builtin_cpu_supports("x86-64-v2") != 0;
    if (std::strcmp(level, "x86-64-v3") == 0) return __builtin_cpu_supports("x86-64-v3") != 0;
    if (std::strcmp(level, "x86-64-v4") == 0) return __builtin_cpu_supports("x86-64-v4") != 0;
    return -1;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s LEVEL PROGRAM [ARGS...]\n", argv[0]);
        return 2;
    }
    const char* level = argv[1];
    const char* what = nullptr;
    for (const Level& l : levels) {
        if (std::strcmp(l.name, level) == 0) what = l.what;
    }
    const int has = supported(level);
    if (has < 0 || what == nullptr) {
        std::fprintf(stderr, "run_if_supported: unknown level '%s' (x86-64, x86-64-v2, x86-64-v3 or x86-64-v4)\n", level);
        return 2;
    }
    if (has == 0) {
        std::printf("SKIPPED: this processor lacks %s (%s); the kernels compiled for it were not run here\n", level, what);
        return 77;
    }
    std::printf("this processor supports %s (%s): running %s\n", level, what, argv[2]);
    std::fflush(stdout);
    execv(argv[2], argv + 2);
    std::perror("run_if_supported: execv");
    return 2;
}
