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

}  // namespace diffuse::testing_support
