//! Reductions against the float64 reference: column/row sums, row maxima and totals at odd and
//! non-square shapes, outputs poisoned with NaN first; the accumulate mode; bit-identical repeat
//! runs (fixed summation order, no atomics); shape errors.
mod common;
use common::*;
use headswap::kernels::reduce;
use headswap::{Tensor, reference};

/// Sums of n values in [-1, 1): the rounding error of an f32 running sum is a random walk whose
/// steps grow with the partial sum (~√k after k terms), about 0.4·ε·n in all; allow 3× that.
fn sum_tol(n: usize) -> Tolerance {
    Tolerance { rel: 1e-5, abs: 1.5e-7 * n.max(16) as f64 }
}

fn check_matrix(rows: usize, cols: usize, seed: u64) {
    let gpu = gpu();
    let x = rand_vec(seed, rows * cols);
    let gx = upload(&gpu, &[rows, cols], &x);
    let xd = to_f64(&x);
    let what = |op: &str| format!("{op} rows={rows} cols={cols}");

    let mut out = poisoned(&gpu, &[cols]);
    reduce::col_sum(&gpu, &gx, &mut out).unwrap();
    assert_close(&what("col_sum"), &out.download(&gpu).unwrap(), &reference::reduce::col_sum(&xd, rows, cols), sum_tol(rows));

    let mut out = poisoned(&gpu, &[rows]);
    reduce::row_sum(&gpu, &gx, &mut out).unwrap();
    assert_close(&what("row_sum"), &out.download(&gpu).unwrap(), &reference::reduce::row_sum(&xd, rows, cols), sum_tol(cols));

    let mut out = poisoned(&gpu, &[rows]);
    reduce::row_max(&gpu, &gx, &mut out).unwrap();
    // a maximum is one of the inputs: exact
    assert_close(
        &what("row_max"),
        &out.download(&gpu).unwrap(),
        &reference::reduce::row_max(&xd, rows, cols),
        Tolerance { rel: 0.0, abs: 0.0 },
    );

    let mut out = poisoned(&gpu, &[1]);
    reduce::sum(&gpu, &gx, &mut out, false).unwrap();
    assert_close(&what("sum"), &out.download(&gpu).unwrap(), &[reference::reduce::sum(&xd)], sum_tol(rows * cols));
}

#[test]
fn odd_sizes_every_reduction() {
    for (i, &r) in ODD_SIZES.iter().enumerate() {
        for (j, &c) in ODD_SIZES.iter().enumerate() {
            check_matrix(r, c, 10 * i as u64 + j as u64);
        }
    }
}

#[test]
fn non_square_shapes() {
    let shapes = [(1, 1000), (1000, 1), (3, 511), (511, 3), (64, 64), (65, 63), (256, 10), (10, 784), (2, 70_000)];
    for (i, &(r, c)) in shapes.iter().enumerate() {
        check_matrix(r, c, 300 + i as u64);
    }
}

#[test]
fn sum_sizes_around_the_workgroup() {
    let gpu = gpu();
    for (i, &n) in [1usize, 2, 7, 255, 256, 257, 511, 512, 513, 1000, 65_537, 1_000_003].iter().enumerate() {
        let x = rand_vec(700 + i as u64, n);
        let gx = upload(&gpu, &[n], &x);
        let mut out = poisoned(&gpu, &[1]);
        reduce::sum(&gpu, &gx, &mut out, false).unwrap();
        assert_close(&format!("sum n={n}"), &out.download(&gpu).unwrap(), &[reference::reduce::sum(&to_f64(&x))], sum_tol(n));
    }
}

#[test]
fn sum_of_an_empty_tensor_is_zero() {
    let gpu = gpu();
    let gx = Tensor::zeros(&gpu, &[0]).unwrap();
    let mut out = poisoned(&gpu, &[1]);
    reduce::sum(&gpu, &gx, &mut out, false).unwrap();
    assert_eq!(out.download(&gpu).unwrap(), vec![0.0]);
    out.fill(&gpu, 2.5).unwrap();
    reduce::sum(&gpu, &gx, &mut out, true).unwrap();
    assert_eq!(out.download(&gpu).unwrap(), vec![2.5]);
}

#[test]
fn sum_accumulates_into_out_when_asked() {
    let gpu = gpu();
    let n = 3001;
    let x = rand_vec(41, n);
    let gx = upload(&gpu, &[n], &x);
    let total = reference::reduce::sum(&to_f64(&x));
    let mut out = upload(&gpu, &[1], &[5.0]);
    reduce::sum(&gpu, &gx, &mut out, true).unwrap();
    assert_close("sum accumulate once", &out.download(&gpu).unwrap(), &[5.0 + total], sum_tol(n));
    // a dispatch built once and replayed, as the trainer does over an epoch
    let d = reduce::sum_dispatch(&gpu, &gx, &out, true).unwrap();
    gpu.run("replay", &[&d, &d]).unwrap();
    gpu.run("replay", &[&d]).unwrap();
    assert_close("sum accumulate 4 times", &out.download(&gpu).unwrap(), &[5.0 + 4.0 * total], sum_tol(4 * n));
    // without accumulate the old value is overwritten
    reduce::sum(&gpu, &gx, &mut out, false).unwrap();
    assert_close("sum overwrite", &out.download(&gpu).unwrap(), &[total], sum_tol(n));
}

/// More outputs than 65,535 workgroups of 64 hold: the grid folds into y.
#[test]
fn folded_grids_cover_every_output() {
    let gpu = gpu();
    let n = 65_535 * 64 + 3;
    let x = rand_vec(51, n);
    let xd = to_f64(&x);
    let mut out = poisoned(&gpu, &[n]);
    reduce::col_sum(&gpu, &upload(&gpu, &[1, n], &x), &mut out).unwrap();
    assert_close("col_sum [1, n]", &out.download(&gpu).unwrap(), &xd, Tolerance { rel: 0.0, abs: 0.0 });
    let mut out = poisoned(&gpu, &[n]);
    reduce::row_max(&gpu, &upload(&gpu, &[n, 1], &x), &mut out).unwrap();
    assert_close("row_max [n, 1]", &out.download(&gpu).unwrap(), &xd, Tolerance { rel: 0.0, abs: 0.0 });
}

#[test]
fn row_max_of_negative_and_large_values_and_nan() {
    let gpu = gpu();
    let (rows, cols) = (5, 4);
    let x = vec![
        -3.0,
        -2.0,
        -7.0,
        -2.5, // all negative: not a 0-initialised max
        -1e30,
        1e30,
        3.0,
        -1e4, // large
        1.0,
        f32::NAN,
        2.0,
        0.0, // NaN in the middle
        f32::NAN,
        1.0,
        2.0,
        3.0, // NaN first
        0.5,
        0.25,
        4.0,
        f32::NAN, // NaN last
    ];
    let mut out = poisoned(&gpu, &[rows]);
    reduce::row_max(&gpu, &upload(&gpu, &[rows, cols], &x), &mut out).unwrap();
    let got = out.download(&gpu).unwrap();
    assert_eq!(&got[..2], &[-2.0, 1e30f32]);
    for (r, v) in got.iter().enumerate().skip(2) {
        assert!(v.is_nan(), "row {r} holds a NaN, its max is {v}");
    }
    let expect = reference::reduce::row_max(&to_f64(&x), rows, cols);
    assert_eq!(&expect[..2], &[-2.0, 1e30f32 as f64]);
    assert!(expect[2..].iter().all(|v| v.is_nan()));
}

/// Reductions longer than one invocation may loop on llvmpipe (65,535 iterations) and longer
/// than a slice (4,096): split over several invocations, combined in order, still right.
#[test]
fn long_reductions_are_split_and_still_right() {
    let gpu = gpu();
    // ones: every count is exact in f32, so a silently truncated loop cannot hide
    for &len in &[4096usize, 4097, 65_535, 65_536, 600_001] {
        let ones = vec![1.0f32; 2 * len];
        let mut out = poisoned(&gpu, &[2]);
        reduce::row_sum(&gpu, &upload(&gpu, &[2, len], &ones), &mut out).unwrap();
        assert_eq!(out.download(&gpu).unwrap(), vec![len as f32; 2], "row_sum of {len} ones");
        let mut out = poisoned(&gpu, &[2]);
        reduce::col_sum(&gpu, &upload(&gpu, &[len, 2], &ones), &mut out).unwrap();
        assert_eq!(out.download(&gpu).unwrap(), vec![len as f32; 2], "col_sum of {len} ones");
        let mut out = poisoned(&gpu, &[1]);
        reduce::sum(&gpu, &upload(&gpu, &[2 * len], &ones), &mut out, false).unwrap();
        assert_eq!(out.download(&gpu).unwrap(), vec![2.0 * len as f32], "sum of {} ones", 2 * len);
    }
    // random values against the reference, several outputs per workgroup and slice counts
    for (i, &(r, c)) in [(3, 300_001), (300_001, 3), (70, 9000), (9000, 70), (1, 262_145)].iter().enumerate() {
        check_matrix(r, c, 900 + i as u64);
    }
    // the maximum in the first, a middle and the last element of a long row, and a NaN far in
    let len = 600_001;
    for (k, &at) in [0, len / 2 + 3, len - 1].iter().enumerate() {
        let mut x = rand_vec(950 + k as u64, len);
        x[at] = 7.5;
        let mut out = poisoned(&gpu, &[1]);
        reduce::row_max(&gpu, &upload(&gpu, &[1, len], &x), &mut out).unwrap();
        assert_eq!(out.download(&gpu).unwrap(), vec![7.5], "row_max with the max at {at}");
        x[len - 5] = f32::NAN;
        reduce::row_max(&gpu, &upload(&gpu, &[1, len], &x), &mut out).unwrap();
        assert!(out.download(&gpu).unwrap()[0].is_nan(), "a NaN at {} must give NaN", len - 5);
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn repeat_runs_are_bit_identical() {
    for (rows, cols) in [(1037, 513), (5, 100_003), (100_003, 5)] {
        repeat_runs_are_bit_identical_at(rows, cols);
    }
}

fn repeat_runs_are_bit_identical_at(rows: usize, cols: usize) {
    let gpu = gpu();
    let x = rand_range(61, rows * cols, -1000.0, 1000.0);
    let gx = upload(&gpu, &[rows, cols], &x);
    let run = |which: usize| -> Vec<u32> {
        let n = [cols, rows, rows, 1][which];
        let mut out = poisoned(&gpu, &[n]);
        match which {
            0 => reduce::col_sum(&gpu, &gx, &mut out),
            1 => reduce::row_sum(&gpu, &gx, &mut out),
            2 => reduce::row_max(&gpu, &gx, &mut out),
            _ => reduce::sum(&gpu, &gx, &mut out, false),
        }
        .unwrap();
        bits(&out.download(&gpu).unwrap())
    };
    for which in 0..4 {
        let first = run(which);
        for _ in 0..2 {
            assert_eq!(run(which), first, "reduction {which} of [{rows}, {cols}] gave different bits on a repeat run");
        }
    }
}

#[test]
fn shape_mismatch_is_an_error_not_a_panic() {
    let gpu = gpu();
    let x = upload(&gpu, &[3, 4], &[0.0; 12]);
    let mut wrong = poisoned(&gpu, &[5]);
    let err = reduce::col_sum(&gpu, &x, &mut wrong).unwrap_err();
    assert!(err.to_string().contains("col_sum"), "{err}");
    assert!(reduce::row_sum(&gpu, &x, &mut wrong).is_err());
    assert!(reduce::row_max(&gpu, &x, &mut wrong).is_err());
    let mut two = poisoned(&gpu, &[2]);
    assert!(reduce::sum(&gpu, &x, &mut two, false).is_err());
    // not 2-D
    let flat = upload(&gpu, &[12], &[0.0; 12]);
    let mut out12 = poisoned(&gpu, &[12]);
    assert!(reduce::col_sum(&gpu, &flat, &mut out12).is_err());
    assert!(reduce::row_sum(&gpu, &flat, &mut out12).is_err());
    // wrong dtype
    let xu = Tensor::from_u32(&gpu, &[3, 4], &[0; 12]).unwrap();
    let mut out4 = poisoned(&gpu, &[4]);
    assert!(reduce::col_sum(&gpu, &xu, &mut out4).is_err());
    let mut out_u = Tensor::from_u32(&gpu, &[1], &[0]).unwrap();
    assert!(reduce::sum(&gpu, &x, &mut out_u, false).is_err());
    // the max of an empty row is undefined
    let no_cols = Tensor::zeros(&gpu, &[3, 0]).unwrap();
    let mut out3 = poisoned(&gpu, &[3]);
    assert!(reduce::row_max(&gpu, &no_cols, &mut out3).is_err());
    // but empty sums are fine (0)
    reduce::row_sum(&gpu, &no_cols, &mut out3).unwrap();
    assert_eq!(out3.download(&gpu).unwrap(), vec![0.0; 3]);
}

#[test]
fn pipelines_are_compiled_once() {
    let gpu = private_gpu();
    let x = upload(&gpu, &[4, 4], &rand_vec(1, 16));
    let mut out = poisoned(&gpu, &[4]);
    reduce::col_sum(&gpu, &x, &mut out).unwrap();
    let before = gpu.pipeline_cache().len();
    for _ in 0..3 {
        reduce::col_sum(&gpu, &x, &mut out).unwrap();
    }
    assert_eq!(gpu.pipeline_cache().len(), before, "a repeated launch compiled a new pipeline");
}

#[test]
fn modules_are_compiled_once_per_shader_source() {
    let gpu = private_gpu();
    let x = upload(&gpu, &[4, 4], &rand_vec(1, 16));
    let mut cols = poisoned(&gpu, &[4]);
    reduce::col_sum(&gpu, &x, &mut cols).unwrap();
    let (modules, pipelines) = (gpu.pipeline_cache().module_count(), gpu.pipeline_cache().len());
    assert!(modules >= 1);
    // another entry point of reduce.wgsl: a new pipeline from the module already compiled
    let mut rows = poisoned(&gpu, &[4]);
    reduce::row_sum(&gpu, &x, &mut rows).unwrap();
    assert!(gpu.pipeline_cache().len() > pipelines, "row_sum reused col_sum's pipeline");
    assert_eq!(gpu.pipeline_cache().module_count(), modules, "a second entry point of one module compiled it again");
}
