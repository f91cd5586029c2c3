// common.wgsl — helpers shared by several kernel families. Prepended (once, in
// src/kernels/source.rs) to every family that uses activations, because WGSL has no #include.
//
// Activation codes (must match `Activation::code` in src/kernels/elementwise.rs):
//   0 identity, 1 ReLU, 2 LeakyReLU(alpha), 3 sigmoid, 4 tanh, 5 GELU (tanh approximation),
//   6 ReLU6, 7 SiLU, 8 Hardswish, 9 Hardsigmoid
//
// GELU(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))  (Hendrycks & Gimpel; PyTorch approximate='tanh')
// PyTorch's definitions, derivatives at the kinks included (aten's *_backward kernels):
//   ReLU6(x)       = min(max(x, 0), 6)         f' = 1 on (0, 6), else 0
//   SiLU(x)        = x·σ(x)                    f' = σ(x)·(1 + x·σ(−x))
//   Hardswish(x)   = x·ReLU6(x + 3)/6          f' = 0 for x ≤ −3, x/3 + 1/2 on (−3, 3), 1 for x ≥ 3
//                  (PyTorch since pytorch/pytorch#148049, 2025; before it −1/2 at −3 and 3/2 at 3)
//   Hardsigmoid(x) = ReLU6(x + 3)/6            f' = 1/6 on (−3, 3), else 0
// SiLU and Hardswish are not monotonic, so their f' needs the pre-activation (no case in
// activate_grad_from_output; Activation::grad_from_output says so to the launchers).

const ACT_IDENTITY: u32 = 0u;
const ACT_RELU: u32 = 1u;
const ACT_LEAKY_RELU: u32 = 2u;
const ACT_SIGMOID: u32 = 3u;
const ACT_TANH: u32 = 4u;
const ACT_GELU: u32 = 5u;
const ACT_RELU6: u32 = 6u;
const ACT_SILU: u32 = 7u;
const ACT_HARDSWISH: u32 = 8u;
const ACT_HARDSIGMOID: u32 = 9u;

const GELU_K: f32 = 0.7978845608028654; // √(2/π)
const GELU_C: f32 = 0.044715;

// Logistic function without overflow: exp of a non-positive number only.
fn sigmoid_stable(x: f32) -> f32 {
    let e = exp(-abs(x));
    let s = 1.0 / (1.0 + e);
    // x < 0: σ(x) = e/(1+e) with e = exp(x), not 1 − 1/(1+e), which cancels to 0 for x ≪ 0
    return select(e * s, s, x >= 0.0);
}

// tanh through the stable sigmoid: tanh(x) = 2σ(2x) − 1. The built-in tanh returns NaN for
// |x| > ~44 on some drivers (exp overflow inside); this form saturates cleanly.
fn tanh_stable(x: f32) -> f32 {
    let t = 2.0 * sigmoid_stable(2.0 * x) - 1.0;
    // near 0 the difference above loses relative precision; tanh(x) ≈ x − x³/3 there
    return select(t, x - x * x * x / 3.0, abs(x) < 1e-3);
}

fn activate(act: u32, x: f32, alpha: f32) -> f32 {
    switch act {
        case 1u: { return max(x, 0.0); }
        case 2u: { return select(alpha * x, x, x > 0.0); }
        case 3u: { return sigmoid_stable(x); }
        case 4u: { return tanh_stable(x); }
        case 5u: {
            let u = GELU_K * (x + GELU_C * x * x * x);
            return 0.5 * x * (1.0 + tanh_stable(u));
        }
        case 6u: { return min(max(x, 0.0), 6.0); }
        case 7u: { return x * sigmoid_stable(x); }
        case 8u: { return x * min(max(x + 3.0, 0.0), 6.0) / 6.0; }
        case 9u: { return min(max(x + 3.0, 0.0), 6.0) / 6.0; }
        default: { return x; }
    }
}

// f'(z) from the pre-activation z.
fn activate_grad_from_input(act: u32, z: f32, alpha: f32) -> f32 {
    switch act {
        case 1u: { return select(0.0, 1.0, z > 0.0); }
        case 2u: { return select(alpha, 1.0, z > 0.0); }
        case 3u: { let s = sigmoid_stable(z); return s * (1.0 - s); }
        case 4u: { let t = tanh_stable(z); return 1.0 - t * t; }
        case 5u: {
            let u = GELU_K * (z + GELU_C * z * z * z);
            let t = tanh_stable(u);
            let du = GELU_K * (1.0 + 3.0 * GELU_C * z * z);
            return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du;
        }
        case 6u: { return select(0.0, 1.0, z > 0.0 && z < 6.0); }
        // 1 − σ(z) as σ(−z): no cancellation for large z
        case 7u: { return sigmoid_stable(z) * (1.0 + z * sigmoid_stable(-z)); }
        case 8u: { return select(select(1.0, z / 3.0 + 0.5, z < 3.0), 0.0, z <= -3.0); }
        case 9u: { return select(0.0, 1.0 / 6.0, z > -3.0 && z < 3.0); }
        default: { return 1.0; }
    }
}

// f'(z) from the output a = f(z); valid for every activation but GELU, SiLU and Hardswish (not
// invertible). LeakyReLU needs alpha > 0 so that sign(a) = sign(z). ReLU6: 0 < a < 6 ⇔ 0 < z < 6
// exactly; Hardsigmoid: 0 < a < 1 ⇔ −3 < z < 3 but for the ≤ 2 ulps below 3 where z + 3 rounds to 6.
fn activate_grad_from_output(act: u32, a: f32, alpha: f32) -> f32 {
    switch act {
        case 1u: { return select(0.0, 1.0, a > 0.0); }
        case 2u: { return select(alpha, 1.0, a > 0.0); }
        case 3u: { return a * (1.0 - a); }
        case 4u: { return 1.0 - a * a; }
        case 6u: { return select(0.0, 1.0, a > 0.0 && a < 6.0); }
        case 9u: { return select(0.0, 1.0 / 6.0, a > 0.0 && a < 1.0); }
        default: { return 1.0; }
    }
}

// Flat invocation index for 1-D work folded into a 2-D grid (x ≤ 65535 workgroups).
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>, wg_size: u32) -> u32 {
    return gid.x + gid.y * nwg.x * wg_size;
}

// lowbias32 (Chris Wellons, hash-prospector): a bijective u32 mix with low bias.
fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// The counter-based hash behind dropout's masks and the augmentation's draws: mix32 chained over
// the run's seed (two words), the step, the example's position q in the epoch's order and the
// draw's index k. Its twin is reference::layers::seeded_hash.
fn seeded_hash(seed_lo: u32, seed_hi: u32, step: u32, q: u32, k: u32) -> u32 {
    var h = mix32(seed_lo);
    h = mix32(h ^ seed_hi);
    h = mix32(h ^ step);
    h = mix32(h ^ q);
    return mix32(h ^ k);
}

// ---- f16 storage: two halves per u32, the first in the low 16 bits --------------------------
// Conversions in integer arithmetic, so every adapter gives the same bits as the `half` crate
// (f16::from_f32 / to_f32): WGSL's pack2x16float leaves the rounding of an inexact value and the
// handling of subnormals to the implementation; this rounds to nearest, ties to even, keeps
// subnormals, overflows to ±inf and keeps NaN a NaN (quiet bit set, top payload bits kept).
// Arithmetic stays f32: these only narrow what is stored and widen what is read.
// The f16 bits of the f32 whose bits are `b` (taken as bits, so no NaN or subnormal is altered
// on the way in).
fn f16_from_f32_bits(b: u32) -> u32 {
    let sign = (b >> 16u) & 0x8000u;
    let e = (b >> 23u) & 0xffu;
    let m = b & 0x7fffffu;
    if e == 0xffu {
        return sign | 0x7c00u | select(0u, 0x200u, m != 0u) | (m >> 13u);
    }
    let he = i32(e) - 112;  // the f16 exponent field: e − 127 + 15
    if he >= 31 { return sign | 0x7c00u; }
    if he <= 0 {
        if he < -10 { return sign; }  // below half the smallest subnormal
        let mm = m | 0x800000u;
        let shift = u32(14 - he);
        let round_bit = 1u << (shift - 1u);
        var hm = mm >> shift;
        if (mm & round_bit) != 0u && (mm & (3u * round_bit - 1u)) != 0u { hm += 1u; }
        return sign | hm;
    }
    let h = sign | (u32(he) << 10u) | (m >> 13u);
    if (m & 0x1000u) != 0u && (m & 0x2fffu) != 0u { return h + 1u; }
    return h;
}

fn f16_bits(x: f32) -> u32 {
    return f16_from_f32_bits(bitcast<u32>(x));
}

// The f32 bits of the f16 in the low 16 bits of `h` (exact; a NaN comes out quiet, as from
// half's to_f32).
fn f32_bits_of_f16(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0u {
        // zero or subnormal: m · 2⁻²⁴, a normal f32
        return bitcast<u32>(f32(m) * 5.9604644775390625e-8) | sign;
    }
    if e == 31u { return sign | 0x7f800000u | select(0u, 0x400000u, m != 0u) | (m << 13u); }  // NaN: quiet, as half's
    return sign | ((e + 112u) << 23u) | (m << 13u);
}

fn f16_value(h: u32) -> f32 {
    return bitcast<f32>(f32_bits_of_f16(h));
}

// Two f32 as one word of halves (`lo` in the low 16 bits).
fn pack_f16_pair(lo: f32, hi: f32) -> u32 {
    return f16_bits(lo) | (f16_bits(hi) << 16u);
}
