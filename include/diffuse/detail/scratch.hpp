#pragma once
// Per-thread scratch buffers that grow and are kept, so hot loops allocate nothing after warm-up.
// Not for direct use.
//
// Aligned as Eigen aligns its own arrays. This matters for more than speed: Eigen evaluates the
// unaligned head of a vectorised expression with scalar code, and its scalar and vector exp() differ
// in the last bit, so an expression written into a buffer whose alignment depended on the allocator's
// history would give different bits from one process to the next (a resumed training run would then
// drift from an uninterrupted one).

#include <Eigen/Core>

#include <cstddef>
#include <vector>

namespace diffuse::detail {

/// The scratch buffers: one per use that can be live while another is (per element type). Uses that
/// are never live at once share one (conv_planes).
enum class Scratch {
    conv_input_planes,  // conv2d forward: every sample's shifted input planes, [N, plane]
    conv_plane_rows,    // conv2d: pointers to the K rows of X_col, [K]
    conv_planes,        // conv2d: one sample's shifted planes, of x (forward, backward) or of dy (backward)
    conv_dy_rows,       // conv2d backward: pointers to dY's rows, [Cout * 9]
    conv_columns,       // conv2d backward: W^T dY before col2im, [K, P]
    conv_group_output,  // conv2d forward: a group of samples' outputs, [Cout, samples * P]
    gemm_strip,         // GEMM: a packed strip of B, [kc][NR]
    gemm_packed_b,      // GEMM: B^T packed, [strips][P][NR]
    gemm_panel,         // GEMM: a packed panel of A, [kc][MR]
    gemm_rows,          // GEMM: pointers to an image's channel rows, [C]
    wgrad_dy,           // 3x3 weight gradient: a group's dY rows with zero tails, [S][Cout][pitch]
    wgrad_planes,       // 3x3 weight gradient: one input channel's three edge-masked planes, [S][3][len]
    silu_sigmoid,       // SiLU backward: sigmoid(x), [n]
    winograd_v,         // Winograd: a block's transformed input patches, [16][C][block]
    winograd_m,         // Winograd: their products with the transformed kernels, [16][O][block]
    winograd_padded,    // Winograd: one channel's plane with its zero border, [2 * rows + 2, 2 * cols + 2]
};

/// A buffer of at least n elements owned by the calling thread, the one of use `Slot`. Contents are
/// unspecified.
template <class T, Scratch Slot>
T* scratch(std::size_t n) {
    thread_local std::vector<T, Eigen::aligned_allocator<T>> buffer;
    if (buffer.size() < n) buffer.resize(n);
    return buffer.data();
}

}  // namespace diffuse::detail
