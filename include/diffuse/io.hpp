#pragma once
// diffuse's readers and writers. Not in diffuse/diffuse.hpp, which needs only Eigen: these need zlib
// and nlohmann/json, so link the diffuse::io target (find_package(diffuse CONFIG REQUIRED COMPONENTS io)).

#include "diffuse/io/atomic_file.hpp"
#include "diffuse/io/checkpoint.hpp"
#include "diffuse/io/idx.hpp"
#include "diffuse/io/safetensors.hpp"
