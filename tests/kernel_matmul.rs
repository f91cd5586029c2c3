//! matmul against the float64 reference: every transpose form, odd and non-square shapes,
//! with and without the fused bias + activation epilogue, output poisoned with NaN first.
mod common;
use common::*;
use headswap::kernels::{self, Activation, Epilogue, Transpose};
use headswap::reference;

fn check(m: usize, n: usize, k: usize, t: Transpose, seed: u64) {
    let gpu = gpu();
    let (ashape, bshape) = match t {
        Transpose::NN => ([m, k], [k, n]),
        Transpose::NT => ([m, k], [n, k]),
        Transpose::TN => ([k, m], [k, n]),
        Transpose::TT => ([k, m], [n, k]),
    };
    let a = rand_vec(seed, m * k);
    let b = rand_vec(seed + 1, k * n);
    let ga = upload(&gpu, &ashape, &a);
    let gb = upload(&gpu, &bshape, &b);
    let mut gc = poisoned(&gpu, &[m, n]);
    kernels::matmul(&gpu, &ga, &gb, &mut gc, t).unwrap();
    let expected = reference::matmul(&to_f64(&a), &to_f64(&b), m, n, k, t);
    let tol = Tolerance { rel: 1e-4, abs: 1e-5 * (k as f64).sqrt() };
    assert_close(&format!("matmul {t:?} m={m} n={n} k={k}"), &gc.download(&gpu).unwrap(), &expected, tol);
}

#[test]
fn odd_square_sizes_every_form() {
    for t in [Transpose::NN, Transpose::NT, Transpose::TN, Transpose::TT] {
        for (i, &s) in ODD_SIZES.iter().enumerate() {
            check(s, s, s, t, 10 + i as u64);
        }
    }
}

#[test]
fn non_square_shapes() {
    let shapes = [(1, 7, 33), (33, 1, 7), (7, 33, 1), (127, 5, 64), (3, 257, 19), (65, 130, 3), (256, 10, 784)];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for t in [Transpose::NN, Transpose::NT, Transpose::TN] {
            check(m, n, k, t, 100 + i as u64);
        }
    }
}

#[test]
fn seeded_random_shapes() {
    let mut r = headswap::Rng::new(2024);
    for i in 0..8 {
        let (m, n, k) = (1 + r.below(150) as usize, 1 + r.below(150) as usize, 1 + r.below(150) as usize);
        check(m, n, k, [Transpose::NN, Transpose::NT, Transpose::TN][i % 3], 500 + i as u64);
    }
}

#[test]
fn fused_bias_and_activation_epilogue() {
    let gpu = gpu();
    let (m, n, k) = (33, 19, 7);
    let x = rand_vec(1, m * k);
    let w = rand_vec(2, n * k);
    let bias = rand_vec(3, n);
    let gx = upload(&gpu, &[m, k], &x);
    let gw = upload(&gpu, &[n, k], &w);
    let gbias = upload(&gpu, &[n], &bias);
    for act in [Activation::Identity, Activation::Relu, Activation::LeakyRelu(0.1), Activation::Sigmoid, Activation::Tanh, Activation::Gelu] {
        let mut gy = poisoned(&gpu, &[m, n]);
        kernels::matmul_ex(&gpu, &gx, &gw, &mut gy, Transpose::NT, Epilogue { bias: Some(&gbias), activation: act }).unwrap();
        let mut z = reference::matmul(&to_f64(&x), &to_f64(&w), m, n, k, Transpose::NT);
        reference::bias_add(&mut z, &to_f64(&bias));
        let expected: Vec<f64> = z.iter().map(|&v| reference::activate(act, v)).collect();
        assert_close(&format!("dense forward {act:?}"), &gy.download(&gpu).unwrap(), &expected, Tolerance::F32);
    }
}

#[test]
fn shape_mismatch_is_an_error_not_a_panic() {
    let gpu = gpu();
    let a = upload(&gpu, &[2, 3], &[0.0; 6]);
    let b = upload(&gpu, &[4, 2], &[0.0; 8]);
    let mut c = poisoned(&gpu, &[2, 2]);
    let err = kernels::matmul(&gpu, &a, &b, &mut c, Transpose::NN).unwrap_err();
    assert!(err.to_string().contains("inner dimensions"), "{err}");
    let mut c_wrong = poisoned(&gpu, &[3, 3]);
    let b_ok = upload(&gpu, &[3, 2], &[0.0; 6]);
    assert!(kernels::matmul(&gpu, &a, &b_ok, &mut c_wrong, Transpose::NN).is_err());
}

#[test]
fn pipelines_are_compiled_once() {
    let gpu = gpu();
    let a = upload(&gpu, &[4, 4], &rand_vec(1, 16));
    let mut c = poisoned(&gpu, &[4, 4]);
    kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NT).unwrap();
    let before = gpu.pipeline_cache().len();
    for _ in 0..3 {
        kernels::matmul(&gpu, &a, &a, &mut c, Transpose::NT).unwrap();
    }
    assert_eq!(gpu.pipeline_cache().len(), before, "a repeated launch compiled a new pipeline");
}
