// See odr_a.cpp.
#include <diffuse/diffuse.hpp>
#ifdef DIFFUSE_ODR_WITH_IO
#include <diffuse/io.hpp>  // not in the umbrella: it needs zlib
#endif

const char* odr_b_version() { return DIFFUSE_VERSION_STRING; }
