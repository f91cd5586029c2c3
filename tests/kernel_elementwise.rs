//! Bias add and every activation, forward and backward (from the pre-activation and, where valid,
//! from the output), against the float64 reference at odd sizes with NaN-poisoned outputs, and at
//! large inputs where naive formulas overflow.
mod common;
use common::*;
use headswap::kernels::{self, Activation};
use headswap::reference;

const ACTS: [Activation; 10] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu(0.2),
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Gelu,
    Activation::Relu6,
    Activation::Silu,
    Activation::Hardswish,
    Activation::Hardsigmoid,
];

#[test]
fn bias_add_at_odd_shapes() {
    let gpu = gpu();
    for (i, &(rows, cols)) in [(1, 1), (7, 33), (33, 7), (127, 1), (3, 257), (257, 5)].iter().enumerate() {
        let x = rand_vec(i as u64, rows * cols);
        let b = rand_vec(100 + i as u64, cols);
        let mut gx = upload(&gpu, &[rows, cols], &x);
        kernels::bias_add(&gpu, &upload(&gpu, &[cols], &b), &mut gx).unwrap();
        let mut expected = to_f64(&x);
        reference::bias_add(&mut expected, &to_f64(&b));
        assert_close(&format!("bias_add {rows}x{cols}"), &gx.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
    }
    let mut x = upload(&gpu, &[2, 3], &[0.0; 6]);
    assert!(kernels::bias_add(&gpu, &upload(&gpu, &[4], &[0.0; 4]), &mut x).is_err());
}

fn check_activation(act: Activation, x: &[f32], what: &str) {
    let gpu = gpu();
    let n = x.len();
    let gx = upload(&gpu, &[n], x);
    let mut gy = poisoned(&gpu, &[n]);
    kernels::act_forward(&gpu, act, &gx, &mut gy).unwrap();
    let y = gy.download(&gpu).unwrap();
    let expected: Vec<f64> = x.iter().map(|&v| reference::activate(act, v as f64)).collect();
    let tol = Tolerance { rel: 2e-5, abs: 2e-6 };
    assert_close(&format!("{act:?} forward {what}"), &y, &expected, tol);

    let dy = rand_vec(77, n);
    let gdy = upload(&gpu, &[n], &dy);
    let expected: Vec<f64> = x.iter().zip(&dy).map(|(&v, &g)| g as f64 * reference::activate_grad(act, v as f64)).collect();
    let mut gdx = poisoned(&gpu, &[n]);
    kernels::act_backward(&gpu, act, &gdy, &gx, &mut gdx, false).unwrap();
    assert_close(&format!("{act:?} backward from input {what}"), &gdx.download(&gpu).unwrap(), &expected, tol);
    if act.grad_from_output() {
        let mut gdx = poisoned(&gpu, &[n]);
        kernels::act_backward(&gpu, act, &gdy, &gy, &mut gdx, true).unwrap();
        // f'(z) recomputed from a = f(z) in f32: sigmoid/tanh lose relative precision where f' is tiny
        assert_close(
            &format!("{act:?} backward from output {what}"),
            &gdx.download(&gpu).unwrap(),
            &expected,
            Tolerance { rel: 1e-4, abs: 1e-5 },
        );
    } else {
        let mut gdx = poisoned(&gpu, &[n]);
        assert!(kernels::act_backward(&gpu, act, &gdy, &gy, &mut gdx, true).is_err(), "{act:?} cannot be differentiated from its output");
    }
}

#[test]
fn every_activation_at_odd_sizes() {
    for act in ACTS {
        for (i, &n) in ODD_SIZES.iter().enumerate() {
            // ±8 reaches both kinks of ReLU6 (0, 6) and of Hardswish/Hardsigmoid (±3)
            check_activation(act, &rand_range(10 + i as u64, n, -8.0, 8.0), &format!("n={n}"));
        }
    }
}

/// The kinks and their neighbours, exactly representable in f32: the derivatives there are
/// PyTorch's (ReLU6 0 at 0 and 6; Hardswish 0 at −3 and 1 at 3; Hardsigmoid 0 at ±3).
#[test]
fn activations_at_their_kinks_follow_pytorch() {
    let x: Vec<f32> = vec![-6.5, -6.0, -3.5, -3.0, -2.5, -0.5, 0.0, 0.5, 2.5, 3.0, 3.5, 5.5, 6.0, 6.5];
    for act in ACTS {
        check_activation(act, &x, "at the kinks");
    }
    let gpu = gpu();
    let n = x.len();
    let gx = upload(&gpu, &[n], &x);
    let ones = upload(&gpu, &[n], &vec![1.0; n]);
    let slope = |act: Activation| {
        let mut gdx = poisoned(&gpu, &[n]);
        kernels::act_backward(&gpu, act, &ones, &gx, &mut gdx, false).unwrap();
        gdx.download(&gpu).unwrap()
    };
    let at = |v: f32| x.iter().position(|&u| u == v).unwrap();
    let relu6 = slope(Activation::Relu6);
    assert_eq!([relu6[at(0.0)], relu6[at(0.5)], relu6[at(5.5)], relu6[at(6.0)]], [0.0, 1.0, 1.0, 0.0]);
    let hswish = slope(Activation::Hardswish);
    assert_eq!([hswish[at(-3.5)], hswish[at(-3.0)], hswish[at(0.0)], hswish[at(3.0)]], [0.0, 0.0, 0.5, 1.0]);
    let hsig = slope(Activation::Hardsigmoid);
    assert_eq!([hsig[at(-3.0)], hsig[at(-2.5)], hsig[at(2.5)], hsig[at(3.0)]], [0.0, 1.0 / 6.0, 1.0 / 6.0, 0.0]);
}

/// The two non-monotonic new activations are refused from their output, by the launcher.
#[test]
fn silu_and_hardswish_need_the_pre_activation() {
    let gpu = gpu();
    let t = upload(&gpu, &[3], &[1.0, 2.0, 3.0]);
    for act in [Activation::Silu, Activation::Hardswish, Activation::Gelu] {
        assert!(!act.grad_from_output(), "{act:?}");
        let mut dx = poisoned(&gpu, &[3]);
        let err = kernels::act_backward(&gpu, act, &t, &t, &mut dx, true).unwrap_err();
        assert!(err.to_string().contains(&act.name()), "{err}");
    }
    for act in [Activation::Relu6, Activation::Hardsigmoid] {
        assert!(act.grad_from_output(), "{act:?}");
    }
}

#[test]
fn activations_stay_finite_at_large_inputs() {
    let x: Vec<f32> = vec![-1e4, -100.0, -50.0, -20.0, -1e-4, 0.0, 1e-4, 20.0, 50.0, 100.0, 1e4];
    for act in ACTS {
        check_activation(act, &x, "at large |x|");
    }
}

#[test]
fn add_act_add_assign_and_copy_at_odd_sizes() {
    let gpu = gpu();
    for (i, &n) in ODD_SIZES.iter().enumerate() {
        let (a, b) = (rand_range(200 + i as u64, n, -3.0, 3.0), rand_range(300 + i as u64, n, -3.0, 3.0));
        let (ga, gb) = (upload(&gpu, &[n], &a), upload(&gpu, &[n], &b));
        for act in ACTS {
            let mut gy = poisoned(&gpu, &[n]);
            kernels::add_act(&gpu, act, &ga, &gb, &mut gy).unwrap();
            let expected: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| reference::activate(act, x as f64 + y as f64)).collect();
            assert_close(&format!("add_act {act:?} n={n}"), &gy.download(&gpu).unwrap(), &expected, Tolerance { rel: 2e-5, abs: 2e-6 });
        }
        let mut gy = upload(&gpu, &[n], &b);
        kernels::add_assign(&gpu, &ga, &mut gy).unwrap();
        let expected: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| x as f64 + y as f64).collect();
        assert_close(&format!("add_assign n={n}"), &gy.download(&gpu).unwrap(), &expected, Tolerance::STRICT);
        let mut gy = poisoned(&gpu, &[n]);
        kernels::copy(&gpu, &ga, &mut gy).unwrap();
        assert_eq!(gy.download(&gpu).unwrap(), a, "copy n={n}");
    }
    // mismatched lengths and shared buffers are refused before wgpu sees them
    let (x, mut y) = (upload(&gpu, &[3], &[1.0; 3]), upload(&gpu, &[4], &[1.0; 4]));
    assert!(kernels::add_assign(&gpu, &x, &mut y).is_err());
    let mut same = x.clone();
    assert!(kernels::copy(&gpu, &x, &mut same).is_err());
}

/// The new activations and their gradients equal what PyTorch itself computes (torch 2.15,
/// float64 autograd, written by `scripts/torch_ops_fixture.py`), the kinks included: the GPU
/// (from the input, and from the output where that is allowed) and the float64 reference.
#[test]
fn new_activations_equal_pytorch() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_ops.safetensors");
    let torch = headswap::checkpoint::load(&path).unwrap();
    let get = |name: &str| torch.get(name).unwrap_or_else(|| panic!("{name} missing from the fixture")).data.clone();
    let x = get("act.x");
    let n = x.len();
    let gpu = gpu();
    let gx = upload(&gpu, &[n], &x);
    let ones = upload(&gpu, &[n], &vec![1.0; n]);
    for act in [Activation::Relu6, Activation::Silu, Activation::Hardswish, Activation::Hardsigmoid] {
        let (y, grad) = (to_f64(&get(&format!("act.{}.y", act.name()))), to_f64(&get(&format!("act.{}.grad", act.name()))));
        let reference_y: Vec<f32> = x.iter().map(|&v| reference::activate(act, v as f64) as f32).collect();
        let reference_g: Vec<f32> = x.iter().map(|&v| reference::activate_grad(act, v as f64) as f32).collect();
        assert_close(&format!("{act:?} reference vs torch"), &reference_y, &y, Tolerance { rel: 1e-6, abs: 1e-7 });
        assert_close(&format!("{act:?}' reference vs torch"), &reference_g, &grad, Tolerance { rel: 1e-6, abs: 1e-7 });
        let mut gy = poisoned(&gpu, &[n]);
        kernels::act_forward(&gpu, act, &gx, &mut gy).unwrap();
        assert_close(&format!("{act:?} GPU vs torch"), &gy.download(&gpu).unwrap(), &y, Tolerance { rel: 2e-5, abs: 2e-6 });
        let mut gdx = poisoned(&gpu, &[n]);
        kernels::act_backward(&gpu, act, &ones, &gx, &mut gdx, false).unwrap();
        assert_close(&format!("{act:?}' GPU vs torch"), &gdx.download(&gpu).unwrap(), &grad, Tolerance { rel: 2e-5, abs: 2e-6 });
        if act.grad_from_output() {
            let mut gdx = poisoned(&gpu, &[n]);
            kernels::act_backward(&gpu, act, &ones, &gy, &mut gdx, true).unwrap();
            assert_close(&format!("{act:?}' from output GPU vs torch"), &gdx.download(&gpu).unwrap(), &grad, Tolerance::STRICT);
        }
    }
}
