// stb_image_write's implementation, compiled once, where stb comes as headers only. Debian's
// libstb-dev also ships it compiled (pkg-config "stb"); examples/CMakeLists.txt uses that when found,
// and this file is then not built.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
