// Kernel softmax_backward: the gradient of softmax (or, with LOG_SOFTMAX, log-softmax)
// in one fused kernel. `src` holds the forward output y; `dst` holds the incoming
// gradient dy and receives dx in its place:
//   softmax:     dx = y * (dy - sum(dy * y)) / T
//   log-softmax: dx = (dy - exp(y) * sum(dy)) / T
// (T the scalar temperature of the forward op, 1 unless it was scaled), times the slope
// of the forward op's soft-cap with SOFTCAP.
//
// Dispatch: as softmax_workgroup_shared (2-D grid, one row per workgroup). Each
// invocation sums its strided share of the row (blocked, as range_stats does), a tree
// over workgroup memory (common/workgroup_tree.wgsl) adds the shares, and a second
// sweep writes dx. Each element of dst is read and then
// written by the same invocation, after the barrier that ends the reduction.

#import softmax_common
#import workgroup_tree

// With SOFTCAP, the forward op's logits x (f32), for the cap's slope: dx is multiplied
// by d(C tanh(x / C)) / dx = 1 - tanh(x / C)^2. Row r starts at element
// params.targets_first + r * params.logits_stride. (A dummy otherwise.)
@group(0) @binding(10) var<storage, read_write> logits: array<f32>;

fn slope1(row: u32, col: u32) -> f32 {
    let x = logits[params.targets_first + row * params.logits_stride + col];
    let t = tanh(clamp(x / params.softcap, -10.0, 10.0));
    return 1.0 - t * t;
}

fn slope4(row: u32, col: u32) -> vec4<f32> {
    return vec4<f32>(slope1(row, col), slope1(row, col + 1u), slope1(row, col + 2u), slope1(row, col + 3u));
}

// The factor of dy in the row sum: y for softmax, 1 for log-softmax.
fn weight4(y: vec4<f32>) -> vec4<f32> {
    return select(y, vec4<f32>(1.0), LOG_SOFTMAX);
}

fn weight1(y: f32) -> f32 {
    return select(y, 1.0, LOG_SOFTMAX);
}

fn gradient4(y: vec4<f32>, dy: vec4<f32>, total: f32) -> vec4<f32> {
    if LOG_SOFTMAX {
        return (dy - exp(y) * total) * params.inv_temperature;
    }
    return y * (dy - vec4<f32>(total)) * params.inv_temperature;
}

fn gradient1(y: f32, dy: f32, total: f32) -> f32 {
    if LOG_SOFTMAX {
        return (dy - exp(y) * total) * params.inv_temperature;
    }
    return y * (dy - total) * params.inv_temperature;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn softmax_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = wg.y * params.grid_x + wg.x;
    if row >= params.rows {
        return;
    }
    let end4 = body_end(0u, params.cols);
    let n4 = end4 / 4u;
    let y4_base = src_index(row, 0u) / 4u;
    let g4_base = dst_index(row, 0u) / 4u;
    var total = 0.0;
    var block = 0.0;
    var count = 0u;
    for (var i = lid; i < n4; i += WORKGROUP_SIZE) {
        block += dot(read_dst4(g4_base + i), weight4(read_src4(y4_base + i)));
        count += 1u;
        if count == GROUP * BLOCK {
            total += block;
            block = 0.0;
            count = 0u;
        }
    }
    for (var j = end4 + lid; j < params.cols; j += WORKGROUP_SIZE) {
        block += read_dst1(dst_index(row, j)) * weight1(read_src1(src_index(row, j)));
    }
    let sum = tree_sum(total + block, lid);
    for (var i = lid; i < n4; i += WORKGROUP_SIZE) {
        var d = gradient4(read_src4(y4_base + i), read_dst4(g4_base + i), sum);
        if SOFTCAP {
            d *= slope4(row, 4u * i);
        }
        write_dst4(g4_base + i, d);
    }
    for (var j = end4 + lid; j < params.cols; j += WORKGROUP_SIZE) {
        let at = dst_index(row, j);
        var d = gradient1(read_src1(src_index(row, j)), read_dst1(at), sum);
        if SOFTCAP {
            d *= slope1(row, j);
        }
        write_dst1(at, d);
    }
}
