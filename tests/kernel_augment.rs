//! GPU data augmentation (`kernels::augment`) against its reference (`reference::augment`):
//! torchvision's RandomResizedCrop + RandomHorizontalFlip at odd sizes, outputs poisoned first;
//! the flip alone is an exact mirror, nothing drawn is the identity; the crops' areas and aspect
//! ratios stay in their ranges and half the images flip; reruns are bit-identical and another
//! step or position draws anew; bad settings are typed errors.
mod common;
use common::*;
use headswap::kernels::augment::{Augment, augment_dispatch};
use headswap::reference::augment as ra;

fn run(a: &Augment, seed: u64, step: u32, offset: u32, chw: [usize; 3], x: &[f32]) -> Vec<f32> {
    let gpu = gpu();
    let gx = upload(&gpu, &[x.len()], x);
    let gy = poisoned(&gpu, &[x.len()]);
    let launch = augment_dispatch(&gpu, a, seed, chw, &gx, &gy).unwrap();
    launch.set(&gpu, offset, step);
    gpu.run("augment", &[launch.dispatch()]).unwrap();
    gy.download(&gpu).unwrap()
}

#[test]
fn random_resized_crop_and_flip_equal_the_reference_at_odd_sizes() {
    let a = Augment::torchvision();
    for (k, &(rows, c, h, w)) in [(1usize, 1usize, 7usize, 5usize), (7, 3, 13, 11), (3, 2, 33, 17), (2, 3, 1, 9)].iter().enumerate() {
        let x = rand_vec(500 + k as u64, rows * c * h * w);
        for (step, offset) in [(1u32, 0u32), (7, 33), (127, 1)] {
            let got = run(&a, 42, step, offset, [c, h, w], &x);
            let want = ra::augment(&a, 42, step, offset, c, h, w, &to_f64(&x));
            assert_close(&format!("{rows}×{c}×{h}×{w}, step {step}, offset {offset}"), &got, &want, Tolerance::F32);
        }
    }
}

#[test]
fn the_flip_alone_mirrors_and_nothing_drawn_is_the_identity() {
    let (c, h, w) = (2, 3, 7);
    let x = rand_vec(9, 4 * c * h * w);
    let mirror = run(&Augment { crop: None, flip: 1.0 }, 1, 3, 0, [c, h, w], &x);
    let want: Vec<f32> = x.chunks(w).flat_map(|row| row.iter().rev().copied().collect::<Vec<_>>()).collect();
    assert_eq!(mirror, want);
    assert_eq!(run(&Augment { crop: None, flip: 0.0 }, 1, 3, 0, [c, h, w], &x), x);
}

#[test]
fn crops_stay_in_their_ranges_and_half_the_images_flip() {
    let a = Augment::torchvision();
    let (h, w) = (64, 48);
    let (mut flips, mut tries) = (0, 0);
    for q in 0..4000u32 {
        let (top, left, ch, cw) = ra::crop_box(&a, 5, 9, q, h, w);
        assert!(top + ch <= h && left + cw <= w && ch > 0 && cw > 0, "crop {q} leaves the image");
        let area = (ch * cw) as f64 / (h * w) as f64;
        let ratio = cw as f64 / ch as f64;
        // rounding the sides moves the area and ratio a little past the ranges' ends
        assert!((0.06..=1.0).contains(&area), "area {area}");
        assert!((0.6..=1.5).contains(&ratio), "ratio {ratio}");
        flips += ra::flipped(&a, 5, 9, q) as usize;
        tries += 1;
    }
    assert!((1850..=2150).contains(&flips), "{flips} of {tries} flipped");
}

#[test]
fn reruns_are_bit_identical_and_another_step_or_position_draws_anew() {
    let a = Augment::torchvision();
    let x = rand_vec(3, 5 * 3 * 16 * 16);
    let first = run(&a, 8, 2, 0, [3, 16, 16], &x);
    assert_eq!(first, run(&a, 8, 2, 0, [3, 16, 16], &x));
    assert_ne!(first, run(&a, 8, 3, 0, [3, 16, 16], &x));
    assert_ne!(first, run(&a, 8, 2, 5, [3, 16, 16], &x));
    assert_ne!(first, run(&a, 9, 2, 0, [3, 16, 16], &x));
}

#[test]
fn bad_settings_are_typed_errors() {
    let gpu = gpu();
    let x = upload(&gpu, &[2 * 12], &[0.0; 24]);
    let y = poisoned(&gpu, &[24]);
    for bad in [
        Augment { crop: Some(((0.0, 1.0), (0.75, 1.33))), flip: 0.5 },
        Augment { crop: Some(((0.5, 0.2), (0.75, 1.33))), flip: 0.5 },
        Augment { crop: Some(((0.08, 1.0), (2.0, 1.0))), flip: 0.5 },
        Augment { crop: None, flip: 1.5 },
    ] {
        assert!(augment_dispatch(&gpu, &bad, 0, [3, 2, 2], &x, &y).is_err(), "{bad:?}");
    }
    let err = augment_dispatch(&gpu, &Augment::torchvision(), 0, [5, 2, 2], &x, &y).unwrap_err().to_string();
    assert!(err.contains("5×2×2"), "{err}");
}

/// Given the crop and the flip torchvision drew, the reference's output is torchvision's
/// (`scripts/augment_fixture.py`: `F.resized_crop` bilinear, then `F.hflip`).
#[test]
fn the_resize_and_flip_are_torchvisions() {
    let f =
        headswap::checkpoint::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/augment.safetensors")).unwrap();
    let img = to_f64(&f.get("image").unwrap().data);
    let mut cases = 0;
    while let Some(b) = f.get(&format!("box.{cases}")) {
        let b: Vec<usize> = b.data.iter().map(|&v| v as usize).collect();
        let got = ra::resized_crop_flip(&img, 3, 13, 11, (b[0], b[1], b[2], b[3]), b[4] == 1);
        let want = to_f64(&f.get(&format!("out.{cases}")).unwrap().data);
        let got32: Vec<f32> = got.iter().map(|&v| v as f32).collect();
        assert_close(&format!("box {b:?}"), &got32, &want, Tolerance::F32);
        cases += 1;
    }
    assert_eq!(cases, 6);
}
