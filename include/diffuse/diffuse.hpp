#pragma once
// diffuse: diffusion models on Eigen tensors. This header includes every public header.

#include "diffuse/version.hpp"

#include "diffuse/core/channels.hpp"
#include "diffuse/core/elementwise.hpp"
#include "diffuse/core/error.hpp"
#include "diffuse/core/memory.hpp"
#include "diffuse/core/random.hpp"
#include "diffuse/core/shape.hpp"
#include "diffuse/core/tensor.hpp"
#include "diffuse/core/threading.hpp"

#include "diffuse/data/shuffle.hpp"

#include "diffuse/schedule/betas.hpp"
#include "diffuse/schedule/named.hpp"
#include "diffuse/schedule/noise_schedule.hpp"
#include "diffuse/schedule/respacing.hpp"

#include "diffuse/process/forward.hpp"
#include "diffuse/process/gaussian.hpp"
#include "diffuse/process/hybrid_loss.hpp"
#include "diffuse/process/parameterization.hpp"
#include "diffuse/process/posterior.hpp"
#include "diffuse/process/reverse.hpp"
#include "diffuse/process/thresholding.hpp"
#include "diffuse/process/vlb.hpp"

#include "diffuse/nn/timestep_embedding.hpp"
#include "diffuse/process/losses.hpp"

#include "diffuse/nn/attention.hpp"
#include "diffuse/nn/conv2d.hpp"
#include "diffuse/nn/cross_entropy.hpp"
#include "diffuse/nn/dropout.hpp"
#include "diffuse/nn/embedding.hpp"
#include "diffuse/nn/group_norm.hpp"
#include "diffuse/nn/linear.hpp"
#include "diffuse/nn/parameter.hpp"
#include "diffuse/nn/pooling.hpp"
#include "diffuse/nn/res_block.hpp"
#include "diffuse/nn/resample.hpp"
#include "diffuse/nn/silu.hpp"
#include "diffuse/nn/time_mlp.hpp"

#include "diffuse/models/autoencoder.hpp"
#include "diffuse/models/latent_diffusion.hpp"
#include "diffuse/models/unet.hpp"

#include "diffuse/optim/adam.hpp"
#include "diffuse/optim/autoencoder_trainer.hpp"
#include "diffuse/optim/clip.hpp"
#include "diffuse/optim/ema.hpp"
#include "diffuse/optim/lr_schedule.hpp"
#include "diffuse/optim/trainer.hpp"

#include "diffuse/samplers/ddim.hpp"
#include "diffuse/samplers/ddpm.hpp"
#include "diffuse/samplers/denoiser.hpp"
#include "diffuse/samplers/dpm_solver.hpp"
#include "diffuse/samplers/guidance.hpp"
#include "diffuse/samplers/inpainting.hpp"
#include "diffuse/samplers/loop.hpp"
#include "diffuse/samplers/options.hpp"

#include "diffuse/testing/gradient_check.hpp"
