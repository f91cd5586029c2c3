//! Data loaders refuse input they would otherwise misread: a manifest without a header or with
//! a repeated label name, and synthetic data sets too large to build in memory; a one-class image
//! folder loads (to evaluate on) but trains no classifier.
mod common;
use common::TempDir;
use std::path::{Path, PathBuf};

use headswap::Error;
use headswap::data::{ImageOptions, digits, image_folder, manifest, synthetic};

fn write_png(path: &Path, level: u8) {
    image::GrayImage::from_pixel(4, 4, image::Luma([level])).save(path).unwrap();
}

/// A folder with a.png and b.png and a manifest holding `csv`.
fn manifest_dir(csv: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new("manifest");
    write_png(&t.path().join("a.png"), 10);
    write_png(&t.path().join("b.png"), 200);
    let p = t.path().join("labels.csv");
    std::fs::write(&p, csv).unwrap();
    (t, p)
}

#[test]
fn manifest_with_a_repeated_label_name_is_refused() {
    let (_t, p) = manifest_dir("path,a,a\na.png,1,0\nb.png,0,1\n");
    let err = manifest::load(&p, &ImageOptions::gray(4, 4)).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let m = err.to_string();
    assert!(m.contains("\"a\"") && m.contains("twice"), "{m}");
}

#[test]
fn manifest_without_a_header_is_refused() {
    let (_t, p) = manifest_dir("a.png,1,0\nb.png,0,1\n");
    let err = manifest::load(&p, &ImageOptions::gray(4, 4)).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    let m = err.to_string();
    assert!(m.contains("the first line must be a header: path,name_1,..."), "{m}");
}

#[test]
fn manifest_with_a_header_still_loads() {
    let (_t, p) = manifest_dir("path,cat,dog\na.png,1,0\nb.png,0,\n");
    let ds = manifest::load(&p, &ImageOptions::gray(4, 4)).unwrap();
    assert_eq!(ds.n, 2);
    assert_eq!(ds.label_names, vec!["cat", "dog"]);
}

#[test]
fn image_folder_with_one_class_loads_for_evaluation_but_trains_no_classifier() {
    let t = TempDir::new("one-class");
    std::fs::create_dir(t.path().join("only")).unwrap();
    write_png(&t.path().join("only/1.png"), 10);
    write_png(&t.path().join("only/2.png"), 20);
    // a model's class, scored by name: a data set of its own
    let one = image_folder::load(t.path(), &ImageOptions::gray(4, 4)).unwrap();
    assert_eq!((one.num_outputs(), one.n), (1, 2));
    // but a classifier over it would be a one-output softmax, which learns nothing
    let gpu = common::gpu();
    let err = headswap::nn::Network::new(&gpu, &[16, 4], headswap::nn::Head::classes(1), 1).unwrap_err();
    assert!(err.to_string().contains("at least two classes"), "{err}");
}

#[test]
fn synthetic_data_too_large_to_build_is_an_error_not_an_abort() {
    // 10^8 images of 16×16 f32 are 102.4 GB
    for r in [synthetic::try_shapes_task_a(100_000_000, 16, 0), synthetic::try_scenes_task_b(100_000_000, 16, 0)] {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(err.to_string().contains("102400000000 bytes"), "{err}");
    }
    assert!(synthetic::try_shapes_task_a(usize::MAX, 256, 0).is_err(), "an overflowing size is refused too");
    // ordinary sizes are unchanged
    assert_eq!(synthetic::try_shapes_task_a(64, 16, 3).unwrap(), synthetic::shapes_task_a(64, 16, 3));
    assert_eq!(synthetic::try_scenes_task_b(64, 16, 3).unwrap(), synthetic::scenes_task_b(64, 16, 3));
}

#[test]
fn digit_scenes_too_large_to_build_are_an_error() {
    // a tiny stand-in for the digits: 10 classes of 8×8
    let d = headswap::data::Dataset {
        x: vec![0.5; 10 * 64],
        n: 10,
        d: 64,
        input_shape: vec![1, 8, 8],
        targets: headswap::data::Targets::Classes { y: (0..10).collect(), num_classes: 10 },
        label_names: (0..10).map(|i| i.to_string()).collect(),
    };
    let err = digits::scenes(&d, 100_000_000, [0, 1, 2, 3], 1).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_eq!(digits::scenes(&d, 8, [0, 1, 2, 3], 1).unwrap().n, 8);
}
