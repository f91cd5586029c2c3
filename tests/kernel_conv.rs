//! conv2d, max/average pooling and global average pooling against the float64 reference, forward
//! and backward, at odd sizes (an image 13×11, 3 channels, kernel 3 and 5, stride 1 and 2,
//! padding 0 and 1, batch 1 and 3, 1 and 4 output channels), both convolution algorithms,
//! outputs poisoned with NaN first. The reference gradients are themselves checked by central
//! differences of the float64 forward, so the chain is proven end to end.
mod common;
use common::*;
use headswap::kernels::Activation;
use headswap::kernels::conv::{self, Conv2dShape, ConvAlgo, ConvScratch, Pool2dShape};
use headswap::reference::{self, conv as rc};
use headswap::{Error, Gpu, Rng, Tensor};

const ALGOS: [ConvAlgo; 2] = [ConvAlgo::Direct, ConvAlgo::Im2col];

/// Every combination the issue names: 13×11, 3 channels, kernel 3/5, stride 1/2, padding 0/1,
/// batch 1/3, O = 1/4; then a few wider layers.
fn sweep() -> Vec<Conv2dShape> {
    let mut v = Vec::new();
    for k in [3, 5] {
        for stride in [1, 2] {
            for pad in [0, 1] {
                for n in [1, 3] {
                    for o in [1, 4] {
                        v.push(Conv2dShape::new(n, 3, 13, 11, o, k, stride, pad));
                    }
                }
            }
        }
    }
    // wider layers: blocks of 8 output channels (a partial one), several input-channel blocks,
    // rectangular kernels, strides and paddings
    v.push(Conv2dShape { n: 2, c: 6, h: 13, w: 11, o: 9, kh: 3, kw: 5, sh: 1, sw: 2, ph: 1, pw: 2, pb: 1, pr: 2, groups: 1 });
    v.push(Conv2dShape::new(2, 5, 13, 11, 16, 3, 1, 1));
    v.push(Conv2dShape { n: 1, c: 9, h: 13, w: 11, o: 12, kh: 5, kw: 1, sh: 2, sw: 1, ph: 2, pw: 0, pb: 2, pr: 0, groups: 1 });
    v
}

/// Grouped and depthwise convolutions at sizes 1, 7 and 33: groups 2, 3 and C (depthwise,
/// stride 1 and 2, with and without padding; a channel multiplier of 2), rectangular kernels
/// (5×1, 1×3, CREPE's tall kernel at a stride (4, 1)) and asymmetric padding (`F.pad` folded in).
fn grouped_sweep() -> Vec<Conv2dShape> {
    let s = Conv2dShape::new;
    vec![
        s(2, 4, 7, 7, 6, 3, 1, 1).with_groups(2),
        s(1, 6, 33, 7, 9, 3, 2, 1).with_groups(3),
        s(2, 6, 7, 33, 12, 3, 1, 0).with_groups(3).with_kernel_hw(1, 3).with_padding([0, 0, 2, 1]),
        // 8+ outputs per group: blocks of 8 inside one group, a partial last block
        s(1, 4, 7, 7, 18, 3, 1, 1).with_groups(2),
        // depthwise: stride 1 and 2, padding 1, no padding, odd channel counts
        s(2, 7, 7, 7, 7, 3, 1, 1).with_groups(7),
        s(1, 33, 7, 7, 33, 3, 2, 1).with_groups(33),
        s(3, 5, 33, 7, 5, 3, 2, 0).with_groups(5),
        s(1, 1, 7, 7, 1, 3, 1, 1).with_groups(1),
        s(2, 3, 33, 1, 3, 1, 1, 0).with_groups(3).with_kernel_hw(5, 1).with_padding([3, 1, 0, 0]),
        s(1, 3, 7, 33, 3, 1, 1, 0).with_groups(3).with_kernel_hw(1, 3).with_stride_hw(1, 2).with_padding([0, 0, 0, 2]),
        // channel multiplier 2 (groups = C, O = 2C): the blocked kernels
        s(2, 3, 7, 7, 6, 3, 1, 1).with_groups(3),
        // ungrouped with asymmetric padding, and CREPE's first layer (scaled down)
        s(2, 3, 7, 7, 4, 3, 1, 0).with_padding([2, 0, 1, 0]),
        s(1, 1, 33, 1, 4, 1, 1, 0).with_kernel_hw(16, 1).with_stride_hw(4, 1).with_padding([7, 8, 0, 0]),
        s(1, 1, 1, 1, 1, 1, 1, 0),
    ]
}

/// The algorithms that run `s`: im2col only ungrouped.
fn algos_for(s: &Conv2dShape) -> Vec<ConvAlgo> {
    if s.groups == 1 { ALGOS.to_vec() } else { vec![ConvAlgo::Direct] }
}

/// f32 against f64 for a sum of `terms` products of values in [-1, 1].
fn tol_for(terms: usize) -> Tolerance {
    Tolerance { rel: 1e-4, abs: 2e-6 * (terms as f64).sqrt().max(1.0) }
}

struct ConvCase {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    gx: Tensor,
    gw: Tensor,
    gb: Tensor,
}

fn conv_case(gpu: &Gpu, s: Conv2dShape, seed: u64) -> ConvCase {
    let x = rand_vec(seed, s.x_shape().iter().product());
    let w = rand_vec(seed + 1, s.w_shape().iter().product());
    let b = rand_vec(seed + 2, s.o);
    let (gx, gw, gb) = (upload(gpu, &s.x_shape(), &x), upload(gpu, &s.w_shape(), &w), upload(gpu, &[s.o], &b));
    ConvCase { x, w, b, gx, gw, gb }
}

#[test]
fn conv_forward_matches_reference() {
    let gpu = gpu();
    for (i, s) in sweep().into_iter().enumerate() {
        let c = conv_case(&gpu, s, 100 + 10 * i as u64);
        let expected = rc::conv2d_forward(&s, &to_f64(&c.x), &to_f64(&c.w), Some(&to_f64(&c.b)));
        for algo in ALGOS {
            let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
            let mut y = poisoned(&gpu, &s.y_shape());
            conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, Some(&c.gb), Activation::Identity, &mut y, &scratch).unwrap();
            assert_close(&format!("conv forward {algo:?} {s:?}"), &y.download(&gpu).unwrap(), &expected, tol_for(s.patch_len()));
        }
        // without bias
        let expected = rc::conv2d_forward(&s, &to_f64(&c.x), &to_f64(&c.w), None);
        for algo in ALGOS {
            let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
            let mut y = poisoned(&gpu, &s.y_shape());
            conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, None, Activation::Identity, &mut y, &scratch).unwrap();
            assert_close(&format!("conv forward no bias {algo:?} {s:?}"), &y.download(&gpu).unwrap(), &expected, tol_for(s.patch_len()));
        }
    }
}

#[test]
fn conv_forward_hand_computed() {
    // x = 1..9 in a 3×3 image, a 2×2 kernel of ones: y is the window sums, as torch.nn.functional.conv2d
    let gpu = gpu();
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    for algo in ALGOS {
        for (stride, pad, want) in [(1, 0, vec![12., 16., 24., 28.]), (2, 1, vec![1., 5., 11., 28.])] {
            let s = Conv2dShape::new(1, 1, 3, 3, 1, 2, stride, pad);
            let gx = upload(&gpu, &s.x_shape(), &x);
            let gw = upload(&gpu, &s.w_shape(), &[1.0; 4]);
            let gb = upload(&gpu, &[1], &[0.5]);
            let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
            let mut y = poisoned(&gpu, &s.y_shape());
            conv::conv2d_forward(&gpu, &s, &gx, &gw, Some(&gb), Activation::Identity, &mut y, &scratch).unwrap();
            let want: Vec<f32> = want.iter().map(|v| v + 0.5).collect();
            assert_eq!(y.download(&gpu).unwrap(), want, "{algo:?} stride {stride} pad {pad}");
        }
    }
}

#[test]
fn conv_forward_fused_activation() {
    let gpu = gpu();
    let s = Conv2dShape { n: 2, c: 3, h: 13, w: 11, o: 5, kh: 3, kw: 5, sh: 2, sw: 1, ph: 1, pw: 2, pb: 1, pr: 2, groups: 1 };
    let c = conv_case(&gpu, s, 7);
    for act in Activation::ALL {
        for bias in [true, false] {
            let b64 = to_f64(&c.b);
            let expected = rc::conv2d_forward_act(&s, &to_f64(&c.x), &to_f64(&c.w), bias.then_some(&b64[..]), act);
            for algo in ALGOS {
                let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
                let mut y = poisoned(&gpu, &s.y_shape());
                conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, bias.then_some(&c.gb), act, &mut y, &scratch).unwrap();
                assert_close(
                    &format!("conv forward {act:?} bias {bias} {algo:?}"),
                    &y.download(&gpu).unwrap(),
                    &expected,
                    tol_for(s.patch_len()),
                );
            }
        }
    }
}

#[test]
fn conv_backward_matches_reference() {
    let gpu = gpu();
    for (i, s) in sweep().into_iter().enumerate() {
        let c = conv_case(&gpu, s, 300 + 10 * i as u64);
        let dy = rand_vec(309 + 10 * i as u64, s.y_shape().iter().product());
        let gdy = upload(&gpu, &s.y_shape(), &dy);
        let g = rc::conv2d_backward(&s, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&dy));
        let (oh, ow) = s.out_hw();
        for algo in ALGOS {
            let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
            let mut dx = poisoned(&gpu, &s.x_shape());
            let mut dw = poisoned(&gpu, &s.w_shape());
            let mut db = poisoned(&gpu, &[s.o]);
            conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, Some(&mut db), &scratch).unwrap();
            let what = format!("{algo:?} {s:?}");
            assert_close(&format!("dx {what}"), &dx.download(&gpu).unwrap(), &g.dx, tol_for(s.o * s.kh * s.kw));
            assert_close(&format!("dw {what}"), &dw.download(&gpu).unwrap(), &g.dw, tol_for(s.n * oh * ow));
            assert_close(&format!("db {what}"), &db.download(&gpu).unwrap(), &g.db, tol_for(s.n * oh * ow));

            // the lowest trainable layer skips dx, a layer without bias skips db
            let mut dw2 = poisoned(&gpu, &s.w_shape());
            conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, None, &mut dw2, None, &scratch).unwrap();
            assert_close(&format!("dw without dx {what}"), &dw2.download(&gpu).unwrap(), &g.dw, tol_for(s.n * oh * ow));
        }
    }
}

#[test]
fn grouped_conv_forward_and_backward_match_reference() {
    let gpu = gpu();
    for (i, s) in grouped_sweep().into_iter().enumerate() {
        s.validate().unwrap();
        let c = conv_case(&gpu, s, 1300 + 10 * i as u64);
        let dy = rand_vec(1309 + 10 * i as u64, s.y_shape().iter().product());
        let gdy = upload(&gpu, &s.y_shape(), &dy);
        let g = rc::conv2d_backward(&s, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&dy));
        let (oh, ow) = s.out_hw();
        for algo in algos_for(&s) {
            let what = format!("{algo:?} {s:?}");
            let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
            for (bias, act) in [(true, Activation::Identity), (false, Activation::Relu), (true, Activation::Tanh)] {
                let b64 = to_f64(&c.b);
                let expected = rc::conv2d_forward_act(&s, &to_f64(&c.x), &to_f64(&c.w), bias.then_some(&b64[..]), act);
                let mut y = poisoned(&gpu, &s.y_shape());
                conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, bias.then_some(&c.gb), act, &mut y, &scratch).unwrap();
                assert_close(&format!("y {act:?} bias {bias} {what}"), &y.download(&gpu).unwrap(), &expected, tol_for(s.patch_len()));
            }
            let (mut dx, mut dw, mut db) = (poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()), poisoned(&gpu, &[s.o]));
            conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, Some(&mut db), &scratch).unwrap();
            assert_close(&format!("dx {what}"), &dx.download(&gpu).unwrap(), &g.dx, tol_for(s.o_per_group() * s.kh * s.kw));
            assert_close(&format!("dw {what}"), &dw.download(&gpu).unwrap(), &g.dw, tol_for(s.n * oh * ow));
            assert_close(&format!("db {what}"), &db.download(&gpu).unwrap(), &g.db, tol_for(s.n * oh * ow));
            // a frozen layer's input gradient alone
            let mut dx2 = poisoned(&gpu, &s.x_shape());
            let d = conv::conv2d_backward_input_dispatches(&gpu, &s, &c.gx, &c.gw, &gdy, &dx2, &scratch).unwrap();
            gpu.run("dx only", &d.iter().collect::<Vec<_>>()).unwrap();
            assert_close(&format!("dx only {what}"), &dx2.download(&gpu).unwrap(), &g.dx, tol_for(s.o_per_group() * s.kh * s.kw));
            let _ = &mut dx2;
        }
    }
}

#[test]
fn depthwise_takes_its_own_kernels_and_long_reductions_split() {
    // 9 images of 64×64: the depthwise weight gradient sums 36,864 pixels per tap, in slices
    let gpu = gpu();
    let s = Conv2dShape::new(9, 5, 64, 64, 5, 3, 1, 1).with_groups(5);
    let c = conv_case(&gpu, s, 51);
    let dy = rand_vec(55, s.y_shape().iter().product());
    let gdy = upload(&gpu, &s.y_shape(), &dy);
    let scratch = ConvScratch::new(&gpu, &s).unwrap();
    assert!(scratch.bytes() > 0, "the test means to exercise several slices");
    let (y, dx, dw) = (poisoned(&gpu, &s.y_shape()), poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()));
    let mut d = conv::conv2d_forward_dispatches(&gpu, &s, &c.gx, &c.gw, None, Activation::Identity, &y, &scratch).unwrap();
    d.extend(conv::conv2d_backward_dispatches(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&dx), &dw, None, &scratch).unwrap());
    let names: Vec<&str> = d.iter().map(|d| d.name()).collect();
    assert_eq!(names, ["dw_forward", "dw_backward_input", "dw_backward_weight", "sum_parts"]);
    gpu.run("depthwise", &d.iter().collect::<Vec<_>>()).unwrap();
    let expected = rc::conv2d_forward(&s, &to_f64(&c.x), &to_f64(&c.w), None);
    let g = rc::conv2d_backward(&s, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&dy));
    assert_close("y", &y.download(&gpu).unwrap(), &expected, tol_for(9));
    assert_close("dx", &dx.download(&gpu).unwrap(), &g.dx, tol_for(9));
    assert_close("dw", &dw.download(&gpu).unwrap(), &g.dw, tol_for(9 * 64 * 64));
    // a grouped (not depthwise) convolution runs the blocked kernels
    let s2 = Conv2dShape::new(1, 4, 7, 7, 4, 3, 1, 1).with_groups(2);
    let c2 = conv_case(&gpu, s2, 3);
    let scratch2 = ConvScratch::new(&gpu, &s2).unwrap();
    let y2 = poisoned(&gpu, &s2.y_shape());
    let d2 = conv::conv2d_forward_dispatches(&gpu, &s2, &c2.gx, &c2.gw, None, Activation::Identity, &y2, &scratch2).unwrap();
    assert_eq!(d2[0].name(), "conv_forward");
}

#[test]
fn grouped_conv_is_deterministic_and_refuses_im2col() {
    let gpu = gpu();
    for s in [Conv2dShape::new(3, 6, 13, 11, 6, 3, 2, 1).with_groups(6), Conv2dShape::new(3, 6, 13, 11, 9, 3, 1, 1).with_groups(3)] {
        let c = conv_case(&gpu, s, 8);
        let gdy = upload(&gpu, &s.y_shape(), &rand_vec(9, s.y_shape().iter().product()));
        let scratch = ConvScratch::new(&gpu, &s).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (mut y, mut dx, mut dw, mut db) =
                (poisoned(&gpu, &s.y_shape()), poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()), poisoned(&gpu, &[s.o]));
            conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, Some(&c.gb), Activation::Relu, &mut y, &scratch).unwrap();
            conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, Some(&mut db), &scratch).unwrap();
            let bits = |t: &Tensor| t.download(&gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            runs.push([bits(&y), bits(&dx), bits(&dw), bits(&db)]);
        }
        assert_eq!(runs[0], runs[1], "{s:?}: two runs differ");
        // the matmul form has no groups: a typed error, and the choice (measured or forced) is direct
        let e = ConvScratch::with_algo(&gpu, &s, ConvAlgo::Im2col).unwrap_err();
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("groups"), "{e}");
        for usage in [conv::ConvUse::Forward, conv::ConvUse::Train { dx: true }] {
            assert_eq!(conv::choose_algo(&gpu, &s, usage).unwrap(), ConvAlgo::Direct);
        }
        // the grouped weight has C/groups inputs per row; the ungrouped shape is a shape error
        let wrong_w = upload(&gpu, &[s.o, s.c, 3, 3], &vec![0.0; s.o * s.c * 9]);
        let y = poisoned(&gpu, &s.y_shape());
        let r = conv::conv2d_forward_dispatches(&gpu, &s, &c.gx, &wrong_w, None, Activation::Identity, &y, &scratch);
        assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    }
    // groups that do not divide the channels
    for bad in [Conv2dShape::new(1, 6, 7, 7, 4, 3, 1, 1).with_groups(4), Conv2dShape::new(1, 6, 7, 7, 6, 3, 1, 1).with_groups(0)] {
        assert!(matches!(ConvScratch::new(&gpu, &bad), Err(Error::Shape { .. })), "{bad:?}");
    }
}

#[test]
fn reference_grouped_conv_gradients_match_finite_differences() {
    let act = Activation::Tanh;
    let mut rng = Rng::new(199);
    for (i, s) in grouped_sweep().into_iter().enumerate() {
        let seed = 1700 + 10 * i as u64;
        let mut x = to_f64(&rand_vec(seed, s.x_shape().iter().product()));
        let mut w = to_f64(&rand_vec(seed + 1, s.w_shape().iter().product()));
        let mut b = to_f64(&rand_vec(seed + 2, s.o));
        let g = to_f64(&rand_vec(seed + 3, s.y_shape().iter().product()));
        let z = rc::conv2d_forward(&s, &x, &w, Some(&b));
        let dz: Vec<f64> = z.iter().zip(&g).map(|(&z, &g)| g * reference::activate_grad(act, z)).collect();
        let grads = rc::conv2d_backward(&s, &x, &w, &dz);
        let what = format!("{s:?}");
        let (xi, wi, bi) = (sample(x.len(), 16, &mut rng), sample(w.len(), 16, &mut rng), sample(b.len(), 4, &mut rng));
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check_fd(&format!("dx {what}"), &mut x, &xi, &grads.dx, |x| conv_loss(&s, x, &w0, &b0, &g, act));
        check_fd(&format!("dw {what}"), &mut w, &wi, &grads.dw, |w| conv_loss(&s, &x0, w, &b0, &g, act));
        check_fd(&format!("db {what}"), &mut b, &bi, &grads.db, |b| conv_loss(&s, &x0, &w0, b, &g, act));
    }
}

#[test]
fn reference_grouped_conv_is_the_groups_convolved_apart() {
    // a grouped convolution equals `groups` ungrouped ones on the channel slices, concatenated:
    // an independent check of the reference's group indexing
    let s = Conv2dShape::new(2, 6, 7, 5, 9, 3, 2, 1).with_groups(3).with_padding([1, 2, 0, 1]);
    let x = to_f64(&rand_vec(3, s.x_shape().iter().product()));
    let w = to_f64(&rand_vec(4, s.w_shape().iter().product()));
    let y = rc::conv2d_forward(&s, &x, &w, None);
    let (cg, og) = (2, 3);
    let part = Conv2dShape { c: cg, o: og, groups: 1, ..s };
    let (oh, ow) = s.out_hw();
    for g in 0..3 {
        let xs: Vec<f64> = (0..s.n).flat_map(|n| x[(n * 6 + g * cg) * 35..(n * 6 + g * cg + cg) * 35].to_vec()).collect();
        let ws = &w[g * og * cg * 9..(g + 1) * og * cg * 9];
        let ys = rc::conv2d_forward(&part, &xs, ws, None);
        for n in 0..s.n {
            let plane = oh * ow;
            assert_eq!(ys[n * og * plane..(n + 1) * og * plane], y[(n * 9 + g * og) * plane..(n * 9 + g * og + og) * plane], "group {g}");
        }
    }
}

/// `L = Σ g ⊙ act(conv(x, w, b))` in float64.
fn conv_loss(s: &Conv2dShape, x: &[f64], w: &[f64], b: &[f64], g: &[f64], act: Activation) -> f64 {
    rc::conv2d_forward_act(s, x, w, Some(b), act).iter().zip(g).map(|(y, g)| y * g).sum()
}

/// Checks `analytic[i]` against the central difference of `loss` at the indices `idx` of `v`.
fn check_fd(what: &str, v: &mut [f64], idx: &[usize], analytic: &[f64], mut loss: impl FnMut(&[f64]) -> f64) {
    let h = 1e-5;
    for &i in idx {
        let orig = v[i];
        v[i] = orig + h;
        let lp = loss(v);
        v[i] = orig - h;
        let lm = loss(v);
        v[i] = orig;
        let fd = (lp - lm) / (2.0 * h);
        let err = (fd - analytic[i]).abs();
        assert!(err <= 1e-7 + 1e-6 * fd.abs(), "{what}[{i}]: analytic {} vs central difference {fd} (diff {err:e})", analytic[i]);
    }
}

/// Every index for short vectors; else the two ends and `count` seeded random ones.
fn sample(len: usize, count: usize, rng: &mut Rng) -> Vec<usize> {
    if len <= count + 2 {
        return (0..len).collect();
    }
    let mut v = vec![0, len - 1];
    v.extend((0..count).map(|_| rng.below(len as u64) as usize));
    v
}

#[test]
fn reference_conv_gradients_match_finite_differences() {
    // through a tanh, so the loss is not linear in any input and the chain rule is exercised
    let act = Activation::Tanh;
    let mut rng = Rng::new(99);
    for (i, s) in sweep().into_iter().enumerate() {
        let seed = 700 + 10 * i as u64;
        let mut x = to_f64(&rand_vec(seed, s.x_shape().iter().product()));
        let mut w = to_f64(&rand_vec(seed + 1, s.w_shape().iter().product()));
        let mut b = to_f64(&rand_vec(seed + 2, s.o));
        let g = to_f64(&rand_vec(seed + 3, s.y_shape().iter().product()));
        // dL/dz = g · act'(z), then the conv backward
        let z = rc::conv2d_forward(&s, &x, &w, Some(&b));
        let dz: Vec<f64> = z.iter().zip(&g).map(|(&z, &g)| g * reference::activate_grad(act, z)).collect();
        let grads = rc::conv2d_backward(&s, &x, &w, &dz);
        let what = format!("{s:?}");
        let (xi, wi, bi) = (sample(x.len(), 12, &mut rng), sample(w.len(), 12, &mut rng), sample(b.len(), 4, &mut rng));
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check_fd(&format!("dx {what}"), &mut x, &xi, &grads.dx, |x| conv_loss(&s, x, &w0, &b0, &g, act));
        check_fd(&format!("dw {what}"), &mut w, &wi, &grads.dw, |w| conv_loss(&s, &x0, w, &b0, &g, act));
        check_fd(&format!("db {what}"), &mut b, &bi, &grads.db, |b| conv_loss(&s, &x0, &w0, b, &g, act));
    }
}

#[test]
fn reference_conv_gradients_every_element() {
    // two shapes checked at every element of x, w and b
    let act = Activation::Sigmoid;
    for (k, s) in [
        Conv2dShape::new(2, 3, 13, 11, 4, 3, 2, 1),
        Conv2dShape { n: 1, c: 2, h: 7, w: 6, o: 3, kh: 5, kw: 3, sh: 1, sw: 2, ph: 1, pw: 0, pb: 1, pr: 0, groups: 1 },
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 900 + 10 * k as u64;
        let mut x = to_f64(&rand_vec(seed, s.x_shape().iter().product()));
        let mut w = to_f64(&rand_vec(seed + 1, s.w_shape().iter().product()));
        let mut b = to_f64(&rand_vec(seed + 2, s.o));
        let g = to_f64(&rand_vec(seed + 3, s.y_shape().iter().product()));
        let z = rc::conv2d_forward(&s, &x, &w, Some(&b));
        let dz: Vec<f64> = z.iter().zip(&g).map(|(&z, &g)| g * reference::activate_grad(act, z)).collect();
        let grads = rc::conv2d_backward(&s, &x, &w, &dz);
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        let all = |n: usize| (0..n).collect::<Vec<_>>();
        check_fd("dx", &mut x, &all(x0.len()), &grads.dx, |x| conv_loss(&s, x, &w0, &b0, &g, act));
        check_fd("dw", &mut w, &all(w0.len()), &grads.dw, |w| conv_loss(&s, &x0, w, &b0, &g, act));
        check_fd("db", &mut b, &all(b0.len()), &grads.db, |b| conv_loss(&s, &x0, &w0, b, &g, act));
    }
}

/// The names of the kernels an im2col forward and backward (with dx) of `s` launch.
fn im2col_kernel_names(gpu: &Gpu, s: &Conv2dShape, c: &ConvCase, scratch: &ConvScratch) -> Vec<&'static str> {
    let (y, dx, dw) = (poisoned(gpu, &s.y_shape()), poisoned(gpu, &s.x_shape()), poisoned(gpu, &s.w_shape()));
    let mut d = conv::conv2d_forward_dispatches(gpu, s, &c.gx, &c.gw, None, Activation::Identity, &y, scratch).unwrap();
    d.extend(conv::conv2d_backward_dispatches(gpu, s, &c.gx, &c.gw, &y, Some(&dx), &dw, None, scratch).unwrap());
    d.iter().map(|d| d.name()).collect()
}

/// im2col forward and backward of `s` against the reference.
fn check_im2col(gpu: &Gpu, s: Conv2dShape, seed: u64, what: &str) -> Vec<&'static str> {
    let c = conv_case(gpu, s, seed);
    let expected = rc::conv2d_forward(&s, &to_f64(&c.x), &to_f64(&c.w), Some(&to_f64(&c.b)));
    let scratch = ConvScratch::with_algo(gpu, &s, ConvAlgo::Im2col).unwrap();
    let mut y = poisoned(gpu, &s.y_shape());
    conv::conv2d_forward(gpu, &s, &c.gx, &c.gw, Some(&c.gb), Activation::Identity, &mut y, &scratch).unwrap();
    assert_close(&format!("{what} forward"), &y.download(gpu).unwrap(), &expected, tol_for(s.patch_len()));
    let dy = rand_vec(seed + 1, s.y_shape().iter().product());
    let g = rc::conv2d_backward(&s, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&dy));
    let (mut dx, mut dw) = (poisoned(gpu, &s.x_shape()), poisoned(gpu, &s.w_shape()));
    let gdy = upload(gpu, &s.y_shape(), &dy);
    conv::conv2d_backward(gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, None, &scratch).unwrap();
    let (oh, ow) = s.out_hw();
    assert_close(&format!("{what} dx"), &dx.download(gpu).unwrap(), &g.dx, tol_for(s.o * s.kh * s.kw));
    assert_close(&format!("{what} dw"), &dw.download(gpu).unwrap(), &g.dw, tol_for(s.n * oh * ow));
    im2col_kernel_names(gpu, &s, &c, &scratch)
}

#[test]
fn im2col_takes_the_per_element_kernels_where_the_row_kernels_cannot_run() {
    let gpu = gpu();
    // C·KH·KW just inside one invocation's loop budget (llvmpipe's 65,535-iteration limit; 21
    // counted per channel of a 3 × 3 window): one invocation per output row / input pixel
    let names = check_im2col(&gpu, Conv2dShape::new(2, 3095, 3, 4, 2, 3, 1, 1), 77, "3,095 channels");
    assert!(names.iter().any(|n| n.starts_with("im2col_rows")) && names.contains(&"col2im_rows"), "{names:?}");
    // just past it: one invocation per element
    let names = check_im2col(&gpu, Conv2dShape::new(2, 3096, 3, 4, 2, 3, 1, 1), 79, "3,096 channels");
    assert!(names.contains(&"im2col") && names.contains(&"col2im") && !names.iter().any(|n| n.starts_with("im2col_rows")), "{names:?}");
    // an input row too wide for the row kernels' grid (131,072 workgroups of 8 pixels), a
    // stride past the window (pixels no tap reaches), 1-D
    let s = Conv2dShape { n: 1, c: 1, h: 1, w: 1 << 20, o: 2, kh: 1, kw: 16, sh: 1, sw: 32, ph: 0, pw: 0, pb: 0, pr: 0, groups: 1 };
    let names = check_im2col(&gpu, s, 81, "1-D, 2^20 wide, stride 32 > window 16");
    assert!(names.contains(&"col2im") && !names.contains(&"col2im_rows"), "{names:?}");
}

#[test]
fn im2col_pads_short_rows_to_vec4() {
    let gpu = gpu();
    // ResNet's stem (3 channels, 7×7, stride 2, padding 3: rows of 147 → 148) at an odd size,
    // O = 7, and 1×1; rows of 75 (3 channels, 5×5 → 76); then with two chunks of images
    // (80·80 = 6,400 pixels an image, 5 images a chunk). One chunk: the forward widens the weight
    // and the backward cuts its padded weight gradient back (two pad_cols); several chunks: the
    // backward's columns stay unpadded (one).
    let stem = |n, h, w, o| Conv2dShape::new(n, 3, h, w, o, 7, 2, 3);
    let cases =
        [(stem(3, 33, 17, 7), 2), (stem(1, 1, 1, 1), 2), (Conv2dShape::new(2, 3, 13, 11, 4, 5, 1, 2), 2), (stem(6, 160, 159, 5), 1)];
    for (i, (s, pads)) in cases.into_iter().enumerate() {
        let names = check_im2col(&gpu, s, 900 + 10 * i as u64, &format!("padded rows {s:?}"));
        assert_eq!(names.iter().filter(|&&n| n == "pad_cols").count(), pads, "{s:?}: {names:?}");
        // padded rows are a multiple of 4: written as vec4s
        assert!(names.contains(&"im2col_rows4"), "{s:?}: {names:?}");
    }
    // rows of 45 would grow by 7 %: not padded
    let names = check_im2col(&gpu, Conv2dShape::new(2, 5, 13, 11, 16, 3, 1, 1), 950, "rows of 45");
    assert!(!names.contains(&"pad_cols"), "{names:?}");
}

#[test]
fn im2col_splits_long_weight_gradients() {
    // a chunk of more than 1,024 output pixels computes its weight gradient as several products
    // over slices of its rows (split-K into partial gradients, added in slice order): one chunk
    // (odd sizes, the last slice not a multiple of 4), the padded stem in one chunk (its partials
    // are [O, 148] and cut back), and several chunks of one image each, every one split
    let gpu = gpu();
    let stem = Conv2dShape::new(33, 3, 33, 35, 7, 7, 2, 3);
    let cases = [(Conv2dShape::new(3, 65, 33, 27, 33, 3, 1, 1), 3), (stem, 3), (Conv2dShape::new(3, 32, 130, 130, 5, 3, 1, 1), 3 * 8)];
    for (i, (s, slices)) in cases.into_iter().enumerate() {
        let names = check_im2col(&gpu, s, 960 + 10 * i as u64, &format!("split dW {s:?}"));
        // forward products (one per chunk) + dx products (one per chunk) + the slices
        let chunks = names.iter().filter(|&&n| n == "nchw_transpose").count() / 2;
        let products = names.iter().filter(|n| n.starts_with("matmul_")).count();
        assert_eq!(products, 2 * chunks + slices, "{s:?}: {names:?}");
        assert_eq!(names.iter().filter(|&&n| n == "sum_parts").count(), 1, "{s:?}: {names:?}");
    }
    // reruns are bit-identical
    let s = cases[0].0;
    let c = conv_case(&gpu, s, 7);
    let gdy = upload(&gpu, &s.y_shape(), &rand_vec(8, s.y_shape().iter().product()));
    let scratch = ConvScratch::with_algo(&gpu, &s, ConvAlgo::Im2col).unwrap();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (mut dx, mut dw) = (poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()));
        conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, None, &scratch).unwrap();
        runs.push((dx.download(&gpu).unwrap(), dw.download(&gpu).unwrap()));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&runs[0].1), bits(&runs[1].1), "two runs' dW differ");
    assert_eq!(bits(&runs[0].0), bits(&runs[1].0), "two runs' dx differ");
}

#[test]
fn conv_long_reductions_and_im2col_chunks() {
    // N·OH·OW large enough that the dw/db reductions split into slices and im2col runs in
    // several chunks (one image per chunk here: 64·64 = 4096 pixels, 9 images)
    let gpu = gpu();
    let s = Conv2dShape::new(9, 2, 64, 64, 3, 3, 1, 1);
    let c = conv_case(&gpu, s, 41);
    let dy = rand_vec(45, s.y_shape().iter().product());
    let gdy = upload(&gpu, &s.y_shape(), &dy);
    let expected_y = rc::conv2d_forward(&s, &to_f64(&c.x), &to_f64(&c.w), Some(&to_f64(&c.b)));
    let g = rc::conv2d_backward(&s, &to_f64(&c.x), &to_f64(&c.w), &to_f64(&dy));
    let terms = s.n * 64 * 64;
    for algo in ALGOS {
        let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
        if algo == ConvAlgo::Im2col {
            assert!(scratch.chunk() < s.n, "the test means to exercise several chunks, got {}", scratch.chunk());
        }
        let mut y = poisoned(&gpu, &s.y_shape());
        conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, Some(&c.gb), Activation::Identity, &mut y, &scratch).unwrap();
        assert_close(&format!("y {algo:?}"), &y.download(&gpu).unwrap(), &expected_y, tol_for(s.patch_len()));
        let mut dx = poisoned(&gpu, &s.x_shape());
        let mut dw = poisoned(&gpu, &s.w_shape());
        let mut db = poisoned(&gpu, &[s.o]);
        conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, Some(&mut db), &scratch).unwrap();
        assert_close(&format!("dx {algo:?}"), &dx.download(&gpu).unwrap(), &g.dx, tol_for(s.o * 9));
        assert_close(&format!("dw {algo:?}"), &dw.download(&gpu).unwrap(), &g.dw, tol_for(terms));
        assert_close(&format!("db {algo:?}"), &db.download(&gpu).unwrap(), &g.db, tol_for(terms));
    }
}

#[test]
fn conv_is_deterministic() {
    let gpu = gpu();
    let s = Conv2dShape::new(3, 3, 13, 11, 4, 3, 1, 1);
    let c = conv_case(&gpu, s, 5);
    let gdy = upload(&gpu, &s.y_shape(), &rand_vec(6, s.y_shape().iter().product()));
    for algo in ALGOS {
        let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (mut y, mut dx, mut dw, mut db) =
                (poisoned(&gpu, &s.y_shape()), poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()), poisoned(&gpu, &[s.o]));
            conv::conv2d_forward(&gpu, &s, &c.gx, &c.gw, Some(&c.gb), Activation::Relu, &mut y, &scratch).unwrap();
            conv::conv2d_backward(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&mut dx), &mut dw, Some(&mut db), &scratch).unwrap();
            let bits = |t: &Tensor| t.download(&gpu).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            runs.push([bits(&y), bits(&dx), bits(&dw), bits(&db)]);
        }
        assert_eq!(runs[0], runs[1], "{algo:?}: two runs differ");
    }
}

#[test]
fn conv_shape_errors_are_errors() {
    let gpu = gpu();
    let s = Conv2dShape::new(2, 3, 13, 11, 4, 3, 1, 1);
    let c = conv_case(&gpu, s, 1);
    let scratch = ConvScratch::new(&gpu, &s).unwrap();
    let y = poisoned(&gpu, &s.y_shape());
    let shape_err = |r: headswap::Result<Vec<headswap::kernels::Dispatch>>, what: &str| match r {
        Err(Error::Shape { .. }) => {}
        other => panic!("{what}: expected a shape error, got {other:?}"),
    };
    // the output would be empty, strides or sizes of zero
    for bad in [
        Conv2dShape::new(1, 1, 3, 3, 1, 5, 1, 0),
        Conv2dShape::new(1, 1, 3, 3, 1, 3, 0, 0),
        Conv2dShape::new(0, 1, 3, 3, 1, 3, 1, 0),
        Conv2dShape::new(1, 0, 3, 3, 1, 3, 1, 0),
    ] {
        assert!(matches!(bad.validate(), Err(Error::Shape { .. })), "{bad:?}");
        assert!(ConvScratch::new(&gpu, &bad).is_err(), "{bad:?}");
    }
    let f = |x: &Tensor, w: &Tensor, b: Option<&Tensor>, y: &Tensor| {
        conv::conv2d_forward_dispatches(&gpu, &s, x, w, b, Activation::Identity, y, &scratch)
    };
    shape_err(f(&c.gw, &c.gw, None, &y), "x wrong");
    shape_err(f(&c.gx, &c.gx, None, &y), "w wrong");
    shape_err(f(&c.gx, &c.gw, Some(&c.gx), &y), "b wrong");
    shape_err(f(&c.gx, &c.gw, None, &c.gx), "y wrong");
    assert!(f(&c.gx, &c.gw, Some(&c.gb), &y).is_ok());
    let flat = c.gx.reshape(&[2, 3 * 13 * 11]).unwrap();
    shape_err(f(&flat, &c.gw, None, &y), "x flattened");
    // scratch made for another shape
    let other = ConvScratch::new(&gpu, &Conv2dShape::new(1, 3, 13, 11, 4, 3, 1, 1)).unwrap();
    shape_err(conv::conv2d_forward_dispatches(&gpu, &s, &c.gx, &c.gw, None, Activation::Identity, &y, &other), "scratch");
    // backward
    let dw = poisoned(&gpu, &s.w_shape());
    let db = poisoned(&gpu, &[s.o]);
    let dx = poisoned(&gpu, &s.x_shape());
    let bwd = |dy: &Tensor, dx: Option<&Tensor>, dw: &Tensor, db: Option<&Tensor>| {
        conv::conv2d_backward_dispatches(&gpu, &s, &c.gx, &c.gw, dy, dx, dw, db, &scratch)
    };
    assert!(bwd(&y, Some(&dx), &dw, Some(&db)).is_ok());
    shape_err(bwd(&c.gx, Some(&dx), &dw, Some(&db)), "dy wrong");
    shape_err(bwd(&y, Some(&y), &dw, Some(&db)), "dx wrong");
    shape_err(bwd(&y, Some(&dx), &db, Some(&db)), "dw wrong");
    shape_err(bwd(&y, Some(&dx), &dw, Some(&dw)), "db wrong");
    // u32 where f32 is needed
    let xu = Tensor::from_u32(&gpu, &s.x_shape(), &vec![0; c.x.len()]).unwrap();
    shape_err(f(&xu, &c.gw, None, &y), "x u32");
}

#[test]
fn im2col_scratch_is_bounded_and_reported() {
    let gpu = gpu();
    let s = Conv2dShape::new(64, 16, 28, 28, 32, 3, 1, 1);
    let direct = ConvScratch::new(&gpu, &s).unwrap();
    assert_eq!(direct.algo(), ConvAlgo::Direct);
    // the direct form keeps only the per-slice weight gradients of a long reduction
    assert!(direct.bytes() <= 16 << 20, "{} bytes", direct.bytes());
    assert_eq!(ConvScratch::new(&gpu, &Conv2dShape::new(3, 3, 13, 11, 4, 3, 1, 1)).unwrap().bytes(), 0);
    let im = ConvScratch::with_algo(&gpu, &s, ConvAlgo::Im2col).unwrap();
    assert!(im.chunk() * 28 * 28 <= 32_768 && im.chunk() >= 1);
    assert!(im.bytes() > 0 && im.bytes() < 160 << 20, "{} bytes", im.bytes());
}

// ---------------------------------------------------------------------------------------------
// pooling

fn pool_sweep() -> Vec<Pool2dShape> {
    let mut v = Vec::new();
    for (k, stride, pad) in [(2, 2, 0), (2, 2, 1), (3, 1, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)] {
        for n in [1, 3] {
            v.push(Pool2dShape::new(n, 3, 13, 11, k, stride, pad));
        }
    }
    v.push(Pool2dShape { n: 2, c: 2, h: 13, w: 11, kh: 3, kw: 2, sh: 2, sw: 3, ph: 1, pw: 0, pb: 1, pr: 0, ceil: false });
    // more (image, channel) planes than one grid dimension holds (65,535): the max-pool
    // gradient's planes loop past it
    v.push(Pool2dShape::new(16_400, 4, 3, 3, 2, 2, 1));
    // windows that tile the input exactly (the gradient's scatter form): square, rectangular,
    // 3×3, 1×1, a one-window plane, and more planes than its grid holds (65,535 × 4)
    for (n, c, h, w, kh, kw) in [(3, 3, 12, 10, 2, 2), (2, 5, 8, 9, 2, 3), (1, 2, 9, 6, 3, 3), (2, 3, 5, 7, 1, 1), (3, 4, 2, 2, 2, 2)] {
        v.push(Pool2dShape { n, c, h, w, kh, kw, sh: kh, sw: kw, ph: 0, pw: 0, pb: 0, pr: 0, ceil: false });
    }
    v.push(Pool2dShape::new(65_600, 4, 2, 2, 2, 2, 0));
    assert!(v.iter().filter(|s| s.tiles_input()).count() == 6 && v.iter().any(|s| !s.tiles_input()));
    v.extend(ceil_and_asymmetric_pools());
    v
}

/// `ceil_mode` windows reaching past the padded input (ResNet's and GoogLeNet's
/// `MaxPool2d(3, 2, ceil_mode=True)`, a 2×2/2 on odd sizes, with and without padding), a ceil mode
/// that changes nothing (even size), rectangular windows (CREPE's `MaxPool2d((2, 1), (2, 1))`)
/// and asymmetric padding, at sizes 1, 7 and 33.
fn ceil_and_asymmetric_pools() -> Vec<Pool2dShape> {
    let p = Pool2dShape::new;
    let v = vec![
        p(2, 3, 33, 7, 3, 2, 0).with_ceil_mode(true),
        p(1, 2, 7, 33, 3, 2, 1).with_ceil_mode(true),
        p(3, 1, 7, 7, 2, 2, 0).with_ceil_mode(true),
        p(1, 2, 7, 7, 2, 2, 1).with_ceil_mode(true),
        p(2, 2, 8, 6, 2, 2, 0).with_ceil_mode(true),
        p(1, 3, 1, 7, 1, 3, 0).with_kernel_hw(1, 3).with_stride_hw(1, 2).with_ceil_mode(true),
        p(2, 3, 33, 1, 1, 1, 0).with_kernel_hw(2, 1).with_stride_hw(2, 1),
        p(2, 2, 7, 33, 3, 2, 0).with_padding([1, 0, 0, 1]),
        p(1, 3, 33, 7, 3, 2, 0).with_padding([0, 1, 1, 1]).with_ceil_mode(true),
        p(1, 1, 1, 1, 1, 1, 0).with_ceil_mode(true),
    ];
    assert!(v.iter().any(|s| !s.window().windows_whole()), "some windows must overhang");
    for s in &v {
        s.validate().unwrap_or_else(|e| panic!("{s:?}: {e}"));
    }
    v
}

/// Values from {-2, -1, 0, 1, 2}, so ties inside windows are common.
fn tie_vec(seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(5) as f32 - 2.0).collect()
}

#[test]
fn max_pool_matches_reference_with_ties() {
    let gpu = gpu();
    for (i, s) in pool_sweep().into_iter().enumerate() {
        for (kind, x) in [
            ("ties", tie_vec(50 + i as u64, s.x_shape().iter().product())),
            ("random", rand_vec(80 + i as u64, s.x_shape().iter().product())),
        ] {
            let gx = upload(&gpu, &s.x_shape(), &x);
            let mut y = poisoned(&gpu, &s.y_shape());
            let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &vec![u32::MAX; y.len()]).unwrap();
            conv::max_pool2d_forward(&gpu, &s, &gx, &mut y, &mut arg).unwrap();
            let (ey, earg) = rc::max_pool2d_forward(&s, &to_f64(&x));
            assert_close(&format!("max pool y {kind} {s:?}"), &y.download(&gpu).unwrap(), &ey, Tolerance { rel: 0.0, abs: 0.0 });
            assert_eq!(arg.download_u32(&gpu).unwrap(), earg, "max pool argmax {kind} {s:?}");

            let dy = rand_vec(90 + i as u64, y.len());
            let gdy = upload(&gpu, &s.y_shape(), &dy);
            let mut dx = poisoned(&gpu, &s.x_shape());
            conv::max_pool2d_backward(&gpu, &s, &gdy, &arg, &mut dx).unwrap();
            let edx = rc::max_pool2d_backward(&s, &to_f64(&dy), &earg);
            assert_close(&format!("max pool dx {kind} {s:?}"), &dx.download(&gpu).unwrap(), &edx, Tolerance::STRICT);
        }
    }
}

#[test]
fn max_pool_nan_wins_on_both_paths() {
    // PyTorch: a NaN in a window is its maximum (the last NaN in row-major order), and the
    // gradient flows to it; tiled (2×2 stride 2) and flat (3×3 stride 2 padded) windows
    let gpu = gpu();
    for (i, s) in [Pool2dShape::new(3, 2, 8, 6, 2, 2, 0), Pool2dShape::new(3, 2, 9, 7, 3, 2, 1)].into_iter().enumerate() {
        let n = s.x_shape().iter().product();
        let mut r = Rng::new(500 + i as u64);
        let x: Vec<f32> = tie_vec(600 + i as u64, n).into_iter().map(|v| if r.next_f64() < 0.15 { f32::NAN } else { v }).collect();
        let gx = upload(&gpu, &s.x_shape(), &x);
        let mut y = poisoned(&gpu, &s.y_shape());
        let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &vec![u32::MAX; y.len()]).unwrap();
        conv::max_pool2d_forward(&gpu, &s, &gx, &mut y, &mut arg).unwrap();
        let (ey, earg) = rc::max_pool2d_forward(&s, &to_f64(&x));
        let gy = y.download(&gpu).unwrap();
        assert!(ey.iter().any(|v| v.is_nan()) && ey.iter().any(|v| !v.is_nan()), "the case needs NaN and finite windows");
        for (k, (&a, &e)) in gy.iter().zip(&ey).enumerate() {
            assert!(a.is_nan() == e.is_nan() && (a.is_nan() || a as f64 == e), "{s:?} y[{k}]: {a} vs {e}");
        }
        assert_eq!(arg.download_u32(&gpu).unwrap(), earg, "{s:?} argmax");
        let dy = rand_vec(700 + i as u64, y.len());
        let mut dx = poisoned(&gpu, &s.x_shape());
        conv::max_pool2d_backward(&gpu, &s, &upload(&gpu, &s.y_shape(), &dy), &arg, &mut dx).unwrap();
        assert_close(
            &format!("{s:?} dx"),
            &dx.download(&gpu).unwrap(),
            &rc::max_pool2d_backward(&s, &to_f64(&dy), &earg),
            Tolerance::STRICT,
        );
    }
}

#[test]
fn tiled_pools_too_wide_for_their_grid_take_the_flat_kernels() {
    // 300,000 windows in a row: 75,000 workgroups of 4, past the 65,535 a dimension holds (the
    // flat gradient's grid, 8 input pixels per workgroup, still fits)
    let gpu = gpu();
    let s = Pool2dShape { n: 1, c: 2, h: 2, w: 300_000, kh: 2, kw: 1, sh: 2, sw: 1, ph: 0, pw: 0, pb: 0, pr: 0, ceil: false };
    assert!(s.tiles_input());
    let x = rand_vec(801, s.x_shape().iter().product());
    let gx = upload(&gpu, &s.x_shape(), &x);
    let mut y = poisoned(&gpu, &s.y_shape());
    let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &vec![u32::MAX; y.len()]).unwrap();
    conv::max_pool2d_forward(&gpu, &s, &gx, &mut y, &mut arg).unwrap();
    let (ey, earg) = rc::max_pool2d_forward(&s, &to_f64(&x));
    assert_close("wide pool y", &y.download(&gpu).unwrap(), &ey, Tolerance::STRICT);
    assert_eq!(arg.download_u32(&gpu).unwrap(), earg, "wide pool argmax");
    let dy = rand_vec(802, y.len());
    let mut dx = poisoned(&gpu, &s.x_shape());
    conv::max_pool2d_backward(&gpu, &s, &upload(&gpu, &s.y_shape(), &dy), &arg, &mut dx).unwrap();
    assert_close("wide pool dx", &dx.download(&gpu).unwrap(), &rc::max_pool2d_backward(&s, &to_f64(&dy), &earg), Tolerance::STRICT);
}

#[test]
fn max_pool_hand_computed_like_pytorch() {
    // torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True) on a 1×1×2×4 plane with ties:
    // [[1, 3, 2, 2], [3, 0, 2, 1]] → values [3, 2], indices [1, 2] (the first of the tied 3s and 2s)
    let gpu = gpu();
    let s = Pool2dShape::new(1, 1, 2, 4, 2, 2, 0);
    let gx = upload(&gpu, &s.x_shape(), &[1., 3., 2., 2., 3., 0., 2., 1.]);
    let mut y = poisoned(&gpu, &s.y_shape());
    let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &[9, 9]).unwrap();
    conv::max_pool2d_forward(&gpu, &s, &gx, &mut y, &mut arg).unwrap();
    assert_eq!(y.download(&gpu).unwrap(), vec![3., 2.]);
    assert_eq!(arg.download_u32(&gpu).unwrap(), vec![1, 2]);
    // padding 1, window 2, stride 1 over a 1×2 plane [5, -7]: windows [pad, 5], [5, -7], [-7, pad]
    let s = Pool2dShape { n: 1, c: 1, h: 1, w: 2, kh: 1, kw: 2, sh: 1, sw: 1, ph: 0, pw: 1, pb: 0, pr: 1, ceil: false };
    let gx = upload(&gpu, &s.x_shape(), &[5., -7.]);
    let mut y = poisoned(&gpu, &s.y_shape());
    let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &[9, 9, 9]).unwrap();
    conv::max_pool2d_forward(&gpu, &s, &gx, &mut y, &mut arg).unwrap();
    assert_eq!(y.download(&gpu).unwrap(), vec![5., 5., -7.]);
    assert_eq!(arg.download_u32(&gpu).unwrap(), vec![0, 0, 1]);
    // both windows route to element 0; gradients add
    let gdy = upload(&gpu, &s.y_shape(), &[1., 10., 100.]);
    let mut dx = poisoned(&gpu, &s.x_shape());
    conv::max_pool2d_backward(&gpu, &s, &gdy, &arg, &mut dx).unwrap();
    assert_eq!(dx.download(&gpu).unwrap(), vec![11., 100.]);
}

#[test]
fn avg_pool_matches_reference() {
    let gpu = gpu();
    for (i, s) in pool_sweep().into_iter().enumerate() {
        let x = rand_vec(60 + i as u64, s.x_shape().iter().product());
        let gx = upload(&gpu, &s.x_shape(), &x);
        let mut y = poisoned(&gpu, &s.y_shape());
        conv::avg_pool2d_forward(&gpu, &s, &gx, &mut y).unwrap();
        assert_close(&format!("avg pool y {s:?}"), &y.download(&gpu).unwrap(), &rc::avg_pool2d_forward(&s, &to_f64(&x)), Tolerance::STRICT);
        let dy = rand_vec(70 + i as u64, y.len());
        let gdy = upload(&gpu, &s.y_shape(), &dy);
        let mut dx = poisoned(&gpu, &s.x_shape());
        conv::avg_pool2d_backward(&gpu, &s, &gdy, &mut dx).unwrap();
        assert_close(
            &format!("avg pool dx {s:?}"),
            &dx.download(&gpu).unwrap(),
            &rc::avg_pool2d_backward(&s, &to_f64(&dy)),
            Tolerance::STRICT,
        );
    }
}

#[test]
fn avg_pool_counts_the_padding_like_pytorch() {
    // torch.nn.functional.avg_pool2d(torch.ones(1, 1, 2, 2), 3, 1, 1) is 4/9 everywhere
    let gpu = gpu();
    let s = Pool2dShape::new(1, 1, 2, 2, 3, 1, 1);
    let gx = upload(&gpu, &s.x_shape(), &[1.0; 4]);
    let mut y = poisoned(&gpu, &s.y_shape());
    conv::avg_pool2d_forward(&gpu, &s, &gx, &mut y).unwrap();
    assert_close("avg pool padded", &y.download(&gpu).unwrap(), &[4.0 / 9.0; 4], Tolerance::STRICT);
}

#[test]
fn reference_pool_gradients_match_finite_differences() {
    let mut rng = Rng::new(5);
    for (i, s) in pool_sweep().into_iter().enumerate() {
        // continuous random inputs: no ties, so the max is differentiable
        let mut x = to_f64(&rand_vec(200 + i as u64, s.x_shape().iter().product()));
        let g = to_f64(&rand_vec(300 + i as u64, s.y_shape().iter().product()));
        let idx = sample(x.len(), 40, &mut rng);
        let dot = |y: Vec<f64>| y.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>();
        let (_, arg) = rc::max_pool2d_forward(&s, &x);
        let dmax = rc::max_pool2d_backward(&s, &g, &arg);
        check_fd(&format!("max pool dx {s:?}"), &mut x, &idx, &dmax, |x| dot(rc::max_pool2d_forward(&s, x).0));
        let davg = rc::avg_pool2d_backward(&s, &g);
        check_fd(&format!("avg pool dx {s:?}"), &mut x, &idx, &davg, |x| dot(rc::avg_pool2d_forward(&s, x)));
    }
    let (n, c, h, w) = (3, 2, 13, 11);
    let mut x = to_f64(&rand_vec(11, n * c * h * w));
    let g = to_f64(&rand_vec(12, n * c));
    let dx = rc::global_avg_pool_backward(n, c, h, w, &g);
    let all: Vec<usize> = (0..x.len()).collect();
    check_fd("global avg pool dx", &mut x, &all, &dx, |x| {
        rc::global_avg_pool_forward(n, c, h, w, x).iter().zip(&g).map(|(a, b)| a * b).sum()
    });
}

#[test]
fn global_avg_pool_matches_reference() {
    let gpu = gpu();
    // a small plane (one invocation per output) and a large one (sliced reductions)
    for (i, &(n, c, h, w)) in [(3, 3, 13, 11), (1, 1, 1, 1), (2, 5, 7, 1), (1, 2, 300, 301)].iter().enumerate() {
        let x = rand_vec(20 + i as u64, n * c * h * w);
        let gx = upload(&gpu, &[n, c, h, w], &x);
        let mut y = poisoned(&gpu, &[n, c]);
        conv::global_avg_pool_forward(&gpu, &gx, &mut y).unwrap();
        let tol = Tolerance { rel: 1e-5, abs: 1e-6 * ((h * w) as f64).sqrt() / (h * w) as f64 + 1e-7 };
        assert_close(
            &format!("gap y {:?}", (n, c, h, w)),
            &y.download(&gpu).unwrap(),
            &rc::global_avg_pool_forward(n, c, h, w, &to_f64(&x)),
            tol,
        );
        let dy = rand_vec(30 + i as u64, n * c);
        let gdy = upload(&gpu, &[n, c], &dy);
        let mut dx = poisoned(&gpu, &[n, c, h, w]);
        conv::global_avg_pool_backward(&gpu, &gdy, &mut dx).unwrap();
        assert_close("gap dx", &dx.download(&gpu).unwrap(), &rc::global_avg_pool_backward(n, c, h, w, &to_f64(&dy)), Tolerance::STRICT);
    }
}

#[test]
fn pool_shape_errors_are_errors() {
    let gpu = gpu();
    let s = Pool2dShape::new(2, 3, 13, 11, 2, 2, 0);
    let x = poisoned(&gpu, &s.x_shape());
    let y = poisoned(&gpu, &s.y_shape());
    let arg = Tensor::from_u32(&gpu, &s.y_shape(), &vec![0; y.len()]).unwrap();
    assert!(conv::max_pool2d_forward_dispatch(&gpu, &s, &x, &y, &arg).is_ok());
    // argmax must be u32, y must have the output shape
    assert!(matches!(conv::max_pool2d_forward_dispatch(&gpu, &s, &x, &y, &y), Err(Error::Shape { .. })));
    assert!(matches!(conv::max_pool2d_forward_dispatch(&gpu, &s, &x, &x, &arg), Err(Error::Shape { .. })));
    assert!(matches!(conv::max_pool2d_backward_dispatch(&gpu, &s, &y, &arg, &y), Err(Error::Shape { .. })));
    assert!(matches!(conv::avg_pool2d_forward_dispatch(&gpu, &s, &y, &y), Err(Error::Shape { .. })));
    assert!(matches!(conv::avg_pool2d_backward_dispatch(&gpu, &s, &x, &x), Err(Error::Shape { .. })));
    // padding over half the window, empty output, zero stride
    for bad in [Pool2dShape::new(1, 1, 5, 5, 2, 2, 2), Pool2dShape::new(1, 1, 2, 2, 3, 1, 0), Pool2dShape::new(1, 1, 5, 5, 2, 0, 0)] {
        assert!(matches!(bad.validate(), Err(Error::Shape { .. })), "{bad:?}");
        let xb = poisoned(&gpu, &bad.x_shape());
        assert!(conv::avg_pool2d_forward_dispatch(&gpu, &bad, &xb, &xb).is_err());
    }
    // global pool: y must be [N, C], x 4-D
    let g = poisoned(&gpu, &[2, 3]);
    assert!(conv::global_avg_pool_forward_dispatch(&gpu, &x, &g).is_ok());
    assert!(matches!(conv::global_avg_pool_forward_dispatch(&gpu, &x, &y), Err(Error::Shape { .. })));
    assert!(matches!(conv::global_avg_pool_forward_dispatch(&gpu, &g, &g), Err(Error::Shape { .. })));
    assert!(matches!(conv::global_avg_pool_backward_dispatch(&gpu, &y, &x), Err(Error::Shape { .. })));
}

// ---------------------------------------------------------------------------------------------
// measurement

/// Direct against im2col + matmul on this adapter, for the layers of a small CNN: the fastest of
/// several runs of each dispatch list, the two algorithms interleaved so that both see the same
/// load. Run with `cargo test --test kernel_conv bench_direct_vs_im2col -- --ignored --nocapture`
/// (`HEADSWAP_CONV_BENCH_REPS` sets the runs, 7 by default).
/// Times a MobileNetV2-sized depthwise 3×3 (forward, dx, dw, best of N runs) on this adapter:
/// `cargo test --test kernel_conv bench_depthwise -- --ignored --nocapture`
/// (`HEADSWAP_CONV_BENCH_REPS` sets the runs, 7 by default).
#[test]
#[ignore]
fn bench_depthwise() {
    let gpu = gpu();
    let reps: usize = std::env::var("HEADSWAP_CONV_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    eprintln!("adapter {:?}, best of {reps} runs; ms", gpu.adapter_info().name);
    for (name, s) in [
        ("8×32×56×56 dw3 s1", Conv2dShape::new(8, 32, 56, 56, 32, 3, 1, 1).with_groups(32)),
        ("8×96×56×56 dw3 s2", Conv2dShape::new(8, 96, 56, 56, 96, 3, 2, 1).with_groups(96)),
    ] {
        let c = conv_case(&gpu, s, 1);
        let gdy = upload(&gpu, &s.y_shape(), &rand_vec(2, s.y_shape().iter().product()));
        let (y, dx, dw) = (poisoned(&gpu, &s.y_shape()), poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()));
        let sc = ConvScratch::new(&gpu, &s).unwrap();
        let lists = [
            conv::conv2d_forward_dispatches(&gpu, &s, &c.gx, &c.gw, None, Activation::Relu, &y, &sc).unwrap(),
            conv::conv2d_backward_input_dispatches(&gpu, &s, &c.gx, &c.gw, &gdy, &dx, &sc).unwrap(),
            conv::conv2d_backward_dispatches(&gpu, &s, &c.gx, &c.gw, &gdy, None, &dw, None, &sc).unwrap(),
        ];
        let mut best = [f64::INFINITY; 3];
        for rep in 0..=reps {
            for (k, d) in lists.iter().enumerate() {
                let refs: Vec<_> = d.iter().collect();
                let t = std::time::Instant::now();
                gpu.run("bench", &refs).unwrap();
                gpu.sync().unwrap();
                if rep > 0 {
                    best[k] = best[k].min(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let kernels: Vec<&str> = lists.iter().flatten().map(|d| d.name()).collect();
        eprintln!("{name}: forward {:.2}  dx {:.2}  dw {:.2}  ({kernels:?})", best[0], best[1], best[2]);
    }
}

#[test]
#[ignore]
fn bench_direct_vs_im2col() {
    let gpu = gpu();
    let reps: usize = std::env::var("HEADSWAP_CONV_BENCH_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    let layers = [
        ("1→16 28×28 k3 s1 p1", Conv2dShape::new(64, 1, 28, 28, 16, 3, 1, 1)),
        ("16→32 14×14 k3 s1 p1", Conv2dShape::new(64, 16, 14, 14, 32, 3, 1, 1)),
        ("32→64 7×7 k3 s1 p1", Conv2dShape::new(64, 32, 7, 7, 64, 3, 1, 1)),
        ("3→16 32×32 k5 s2 p1", Conv2dShape::new(64, 3, 32, 32, 16, 5, 2, 1)),
    ];
    eprintln!("adapter {:?}, best of {reps} runs, batch 64; ms (GMAC/s)", gpu.adapter_info().name);
    for (name, s) in layers {
        let c = conv_case(&gpu, s, 1);
        let gdy = upload(&gpu, &s.y_shape(), &rand_vec(2, s.y_shape().iter().product()));
        let (y, dx, dw, db) =
            (poisoned(&gpu, &s.y_shape()), poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()), poisoned(&gpu, &[s.o]));
        let scratch: Vec<ConvScratch> = ALGOS.iter().map(|&a| ConvScratch::with_algo(&gpu, &s, a).unwrap()).collect();
        // per algorithm: forward, backward with dx, backward without dx
        let lists: Vec<[Vec<headswap::kernels::Dispatch>; 3]> = scratch
            .iter()
            .map(|sc| {
                [
                    conv::conv2d_forward_dispatches(&gpu, &s, &c.gx, &c.gw, Some(&c.gb), Activation::Relu, &y, sc).unwrap(),
                    conv::conv2d_backward_dispatches(&gpu, &s, &c.gx, &c.gw, &gdy, Some(&dx), &dw, Some(&db), sc).unwrap(),
                    conv::conv2d_backward_dispatches(&gpu, &s, &c.gx, &c.gw, &gdy, None, &dw, Some(&db), sc).unwrap(),
                ]
            })
            .collect();
        let run = |d: &[headswap::kernels::Dispatch]| {
            let refs: Vec<_> = d.iter().collect();
            let t = std::time::Instant::now();
            gpu.run("bench", &refs).unwrap();
            gpu.sync().unwrap();
            t.elapsed().as_secs_f64() * 1e3
        };
        let mut best = vec![[f64::INFINITY; 3]; lists.len()];
        for rep in 0..=reps {
            for (a, l) in lists.iter().enumerate() {
                for (k, d) in l.iter().enumerate() {
                    let t = run(d);
                    if rep > 0 {
                        best[a][k] = best[a][k].min(t);
                    }
                }
            }
        }
        let (oh, ow) = s.out_hw();
        let macs = (s.n * s.o * oh * ow * s.patch_len()) as f64;
        let mut line = format!("{name:22}");
        for (a, algo) in ALGOS.iter().enumerate() {
            let [f, b, bw] = best[a];
            line += &format!(
                " | {algo:?}: fwd {f:6.1} ({:4.2}) bwd {b:6.1} ({:4.2}) bwd-no-dx {bw:6.1}, {} KiB scratch",
                macs / f / 1e6,
                2.0 * macs / b / 1e6,
                scratch[a].bytes() >> 10
            );
        }
        eprintln!("{line}");
    }
}

#[test]
fn algorithm_choice_is_a_known_algorithm_and_stable() {
    use headswap::kernels::conv::{ConvAlgo, ConvUse, algo_class_key, choose_algo};
    let gpu = gpu();
    let shape = Conv2dShape::new(5, 3, 11, 13, 4, 3, 1, 1);
    for usage in [ConvUse::Forward, ConvUse::Train { dx: true }, ConvUse::Train { dx: false }] {
        let first = choose_algo(&gpu, &shape, usage).unwrap();
        assert!(matches!(first, ConvAlgo::Direct | ConvAlgo::Im2col));
        // remembered: the same answer, every time
        for _ in 0..3 {
            assert_eq!(choose_algo(&gpu, &shape, usage).unwrap(), first, "{}", algo_class_key(&shape, usage));
        }
    }
    // the batch is bucketed, the other dimensions and the use are not
    let key = |s: &Conv2dShape, u| algo_class_key(s, u);
    let fwd = ConvUse::Forward;
    assert_eq!(key(&Conv2dShape::new(100, 3, 11, 13, 4, 3, 1, 1), fwd), key(&Conv2dShape::new(120, 3, 11, 13, 4, 3, 1, 1), fwd));
    assert_ne!(key(&shape, fwd), key(&Conv2dShape::new(5, 3, 11, 13, 4, 3, 2, 1), fwd));
    assert_ne!(key(&shape, ConvUse::Train { dx: true }), key(&shape, ConvUse::Train { dx: false }));
    assert_eq!(ConvAlgo::from_name("im2col"), Some(ConvAlgo::Im2col));
    assert_eq!(ConvAlgo::from_name(ConvAlgo::Direct.name()), Some(ConvAlgo::Direct));
    assert_eq!(ConvAlgo::from_name("winograd"), None);
}

/// Convolution and pooling are two shader modules (conv.wgsl and pool.wgsl, each with
/// window.wgsl prepended): each compiled once, however many of its entry points run, and a
/// repeated launch compiles nothing.
#[test]
fn conv_and_pool_modules_are_compiled_once_each() {
    let gpu = private_gpu();
    let counts = || (gpu.pipeline_cache().module_count(), gpu.pipeline_cache().len());
    let s = Pool2dShape::new(1, 2, 4, 4, 2, 2, 0);
    let x = upload(&gpu, &s.x_shape(), &rand_vec(1, 32));
    let mut y = poisoned(&gpu, &s.y_shape());
    let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &vec![u32::MAX; y.len()]).unwrap();
    let (modules, pipelines) = counts();
    conv::max_pool2d_forward(&gpu, &s, &x, &mut y, &mut arg).unwrap();
    assert_eq!(counts(), (modules + 1, pipelines + 1), "max pool: pool.wgsl and one pipeline");
    conv::max_pool2d_forward(&gpu, &s, &x, &mut y, &mut arg).unwrap();
    assert_eq!(counts(), (modules + 1, pipelines + 1), "a repeated launch compiled something");
    conv::avg_pool2d_forward(&gpu, &s, &x, &mut y).unwrap();
    assert_eq!(counts(), (modules + 1, pipelines + 2), "avg pool: a pipeline of the module already compiled");
    let c = Conv2dShape::new(1, 2, 4, 4, 3, 3, 1, 1);
    let w = upload(&gpu, &c.w_shape(), &rand_vec(2, 54));
    let mut out = poisoned(&gpu, &c.y_shape());
    let scratch = ConvScratch::with_algo(&gpu, &c, ConvAlgo::Direct).unwrap();
    conv::conv2d_forward(&gpu, &c, &x, &w, None, Activation::Identity, &mut out, &scratch).unwrap();
    assert_eq!(counts(), (modules + 2, pipelines + 3), "conv: conv.wgsl and one pipeline");
    conv::conv2d_forward(&gpu, &c, &x, &w, None, Activation::Identity, &mut out, &scratch).unwrap();
    assert_eq!(counts(), (modules + 2, pipelines + 3), "a repeated launch compiled something");
}

// ---------------------------------------------------------------------------------------------
// PyTorch's own numbers (torch 2.15, float64 autograd; `scripts/torch_conv_fixture.py` wrote
// `tests/fixtures/torch_conv.safetensors`, so no Python is needed here)

/// A float64 result against PyTorch's float64 one, which the fixture loader hands over rounded
/// to f32: agreement to that rounding.
fn assert_close_f64(what: &str, actual: &[f64], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= 1e-7 * e.abs() + 1e-9, "{what}[{i}]: {a} vs PyTorch {e}");
    }
}

fn torch_fixture() -> headswap::checkpoint::Checkpoint {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_conv.safetensors");
    headswap::checkpoint::load(&path).unwrap()
}

/// The cases of kind `kind` (`conv`, `max`, `avg`) in the fixture: (name prefix, geometry).
fn torch_cases(t: &headswap::checkpoint::Checkpoint, kind: &str) -> Vec<(String, Vec<usize>)> {
    let mut v: Vec<(String, Vec<usize>)> = t
        .names()
        .filter(|n| n.starts_with(&format!("{kind}.")) && n.ends_with(".geom"))
        .map(|n| (n.trim_end_matches("geom").to_string(), t.get(n).unwrap().data.iter().map(|&g| g as usize).collect()))
        .collect();
    v.sort();
    v
}

/// Grouped, depthwise (MobileNetV2's), channel-multiplier, rectangular and asymmetrically padded
/// (CREPE's `F.pad` + `(16, 1)` kernel at stride `(4, 1)`) convolutions: the GPU's output and
/// gradients and the float64 reference equal PyTorch's.
#[test]
fn grouped_and_padded_conv_equal_pytorch() {
    let t = torch_fixture();
    let gpu = gpu();
    let cases = torch_cases(&t, "conv");
    assert_eq!(cases.len(), 6, "{cases:?}");
    for (p, g) in cases {
        let get = |name: &str| t.get(&format!("{p}{name}")).unwrap_or_else(|| panic!("{p}{name} missing")).data.clone();
        let s = Conv2dShape::new(g[0], g[1], g[2], g[3], g[4], 1, 1, 0)
            .with_kernel_hw(g[5], g[6])
            .with_stride_hw(g[7], g[8])
            .with_padding([g[9], g[10], g[11], g[12]])
            .with_groups(g[13]);
        let bias = g[14] == 1;
        let (x, w, dy) = (get("x"), get("w"), get("dy"));
        let b = bias.then(|| get("b"));
        let (want_y, want_dx, want_dw) = (to_f64(&get("y")), to_f64(&get("dx")), to_f64(&get("dw")));
        // the reference: float64 on the same f32 inputs, so agreement to rounding
        let b64 = b.as_ref().map(|b| to_f64(b));
        assert_close_f64(&format!("{p} reference y"), &rc::conv2d_forward(&s, &to_f64(&x), &to_f64(&w), b64.as_deref()), &want_y);
        let rg = rc::conv2d_backward(&s, &to_f64(&x), &to_f64(&w), &to_f64(&dy));
        assert_close_f64(&format!("{p} reference dx"), &rg.dx, &want_dx);
        assert_close_f64(&format!("{p} reference dw"), &rg.dw, &want_dw);
        // the GPU
        let (gx, gw, gdy) = (upload(&gpu, &s.x_shape(), &x), upload(&gpu, &s.w_shape(), &w), upload(&gpu, &s.y_shape(), &dy));
        let gb = b.as_ref().map(|b| upload(&gpu, &[s.o], b));
        for algo in algos_for(&s) {
            let scratch = ConvScratch::with_algo(&gpu, &s, algo).unwrap();
            let mut y = poisoned(&gpu, &s.y_shape());
            conv::conv2d_forward(&gpu, &s, &gx, &gw, gb.as_ref(), Activation::Identity, &mut y, &scratch).unwrap();
            assert_close(&format!("{p} {algo:?} y"), &y.download(&gpu).unwrap(), &want_y, tol_for(s.patch_len()));
            let (mut dx, mut dw, mut db) = (poisoned(&gpu, &s.x_shape()), poisoned(&gpu, &s.w_shape()), poisoned(&gpu, &[s.o]));
            conv::conv2d_backward(&gpu, &s, &gx, &gw, &gdy, Some(&mut dx), &mut dw, bias.then_some(&mut db), &scratch).unwrap();
            let (oh, ow) = s.out_hw();
            assert_close(&format!("{p} {algo:?} dx"), &dx.download(&gpu).unwrap(), &want_dx, tol_for(s.o_per_group() * s.kh * s.kw));
            assert_close(&format!("{p} {algo:?} dw"), &dw.download(&gpu).unwrap(), &want_dw, tol_for(s.n * oh * ow));
            if bias {
                assert_close(&format!("{p} {algo:?} db"), &db.download(&gpu).unwrap(), &to_f64(&get("db")), tol_for(s.n * oh * ow));
            }
        }
    }
}

/// `MaxPool2d(3, 2, ceil_mode=True)` (ResNet/GoogLeNet), other ceil_mode windows with and without
/// padding, CREPE's `MaxPool2d((2, 1), (2, 1))` and a rectangular padded window: the GPU's max
/// pool (values, PyTorch's indices, gradient) and average pool (`count_include_pad=True`: the
/// divisor of windows that reach past the padded input) and the reference equal PyTorch's.
#[test]
fn ceil_mode_and_rectangular_pools_equal_pytorch() {
    let t = torch_fixture();
    let gpu = gpu();
    let cases = torch_cases(&t, "max");
    assert_eq!(cases.len(), 6, "{cases:?}");
    for (p, g) in cases {
        let get = |name: &str| t.get(&format!("{p}{name}")).unwrap_or_else(|| panic!("{p}{name} missing")).data.clone();
        let avg = |name: &str| {
            let name = format!("avg.{}{name}", p.trim_start_matches("max."));
            to_f64(&t.get(&name).unwrap_or_else(|| panic!("{name} missing")).data)
        };
        let s = Pool2dShape::new(g[0], g[1], g[2], g[3], 1, 1, 0)
            .with_kernel_hw(g[4], g[5])
            .with_stride_hw(g[6], g[7])
            .with_padding([g[8], g[8], g[9], g[9]])
            .with_ceil_mode(g[10] == 1);
        let (x, dy) = (get("x"), get("dy"));
        let want_idx: Vec<u32> = get("idx").iter().map(|&i| i as u32).collect();
        assert_eq!(want_idx.len(), s.y_shape().iter().product::<usize>(), "{p}: output size");
        // the reference
        let (ry, rarg) = rc::max_pool2d_forward(&s, &to_f64(&x));
        assert_close_f64(&format!("{p} reference max y"), &ry, &to_f64(&get("y")));
        assert_eq!(rarg, want_idx, "{p} reference argmax");
        assert_close_f64(&format!("{p} reference max dx"), &rc::max_pool2d_backward(&s, &to_f64(&dy), &rarg), &to_f64(&get("dx")));
        assert_close_f64(&format!("{p} reference avg y"), &rc::avg_pool2d_forward(&s, &to_f64(&x)), &avg("y"));
        assert_close_f64(&format!("{p} reference avg dx"), &rc::avg_pool2d_backward(&s, &to_f64(&dy)), &avg("dx"));
        // the GPU
        let (gx, gdy) = (upload(&gpu, &s.x_shape(), &x), upload(&gpu, &s.y_shape(), &dy));
        let mut y = poisoned(&gpu, &s.y_shape());
        let mut arg = Tensor::from_u32(&gpu, &s.y_shape(), &vec![u32::MAX; want_idx.len()]).unwrap();
        conv::max_pool2d_forward(&gpu, &s, &gx, &mut y, &mut arg).unwrap();
        assert_close(&format!("{p} max y"), &y.download(&gpu).unwrap(), &to_f64(&get("y")), Tolerance::STRICT);
        assert_eq!(arg.download_u32(&gpu).unwrap(), want_idx, "{p} argmax");
        let mut dx = poisoned(&gpu, &s.x_shape());
        conv::max_pool2d_backward(&gpu, &s, &gdy, &arg, &mut dx).unwrap();
        assert_close(&format!("{p} max dx"), &dx.download(&gpu).unwrap(), &to_f64(&get("dx")), tol_for(4));
        let mut y = poisoned(&gpu, &s.y_shape());
        conv::avg_pool2d_forward(&gpu, &s, &gx, &mut y).unwrap();
        assert_close(&format!("{p} avg y"), &y.download(&gpu).unwrap(), &avg("y"), tol_for(s.kh * s.kw));
        let mut dx = poisoned(&gpu, &s.x_shape());
        conv::avg_pool2d_backward(&gpu, &s, &gdy, &mut dx).unwrap();
        assert_close(&format!("{p} avg dx"), &dx.download(&gpu).unwrap(), &avg("dx"), tol_for(s.kh * s.kw));
    }
}
