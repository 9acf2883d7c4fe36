#pragma once
// The smallest U-Net with every kind of block, for tests: two levels (4x4 -> 2x2), one ResBlock per
// level, attention at 2x2, 2 groups, 2 heads, 1 channel in and out, unconditional, no dropout. Tests
// set what they need on top (classes, dropout, a context).

#include <diffuse/models/unet.hpp>

namespace diffuse::testing_support {

inline UNetConfig two_level_unet_config() {
    UNetConfig c;
    c.model_channels = 4;
    c.channel_mult = {1, 2};
    c.num_res_blocks = 1;
    c.attention_resolutions = {2};
    c.groups = 2;
    c.heads = 2;
    c.image_size = 4;
    c.dropout = 0.0;
    return c;
}

/// The trainer tests' U-Net: two levels at 8x8 (8 and 16 channels), one ResBlock each, attention at
/// 4x4, 4 groups, 1 channel in and out, 2 classes, no dropout.
inline UNetConfig trainer_unet_config() {
    UNetConfig c;
    c.model_channels = 8;
    c.channel_mult = {1, 2};
    c.num_res_blocks = 1;
    c.attention_resolutions = {4};
    c.groups = 4;
    c.image_size = 8;
    c.num_classes = 2;
    c.dropout = 0.0;
    return c;
}

}  // namespace diffuse::testing_support
