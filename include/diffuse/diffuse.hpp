#pragma once
// diffuse: diffusion models on Eigen tensors. This header includes every public header.

#include "diffuse/version.hpp"

#include "diffuse/core/error.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include "diffuse/schedule/betas.hpp"
#include "diffuse/schedule/named.hpp"
#include "diffuse/schedule/noise_schedule.hpp"
#include "diffuse/schedule/respacing.hpp"

#include "diffuse/process/forward.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/posterior.hpp"

#include "diffuse/nn/timestep_embedding.hpp"
