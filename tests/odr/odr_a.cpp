// With odr_b.cpp: two translation units include every public header and are linked together, so a
// non-inline function or variable defined in a header fails the link with a duplicate symbol.
#include <diffuse/diffuse.hpp>
#ifdef DIFFUSE_ODR_WITH_IO
#include <diffuse/io.hpp>  // not in the umbrella: it needs zlib
#endif

#include <cstring>
#include <iostream>

const char* odr_b_version();

int main() {
    std::cout << "diffuse " << DIFFUSE_VERSION_STRING << '\n';
    return std::strcmp(odr_b_version(), DIFFUSE_VERSION_STRING) == 0 ? 0 : 1;
}
