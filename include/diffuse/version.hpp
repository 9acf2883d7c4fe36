#pragma once
// The one place the version lives; CMake parses these three lines.
#define DIFFUSE_VERSION_MAJOR 0
#define DIFFUSE_VERSION_MINOR 1
#define DIFFUSE_VERSION_PATCH 0

#define DIFFUSE_STRINGIFY_DETAIL(x) #x
#define DIFFUSE_STRINGIFY(x) DIFFUSE_STRINGIFY_DETAIL(x)
#define DIFFUSE_VERSION_STRING                                                                     \
    DIFFUSE_STRINGIFY(DIFFUSE_VERSION_MAJOR)                                                       \
    "." DIFFUSE_STRINGIFY(DIFFUSE_VERSION_MINOR) "." DIFFUSE_STRINGIFY(DIFFUSE_VERSION_PATCH)
