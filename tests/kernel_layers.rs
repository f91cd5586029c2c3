//! The parameter-free layers' kernels (dropout, adaptive average pooling, the channel-last
//! permute, concatenation, the channel-wise multiply), forward and backward, against the float64
//! references at odd sizes with NaN-poisoned outputs; dropout's mask rate, its determinism and
//! its dependence on the seed, the step and the row's position.
mod common;
use common::*;
use headswap::kernels::layers::{self, Dropout};
use headswap::kernels::pool::{self, AdaptivePool2dShape};
use headswap::reference::layers as rl;

/// (rows, features) pairs over the odd sizes.
fn row_shapes() -> Vec<(usize, usize)> {
    vec![(1, 1), (7, 33), (33, 7), (1, 127), (3, 257), (127, 5)]
}

#[test]
fn dropout_matches_the_reference_mask() {
    let gpu = gpu();
    for (i, (rows, features)) in row_shapes().into_iter().enumerate() {
        for &(p, seed, step, offset) in &[(0.2f32, 0u64, 1u32, 0u32), (0.5, 42, 17, 5), (0.9, u64::MAX - 3, 1000, 123_456), (0.0, 9, 2, 0)]
        {
            let n = rows * features;
            let x = rand_vec(i as u64 + 7, n);
            let gx = upload(&gpu, &[rows, features], &x);
            let mut gy = poisoned(&gpu, &[rows, features]);
            layers::dropout(&gpu, Dropout { p, seed }, features, &gx, &mut gy, offset, step).unwrap();
            let mask = rl::dropout_mask(seed, step, offset, rows, features, p as f64);
            let expected: Vec<f64> = x.iter().zip(&mask).map(|(&v, &m)| v as f64 * m).collect();
            let what = format!("dropout p={p} seed={seed} step={step} offset={offset} {rows}x{features}");
            assert_close(&what, &gy.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
            // the backward is the same launch: dx = dy·mask for the same seed, step and offset
            let dy = rand_vec(i as u64 + 70, n);
            let gdy = upload(&gpu, &[rows, features], &dy);
            let mut gdx = poisoned(&gpu, &[rows, features]);
            layers::dropout(&gpu, Dropout { p, seed }, features, &gdy, &mut gdx, offset, step).unwrap();
            let expected: Vec<f64> = dy.iter().zip(&mask).map(|(&v, &m)| v as f64 * m).collect();
            assert_close(&format!("{what} backward"), &gdx.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
        }
    }
}

/// Which of `rows × features` ones dropout keeps on the GPU.
fn gpu_mask(p: f32, seed: u64, step: u32, offset: u32, rows: usize, features: usize) -> Vec<bool> {
    let gpu = gpu();
    let gx = upload(&gpu, &[rows, features], &vec![1.0; rows * features]);
    let mut gy = poisoned(&gpu, &[rows, features]);
    layers::dropout(&gpu, Dropout { p, seed }, features, &gx, &mut gy, offset, step).unwrap();
    gy.download(&gpu).unwrap().iter().map(|&v| v != 0.0).collect()
}

#[test]
fn dropout_mask_rate_is_p_and_reruns_are_identical() {
    let (rows, features) = (200, 250); // 50,000 draws: the rate's standard deviation is ≤ 0.0023
    for p in [0.1f32, 0.2, 0.5, 0.8] {
        let m = gpu_mask(p, 3, 1, 0, rows, features);
        let dropped = m.iter().filter(|&&k| !k).count() as f64 / m.len() as f64;
        assert!((dropped - p as f64).abs() < 0.012, "p = {p}: dropped a fraction {dropped}");
        // and evenly: no feature column nor row is dropped far more than p (a hash mixing its words badly would)
        let col_rate = |j: usize| (0..rows).filter(|&r| !m[r * features + j]).count() as f64 / rows as f64;
        assert!((0..features).all(|j| (col_rate(j) - p as f64).abs() < 0.15), "p = {p}: a column's rate is off");
        assert_eq!(m, gpu_mask(p, 3, 1, 0, rows, features), "p = {p}: a rerun gives other bits");
    }
    let base = gpu_mask(0.5, 3, 1, 0, 64, 64);
    let differs = |other: Vec<bool>| base.iter().zip(&other).filter(|(a, b)| a != b).count();
    // each of seed, step and the rows' position changes about half the draws
    for (what, other) in [
        ("another seed", gpu_mask(0.5, 4, 1, 0, 64, 64)),
        ("a seed differing in its high word", gpu_mask(0.5, 3 + (1 << 32), 1, 0, 64, 64)),
        ("another step", gpu_mask(0.5, 3, 2, 0, 64, 64)),
        ("another offset", gpu_mask(0.5, 3, 1, 64, 64, 64)),
    ] {
        let d = differs(other);
        assert!((1700..2400).contains(&d), "{what}: {d} of 4,096 draws differ");
    }
    // the row at position q has the same mask whichever batch holds it
    let shifted = gpu_mask(0.5, 3, 1, 10, 54, 64);
    assert_eq!(&base[10 * 64..], &shifted[..], "rows 10.. read at offset 10");
    assert!(gpu_mask(0.0, 3, 1, 0, 5, 5).iter().all(|&k| k));
    assert!(gpu_mask(1.0, 3, 1, 0, 5, 5).iter().all(|&k| !k));
}

#[test]
fn dropout_refuses_bad_input() {
    let gpu = gpu();
    let x = upload(&gpu, &[2, 3], &[0.0; 6]);
    let mut y = poisoned(&gpu, &[2, 3]);
    assert!(layers::dropout(&gpu, Dropout { p: 1.5, seed: 0 }, 3, &x, &mut y, 0, 1).is_err());
    assert!(layers::dropout(&gpu, Dropout { p: -0.1, seed: 0 }, 3, &x, &mut y, 0, 1).is_err());
    assert!(layers::dropout(&gpu, Dropout { p: 0.5, seed: 0 }, 4, &x, &mut y, 0, 1).is_err());
    let mut short = poisoned(&gpu, &[5]);
    assert!(layers::dropout(&gpu, Dropout { p: 0.5, seed: 0 }, 3, &x, &mut short, 0, 1).is_err());
}

#[test]
fn adaptive_avg_pool_at_odd_sizes() {
    let gpu = gpu();
    let cases = [
        (1, 1, 1, 1, 1, 1),
        (2, 3, 7, 5, 1, 1), // global
        (1, 2, 7, 7, 3, 3), // overlapping windows of 3
        (3, 1, 33, 7, 5, 2),
        (1, 1, 5, 33, 7, 7),    // upsampling rows: windows of one row, repeated
        (2, 2, 13, 11, 13, 11), // identity
        (1, 1, 127, 3, 4, 3),
    ];
    for (i, &(n, c, h, w, oh, ow)) in cases.iter().enumerate() {
        let s = AdaptivePool2dShape { n, c, h, w, oh, ow };
        let x = rand_vec(i as u64, n * c * h * w);
        let gx = upload(&gpu, &s.x_shape(), &x);
        let mut gy = poisoned(&gpu, &s.y_shape());
        pool::adaptive_avg_pool2d_forward(&gpu, &s, &gx, &mut gy).unwrap();
        let what = format!("adaptive_avg_pool {n}x{c}x{h}x{w} -> {oh}x{ow}");
        let expected = rl::adaptive_avg_pool2d_forward(n, c, h, w, oh, ow, &to_f64(&x));
        assert_close(&what, &gy.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
        let dy = rand_vec(100 + i as u64, n * c * oh * ow);
        let gdy = upload(&gpu, &s.y_shape(), &dy);
        let mut gdx = poisoned(&gpu, &s.x_shape());
        pool::adaptive_avg_pool2d_backward(&gpu, &s, &gdy, &mut gdx).unwrap();
        let expected = rl::adaptive_avg_pool2d_backward(n, c, h, w, oh, ow, &to_f64(&dy));
        assert_close(&format!("{what} backward"), &gdx.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
    }
    // to 1×1 it is the global average pool
    let s = AdaptivePool2dShape { n: 2, c: 3, h: 5, w: 4, oh: 1, ow: 1 };
    let x = rand_vec(9, 2 * 3 * 20);
    let expected = headswap::reference::conv::global_avg_pool_forward(2, 3, 5, 4, &to_f64(&x));
    assert_close(
        "adaptive to 1x1 = global",
        &rl::adaptive_avg_pool2d_forward(2, 3, 5, 4, 1, 1, &to_f64(&x)).iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &expected,
        Tolerance::STRICT,
    );
    let mut gy = poisoned(&gpu, &s.y_shape());
    assert!(
        pool::adaptive_avg_pool2d_forward(&gpu, &AdaptivePool2dShape { oh: 0, ..s }, &upload(&gpu, &s.x_shape(), &x), &mut gy).is_err()
    );
}

#[test]
fn channel_last_at_odd_sizes() {
    let gpu = gpu();
    for (i, &(n, c, h, w)) in [(1, 1, 1, 1), (2, 7, 1, 33), (3, 33, 2, 1), (1, 3, 127, 1), (2, 5, 3, 7)].iter().enumerate() {
        let len = n * c * h * w;
        let x = rand_vec(i as u64, len);
        let gx = upload(&gpu, &[n, c * h * w], &x);
        let mut gy = poisoned(&gpu, &[n, c * h * w]);
        layers::channel_last(&gpu, c, h * w, &gx, &mut gy).unwrap();
        let what = format!("channel_last {n}x{c}x{h}x{w}");
        assert_close(&what, &gy.download(&gpu).unwrap(), &rl::channel_last(n, c, h, w, &to_f64(&x)), Tolerance::STRICT);
        let dy = rand_vec(50 + i as u64, len);
        let mut gdx = poisoned(&gpu, &[n, c * h * w]);
        layers::channel_last_backward(&gpu, c, h * w, &upload(&gpu, &[n, c * h * w], &dy), &mut gdx).unwrap();
        let expected = rl::channel_last_backward(n, c, h, w, &to_f64(&dy));
        assert_close(&format!("{what} backward"), &gdx.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
    }
}

#[test]
fn concat_at_odd_sizes() {
    let gpu = gpu();
    for (i, (n, plane, channels)) in
        [(1, 1, vec![1, 1]), (7, 3, vec![2, 5]), (2, 33, vec![1, 7, 3]), (3, 1, vec![127, 1]), (1, 5, vec![4])].into_iter().enumerate()
    {
        let parts: Vec<Vec<f32>> = channels.iter().enumerate().map(|(k, &c)| rand_vec((10 * i + k) as u64, n * c * plane)).collect();
        let gparts: Vec<_> = parts.iter().zip(&channels).map(|(p, &c)| upload(&gpu, &[n, c * plane], p)).collect();
        let total: usize = channels.iter().sum();
        let mut gy = poisoned(&gpu, &[n, total * plane]);
        layers::concat(&gpu, plane, &channels, &gparts.iter().collect::<Vec<_>>(), &mut gy).unwrap();
        let what = format!("concat {n} rows of {channels:?}x{plane}");
        let p64: Vec<Vec<f64>> = parts.iter().map(|p| to_f64(p)).collect();
        let expected = rl::concat(n, plane, &channels, &p64.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert_close(&what, &gy.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
        let dy = rand_vec(99 + i as u64, n * total * plane);
        let gdy = upload(&gpu, &[n, total * plane], &dy);
        let expected = rl::concat_backward(n, plane, &channels, &to_f64(&dy));
        for (k, &c) in channels.iter().enumerate() {
            let mut gdx = poisoned(&gpu, &[n, c * plane]);
            layers::concat_backward(&gpu, plane, &channels, k, &gdy, &mut gdx).unwrap();
            assert_close(&format!("{what} backward part {k}"), &gdx.download(&gpu).unwrap(), &expected[k], Tolerance::STRICT);
        }
    }
    let a = upload(&gpu, &[2, 3], &[0.0; 6]);
    let mut y = poisoned(&gpu, &[2, 5]);
    assert!(layers::concat(&gpu, 1, &[3, 3], &[&a, &a], &mut y).is_err(), "6 channels do not fit rows of 5");
}

#[test]
fn channel_mul_at_odd_sizes() {
    let gpu = gpu();
    for (i, &(n, c, plane)) in [(1, 1, 1), (7, 3, 33), (2, 33, 7), (1, 127, 1), (3, 2, 257)].iter().enumerate() {
        let x = rand_vec(i as u64, n * c * plane);
        let s = rand_range(20 + i as u64, n * c, 0.0, 1.0);
        let (gx, gs) = (upload(&gpu, &[n, c * plane], &x), upload(&gpu, &[n, c], &s));
        let mut gy = poisoned(&gpu, &[n, c * plane]);
        layers::channel_mul(&gpu, plane, &gx, &gs, &mut gy).unwrap();
        let what = format!("channel_mul {n}x{c}x{plane}");
        let (x64, s64) = (to_f64(&x), to_f64(&s));
        assert_close(&what, &gy.download(&gpu).unwrap(), &rl::channel_mul(plane, &x64, &s64), Tolerance::STRICT);
        let dy = rand_vec(40 + i as u64, n * c * plane);
        let gdy = upload(&gpu, &[n, c * plane], &dy);
        let (dx, ds) = rl::channel_mul_backward(plane, &x64, &s64, &to_f64(&dy));
        let mut gdx = poisoned(&gpu, &[n, c * plane]);
        layers::channel_mul(&gpu, plane, &gdy, &gs, &mut gdx).unwrap();
        assert_close(&format!("{what} dx"), &gdx.download(&gpu).unwrap(), &dx, Tolerance::STRICT);
        let mut gds = poisoned(&gpu, &[n, c]);
        layers::channel_mul_grad(&gpu, plane, &gdy, &gx, &mut gds).unwrap();
        assert_close(&format!("{what} dscale"), &gds.download(&gpu).unwrap(), &ds, Tolerance::F32);
    }
    let x = upload(&gpu, &[2, 6], &[0.0; 12]);
    let mut y = poisoned(&gpu, &[2, 6]);
    assert!(layers::channel_mul(&gpu, 4, &x, &upload(&gpu, &[2, 2], &[0.0; 4]), &mut y).is_err(), "2·2 scales of 4 are not 12");
}
