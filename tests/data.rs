//! Tests of the CPU data module: synthetic generators, loaders (image folders, CSV manifests,
//! safetensors files, the real digits) and the Dataset operations. No GPU needed.

use std::collections::HashMap;
mod common;
use common::TempDir;
use std::path::Path;

use headswap::Error;
use headswap::data::synthetic::{self, Shape};
use headswap::data::{
    Channels, Dataset, ImageOptions, LoadReport, SkipReason, Targets, digits, image_folder, manifest, preview, tensor_file,
};

fn classes(ds: &Dataset) -> &[u32] {
    match &ds.targets {
        Targets::Classes { y, .. } => y,
        _ => panic!("expected class targets"),
    }
}

fn labels(ds: &Dataset) -> (&[f32], usize) {
    match &ds.targets {
        Targets::Labels { y, k } => (y, *k),
        _ => panic!("expected multi-label targets"),
    }
}

fn msg(e: Error) -> String {
    e.to_string()
}

// ---------------------------------------------------------------- synthetic

#[test]
fn synthetic_is_deterministic_per_seed() {
    let a1 = synthetic::shapes_task_a(500, 16, 11);
    let a2 = synthetic::shapes_task_a(500, 16, 11);
    let a3 = synthetic::shapes_task_a(500, 16, 12);
    assert_eq!(a1, a2);
    assert_ne!(a1.x, a3.x);
    let b1 = synthetic::scenes_task_b(500, 16, 11);
    let b2 = synthetic::scenes_task_b(500, 16, 11);
    let b3 = synthetic::scenes_task_b(500, 16, 12);
    assert_eq!(b1, b2);
    assert_ne!(b1.x, b3.x);
    assert_ne!(labels(&b1).0, labels(&b3).0);
    // Task A and task B differ even with the same seed.
    assert_ne!(a1.x, b1.x);
    // Other sizes work too, and tiny sizes are raised to MIN_SIZE.
    let big = synthetic::shapes_task_a(10, 32, 1);
    big.validate().unwrap();
    assert_eq!(big.input_shape, vec![1, 32, 32]);
    assert_eq!(synthetic::shapes_task_a(3, 2, 1).input_shape, vec![1, synthetic::MIN_SIZE, synthetic::MIN_SIZE]);
    assert!(synthetic::shapes_task_a(0, 16, 1).validate().is_err());
}

#[test]
fn synthetic_shapes_and_balance() {
    let a = synthetic::shapes_task_a(8000, 16, 1);
    a.validate().unwrap();
    assert_eq!(a.input_shape, vec![1, 16, 16]);
    assert_eq!(a.label_names, Shape::ALL.iter().map(|s| s.name()).collect::<Vec<_>>());
    assert_eq!(a.positives_per_output(), vec![1000; 8]);
    assert!(a.x.iter().all(|v| (0.0..=1.0).contains(v)));
    // The object is clearly brighter than the background: per-image max well above its median.
    for i in 0..100 {
        let mut r = a.row(i).unwrap().to_vec();
        r.sort_by(f32::total_cmp);
        assert!(r[255] - r[128] > 0.3 || r[255] - r[40] > 0.3, "image {i} has no visible object");
    }
    // Class means differ (the task is learnable): mean images of classes are pairwise apart.
    let y = classes(&a);
    let mut means = vec![vec![0f64; 256]; 8];
    for (i, &c) in y.iter().enumerate() {
        for (m, &v) in means[c as usize].iter_mut().zip(a.row(i).unwrap()) {
            *m += v as f64 / 1000.0;
        }
    }
    for i in 0..8 {
        for j in 0..i {
            let dist: f64 = means[i].iter().zip(&means[j]).map(|(p, q)| (p - q).powi(2)).sum::<f64>().sqrt();
            assert!(dist > 0.2, "mean images of {} and {} too close: {dist}", a.label_names[i], a.label_names[j]);
        }
    }

    let b = synthetic::scenes_task_b(8000, 16, 1);
    b.validate().unwrap();
    assert_eq!(b.input_shape, a.input_shape);
    assert_eq!(b.label_names, vec!["circle", "square", "triangle", "cross"]);
    let (y, k) = labels(&b);
    assert_eq!(k, 4);
    assert!(y.iter().all(|&v| v == 0.0 || v == 1.0));
    for (j, &p) in b.positives_per_output().iter().enumerate() {
        let rate = p as f64 / 8000.0;
        assert!((0.33..0.43).contains(&rate), "label {j} positive in {rate} of scenes");
    }
    let none = y.chunks(4).filter(|r| r.iter().all(|&v| v == 0.0)).count() as f64 / 8000.0;
    assert!((0.08..0.2).contains(&none), "{none} of scenes without a target");
    assert!(y.chunks(4).all(|r| r.iter().sum::<f32>() <= 3.0));
}

#[test]
fn synthetic_generation_is_fast() {
    let t = std::time::Instant::now();
    let a = synthetic::shapes_task_a(20_000, 16, 5);
    let b = synthetic::scenes_task_b(20_000, 16, 5);
    let secs = t.elapsed().as_secs_f64();
    println!("generated 2 × 20,000 16×16 images in {secs:.3} s");
    assert_eq!(a.n + b.n, 40_000);
    // Generous: debug builds of this crate are unoptimised; release takes a few tens of ms.
    assert!(secs < 20.0);
}

// ---------------------------------------------------------------- Dataset

fn tiny_classes() -> Dataset {
    Dataset {
        x: vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.1],
        n: 3,
        d: 2,
        input_shape: vec![2],
        targets: Targets::Classes { y: vec![0, 1, 1], num_classes: 2 },
        label_names: vec!["a".into(), "b".into()],
    }
}

fn tiny_labels() -> Dataset {
    Dataset {
        x: vec![0.0, 0.5, 1.0, 0.25],
        n: 2,
        d: 2,
        input_shape: vec![1, 1, 2],
        targets: Targets::Labels { y: vec![1.0, f32::NAN, 0.0, 1.0], k: 2 },
        label_names: vec!["p".into(), "q".into()],
    }
}

#[test]
fn validate_catches_each_bad_case() {
    tiny_classes().validate().unwrap();
    tiny_labels().validate().unwrap();
    let bad = |f: &dyn Fn(&mut Dataset), base: Dataset, needle: &str| {
        let mut ds = base;
        f(&mut ds);
        let e = ds.validate().expect_err(needle);
        let m = msg(e);
        assert!(m.contains(needle), "{m:?} does not mention {needle:?}");
    };
    bad(&|d| d.n = 0, tiny_classes(), "empty");
    bad(&|d| d.d = 0, tiny_classes(), "d = 0");
    bad(&|d| d.x.truncate(5), tiny_classes(), "x has 5 values");
    bad(&|d| d.input_shape = vec![3], tiny_classes(), "input_shape");
    bad(&|d| d.input_shape = vec![], tiny_classes(), "input_shape");
    bad(&|d| d.targets = Targets::Classes { y: vec![0, 1, 2], num_classes: 2 }, tiny_classes(), "row 2: class 2");
    bad(&|d| d.targets = Targets::Classes { y: vec![0, 1], num_classes: 2 }, tiny_classes(), "2 class targets");
    bad(&|d| d.targets = Targets::Classes { y: vec![0, 0, 0], num_classes: 0 }, tiny_classes(), "num_classes is 0");
    bad(&|d| d.label_names.truncate(1), tiny_classes(), "1 label names");
    bad(&|d| d.x[3] = f32::NAN, tiny_classes(), "row 1, feature 1");
    bad(&|d| d.x[4] = f32::INFINITY, tiny_classes(), "row 2, feature 0");
    bad(&|d| d.targets = Targets::Labels { y: vec![1.0, 2.0, 0.0, 1.0], k: 2 }, tiny_labels(), "row 0, label 1 (q)");
    bad(&|d| d.targets = Targets::Labels { y: vec![1.0, 0.0, -0.5, 1.0], k: 2 }, tiny_labels(), "row 1, label 0 (p)");
    bad(&|d| d.targets = Targets::Labels { y: vec![1.0, 0.0, f32::INFINITY, 1.0], k: 2 }, tiny_labels(), "row 1, label 0");
    bad(&|d| d.targets = Targets::Labels { y: vec![1.0, 0.0, 1.0], k: 2 }, tiny_labels(), "3 label values");
    bad(&|d| d.targets = Targets::Labels { y: vec![], k: 0 }, tiny_labels(), "k = 0");
    // Typed variants: a length problem is a Shape error, a value problem InvalidInput.
    let mut ds = tiny_classes();
    ds.x.push(0.0);
    assert!(matches!(ds.validate(), Err(Error::Shape { .. })));
    let mut ds = tiny_classes();
    ds.x[0] = f32::NAN;
    assert!(matches!(ds.validate(), Err(Error::InvalidInput(_))));
}

#[test]
fn split_subset_take_shuffled() {
    let a = synthetic::shapes_task_a(1000, 16, 2);
    let (tr, va) = a.split(0.2, 7);
    assert_eq!((tr.n, va.n), (800, 200));
    tr.validate().unwrap();
    va.validate().unwrap();
    assert_eq!(a.split(0.2, 7), (tr.clone(), va.clone()));
    assert_ne!(a.split(0.2, 8).1.x, va.x);
    // Every row lands in exactly one part, with its own target.
    let key = |r: &[f32]| r.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut orig: HashMap<Vec<u32>, u32> = HashMap::new();
    for i in 0..a.n {
        orig.insert(key(a.row(i).unwrap()), classes(&a)[i]);
    }
    let mut seen = 0;
    for part in [&tr, &va] {
        for i in 0..part.n {
            assert_eq!(orig.get(&key(part.row(i).unwrap())), Some(&classes(part)[i]));
            seen += 1;
        }
    }
    assert_eq!(seen, 1000);
    let s = a.subset(&[5, 5, 0]).unwrap();
    assert_eq!(s.n, 3);
    assert_eq!(s.row(0), a.row(5));
    assert_eq!(s.row(2), a.row(0));
    assert!(matches!(a.subset(&[1000]), Err(Error::InvalidInput(_))));
    assert_eq!(a.take(10).x, a.x[..2560].to_vec());
    assert_eq!(a.take(5000).n, 1000);
    let sh = a.shuffled(3);
    assert_eq!(sh, a.shuffled(3));
    assert_ne!(sh.x, a.x);
    assert_eq!(sh.positives_per_output(), a.positives_per_output());
    // Multi-label rows move with their labels, NaN included.
    let l = tiny_labels();
    let r = l.subset(&[1, 0]).unwrap();
    assert_eq!(labels(&r).0[..2], [0.0, 1.0]);
    assert!(labels(&r).0[3].is_nan());
}

// ---------------------------------------------------------------- image folders

fn write_gray_png(path: &Path, w: u32, h: u32, v: u8) {
    image::GrayImage::from_pixel(w, h, image::Luma([v])).save(path).unwrap();
}

fn write_rgb_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
}

#[test]
fn image_folder_round_trip() {
    let t = TempDir::new("folder");
    let root = t.path();
    for c in ["zebra", "ant"] {
        std::fs::create_dir(root.join(c)).unwrap();
    }
    write_gray_png(&root.join("ant/b.png"), 8, 8, 255);
    write_gray_png(&root.join("ant/a.PNG"), 20, 10, 51);
    write_rgb_png(&root.join("zebra/x.png"), 4, 4, [255, 0, 0]);
    image::RgbImage::from_pixel(16, 16, image::Rgb([0, 0, 255])).save(root.join("zebra/y.jpg")).unwrap();
    std::fs::write(root.join("zebra/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join("stray.png"), "ignored: not in a class folder").unwrap();

    let ds = image_folder::load(root, &ImageOptions::gray(8, 8)).unwrap();
    assert_eq!(ds.label_names, vec!["ant", "zebra"]);
    assert_eq!(ds.n, 4);
    assert_eq!(ds.input_shape, vec![1, 8, 8]);
    assert_eq!(classes(&ds), &[0, 0, 1, 1]);
    // Sorted within a class: a.PNG (51/255) before b.png (255/255).
    assert!(ds.row(0).unwrap().iter().all(|&v| (v - 0.2).abs() < 1e-3), "{:?}", ds.row(0));
    assert!(ds.row(1).unwrap().iter().all(|&v| (v - 1.0).abs() < 1e-3));
    // Red and blue in gray: Rec. 709-ish luma weights, both well below 1.
    assert!(ds.row(2).unwrap().iter().all(|&v| v > 0.1 && v < 0.4), "{:?}", ds.row(2));

    let rgb = ImageOptions { size: (6, 4), channels: Channels::Rgb, normalize: Some((vec![0.5], vec![0.5])), ..ImageOptions::default() };
    let ds = image_folder::load(root, &rgb).unwrap();
    assert_eq!(ds.input_shape, vec![3, 4, 6]);
    assert_eq!(ds.d, 72);
    let red = ds.row(2).unwrap();
    // CHW: the R plane (24 values) is 1 → (1-0.5)/0.5 = 1, the G and B planes 0 → -1.
    assert!(red[..24].iter().all(|&v| (v - 1.0).abs() < 1e-3));
    assert!(red[24..].iter().all(|&v| (v + 1.0).abs() < 1e-3));
    let blue = ds.row(3).unwrap(); // JPEG: lossy, so approximately
    assert!(blue[48..].iter().all(|&v| v > 0.8), "{:?}", &blue[48..]);
    assert!(blue[..24].iter().all(|&v| v < -0.8));

    // load_image gives the same vector as the folder loader.
    let one = image_folder::load_image(&root.join("zebra/x.png"), &rgb).unwrap();
    assert_eq!(one, red);

    // Bad options are errors, not panics.
    let mut bad = rgb.clone();
    bad.normalize = Some((vec![0.5, 0.5], vec![0.5]));
    assert!(matches!(image_folder::load(root, &bad), Err(Error::InvalidInput(_))));
    bad.normalize = Some((vec![0.5], vec![0.0]));
    assert!(image_folder::load(root, &bad).is_err());
    assert!(image_folder::load(root, &ImageOptions::gray(0, 8)).is_err());
}

#[test]
fn image_folder_errors_name_the_problem() {
    let t = TempDir::new("folder-err");
    let root = t.path();
    // No class folders.
    let m = msg(image_folder::load(root, &ImageOptions::default()).unwrap_err());
    assert!(m.contains("no class sub-folders"), "{m}");
    // Missing root.
    assert!(matches!(image_folder::load(&root.join("nope"), &ImageOptions::default()), Err(Error::Io { .. })));
    // An empty class folder.
    std::fs::create_dir(root.join("cats")).unwrap();
    std::fs::create_dir(root.join("dogs")).unwrap();
    write_gray_png(&root.join("cats/1.png"), 4, 4, 10);
    let m = msg(image_folder::load(root, &ImageOptions::default()).unwrap_err());
    assert!(m.contains("dogs") && m.contains("no .png"), "{m}");
    // A corrupt PNG: the error names the file.
    std::fs::write(root.join("dogs/broken.png"), b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let e = image_folder::load(root, &ImageOptions::default()).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let m = msg(e);
    assert!(m.contains("broken.png"), "{m}");
    let m = msg(image_folder::load_image(&root.join("dogs/broken.png"), &ImageOptions::default()).unwrap_err());
    assert!(m.contains("broken.png"), "{m}");
    // A truncated PNG too.
    let mut good = Vec::new();
    image::GrayImage::from_pixel(32, 32, image::Luma([7])).write_to(&mut std::io::Cursor::new(&mut good), image::ImageFormat::Png).unwrap();
    std::fs::write(root.join("dogs/broken.png"), &good[..good.len() / 2]).unwrap();
    let m = msg(image_folder::load(root, &ImageOptions::default()).unwrap_err());
    assert!(m.contains("broken.png"), "{m}");
    // A missing file for load_image is an Io error naming it.
    let e = image_folder::load_image(&root.join("dogs/none.png"), &ImageOptions::default()).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if path.contains("none.png")), "{e:?}");
}

/// The gray level of each 1×1 image, in the order loaded (each test image has its own level).
fn levels(ds: &Dataset) -> Vec<u8> {
    ds.x.iter().map(|v| (v * 255.0).round() as u8).collect()
}

/// Class folders are walked into their sub-folders, as torchvision's `ImageFolder` does, in its
/// order (folders by path text, files by name); what is passed over is reported with why.
#[test]
fn image_folder_walks_sub_folders_and_reports_what_it_skipped() {
    let t = TempDir::new("folder-walk");
    let root = t.path();
    for d in ["cat/sub/deeper", "cat/sub-x", "cat/.hidden", "dog/only/deep", ".git"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (file, v) in [
        ("cat/b.png", 10),
        ("cat/a.png", 20),
        ("cat/sub/c.png", 30),
        ("cat/sub/deeper/d.png", 40),
        ("cat/sub-x/e.PNG", 50),
        ("cat/.hidden/f.png", 1),
        ("dog/only/deep/h.png", 60),
        (".git/i.png", 2),
    ] {
        write_gray_png(&root.join(file), 1, 1, v);
    }
    std::fs::write(root.join("cat/.DS_Store"), "x").unwrap();
    std::fs::write(root.join("cat/sub/notes.txt"), "x").unwrap();
    std::fs::write(root.join("cat/sub/g.bmp"), "x").unwrap();
    std::fs::write(root.join("readme.txt"), "x").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(root.join("cat"), root.join("cat/sub/loop")).unwrap();

    let (ds, report) = image_folder::load_with_report(root, &ImageOptions::gray(1, 1)).unwrap();
    assert_eq!(ds.label_names, vec!["cat", "dog"]);
    assert_eq!(classes(&ds), &[0, 0, 0, 0, 0, 1]);
    // "cat/sub-x" sorts before "cat/sub/deeper" as text ('-' < '/'), as in torchvision.
    assert_eq!(levels(&ds), vec![20, 10, 30, 50, 40, 60]);
    assert_eq!(image_folder::load(root, &ImageOptions::gray(1, 1)).unwrap(), ds);

    assert_eq!(report.examples, 6);
    assert!(!report.multi_label);
    let counts: Vec<(&str, usize)> = report.outputs.iter().map(|o| (o.name.as_str(), o.count)).collect();
    assert_eq!(counts, vec![("cat", 5), ("dog", 1)]);
    let skipped: Vec<(String, SkipReason)> =
        report.skipped.iter().map(|s| (s.path.strip_prefix(root).unwrap().display().to_string(), s.reason)).collect();
    let mut want = vec![
        (".git".to_string(), SkipReason::Hidden),
        ("readme.txt".into(), SkipReason::NotInClassFolder),
        ("cat/.hidden".into(), SkipReason::Hidden),
        ("cat/.DS_Store".into(), SkipReason::Hidden),
        ("cat/sub/g.bmp".into(), SkipReason::UnsupportedImage),
        ("cat/sub/notes.txt".into(), SkipReason::NotAnImage),
    ];
    if cfg!(unix) {
        want.insert(3, ("cat/sub/loop".into(), SkipReason::LinkCycle));
    }
    assert_eq!(skipped, want);
    let line = report.to_string();
    assert!(line.starts_with("6 examples: cat 5, dog 1; skipped "), "{line}");
    assert!(line.contains("readme.txt (not in a class folder)") && line.contains(", and "), "{line}");
    assert!(!line.contains(&root.display().to_string()), "paths are shown relative to the root: {line}");

    // A class whose only files are passed over is an error that says what was passed over.
    std::fs::create_dir(root.join("emu")).unwrap();
    std::fs::write(root.join("emu/e.webp"), "x").unwrap();
    let m = msg(image_folder::load(root, &ImageOptions::gray(1, 1)).unwrap_err());
    assert!(m.contains("\"emu\"") && m.contains("sub-folders") && m.contains("e.webp (image type not decoded"), "{m}");
}

/// The order matches torchvision's `make_dataset` (its walk, re-run in Python), on names that
/// sort differently as paths and as text.
#[test]
fn image_folder_order_matches_torchvision_walk() {
    let t = TempDir::new("folder-order");
    let root = t.path();
    let files = ["c/z.png", "c/a.png", "c/b/x.png", "c/b-1/x.png", "c/b.2/x.png", "c/B/x.png", "c/b/a/x.png", "c/b0/x.png", "d/x.png"];
    for (i, f) in files.iter().enumerate() {
        let p = root.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_gray_png(&p, 1, 1, 10 + i as u8);
    }
    let ds = image_folder::load(root, &ImageOptions::gray(1, 1)).unwrap();
    let ours: Vec<&str> = levels(&ds).iter().map(|&v| files[(v - 10) as usize]).collect();
    // torchvision.datasets.folder.make_dataset, with its walk and extension rule.
    let script = [
        "import os, sys",
        "root = sys.argv[1]",
        "exts = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')",
        "for c in sorted(e.name for e in os.scandir(root) if e.is_dir()):",
        "    for r, _, names in sorted(os.walk(os.path.join(root, c), followlinks=True)):",
        "        for n in sorted(names):",
        "            if n.lower().endswith(exts):",
        "                print(os.path.relpath(os.path.join(r, n), root))",
    ]
    .join("\n");
    match std::process::Command::new("python3").args(["-c", &script]).arg(root).output() {
        Ok(out) => {
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let theirs: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
            assert_eq!(ours, theirs);
        }
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "skipped: image_folder_order_matches_torchvision_walk's Python check: python3: {e}");
        }
    }
    // Without Python, the order the rule gives (paths sorted as text, files by name).
    // ("c/b-1" and "c/b.2" before "c/b/a": '-' and '.' sort before '/').
    assert_eq!(
        ours,
        ["c/a.png", "c/z.png", "c/B/x.png", "c/b/x.png", "c/b-1/x.png", "c/b.2/x.png", "c/b/a/x.png", "c/b0/x.png", "d/x.png"]
    );
}

// ---------------------------------------------------------------- manifests

#[test]
fn manifest_round_trip() {
    let t = TempDir::new("manifest");
    let root = t.path();
    std::fs::create_dir(root.join("img")).unwrap();
    write_gray_png(&root.join("img/a.png"), 8, 8, 255);
    write_gray_png(&root.join("img/b, with comma.png"), 16, 16, 0);
    write_rgb_png(&root.join("img/c.png"), 8, 8, [255, 255, 255]);
    let csv = root.join("labels.csv");
    std::fs::write(
        &csv,
        "\u{feff}path,pedestrian,car,stop sign\r\nimg/a.png,1,0,\r\n\r\n\"img/b, with comma.png\", 0 ,1,1\r\nimg/c.png,,,\r\n",
    )
    .unwrap();
    let ds = manifest::load(&csv, &ImageOptions::gray(4, 4)).unwrap();
    assert_eq!(ds.n, 3);
    assert_eq!(ds.label_names, vec!["pedestrian", "car", "stop sign"]);
    assert_eq!(ds.input_shape, vec![1, 4, 4]);
    let (y, k) = labels(&ds);
    assert_eq!(k, 3);
    assert_eq!(&y[..2], &[1.0, 0.0]);
    assert!(y[2].is_nan());
    assert_eq!(&y[3..6], &[0.0, 1.0, 1.0]);
    assert!(y[6..].iter().all(|v| v.is_nan()));
    assert!(ds.row(0).unwrap().iter().all(|&v| (v - 1.0).abs() < 1e-4));
    assert!(ds.row(1).unwrap().iter().all(|&v| v.abs() < 1e-4));
    assert!(ds.row(2).unwrap().iter().all(|&v| (v - 1.0).abs() < 1e-3));
    let (_, mask) = ds.labels_and_mask().unwrap();
    assert_eq!(mask, vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);

    // What was read: per label the known positives and the unknowns; a manifest skips nothing.
    let (same, report) = manifest::load_with_report(&csv, &ImageOptions::gray(4, 4)).unwrap();
    assert_eq!(same.x, ds.x);
    assert!(report.multi_label && report.skipped.is_empty());
    let counts: Vec<(&str, usize, usize)> = report.outputs.iter().map(|o| (o.name.as_str(), o.count, o.unknown)).collect();
    assert_eq!(counts, vec![("pedestrian", 1, 1), ("car", 1, 1), ("stop sign", 1, 2)]);
    assert_eq!(report.to_string(), "3 examples; positives per label: pedestrian 1 (1 unknown), car 1 (1 unknown), stop sign 1 (2 unknown)");
}

/// A report for any data set: unnamed outputs are named by index, and long lists are cut.
#[test]
fn load_report_of_any_data_set() {
    let mut ds = synthetic::shapes_task_a(40, 8, 1);
    ds.label_names.clear();
    let r = LoadReport::of(&ds, Path::new("mem"));
    assert_eq!(r.outputs.len(), 8);
    assert_eq!(r.outputs.iter().map(|o| o.count).sum::<usize>(), 40);
    assert_eq!(r.outputs[3].name, "3");
    assert!(r.to_string().starts_with("40 examples: 0 "), "{r}");
    let many = Dataset {
        x: vec![0.0; 20],
        n: 20,
        d: 1,
        input_shape: vec![1],
        targets: Targets::Classes { y: (0..20).collect(), num_classes: 20 },
        label_names: Vec::new(),
    };
    let line = LoadReport::of(&many, Path::new("")).to_string();
    assert!(line.ends_with("10 1, 11 1, and 8 more classes"), "{line}");
}

#[test]
fn manifest_errors_name_line_and_column() {
    let t = TempDir::new("manifest-err");
    let root = t.path();
    write_gray_png(&root.join("a.png"), 8, 8, 100);
    std::fs::write(root.join("bad.png"), b"garbage").unwrap();
    let case = |text: &str, needles: &[&str]| {
        let csv = root.join("m.csv");
        std::fs::write(&csv, text).unwrap();
        let e = manifest::load(&csv, &ImageOptions::default()).unwrap_err();
        let m = msg(e);
        assert!(m.contains("m.csv"), "{m}");
        for n in needles {
            assert!(m.contains(n), "{m:?} does not mention {n:?}");
        }
    };
    case("path,x,y\na.png,1,0\na.png,1\n", &["line 3", "2 columns", "header has 3"]);
    case("path,x,y\na.png,1,0,1\n", &["line 2", "4 columns"]);
    case("path,x,y\na.png,1,0\na.png,yes,0\n", &["line 3, column 2", "\"x\"", "\"yes\""]);
    case("path,x,y\na.png,1,2\n", &["line 2, column 3", "\"y\"", "\"2\""]);
    case("path,x,y\nmissing.png,1,0\n", &["line 2, column 1", "missing.png", "does not exist"]);
    case("path,x,y\nbad.png,1,0\n", &["line 2, column 1", "bad.png"]);
    case("path,x\n\"a.png,1\n", &["line 2", "unterminated quote"]);
    case("path\na.png\n", &["line 1", "1 column"]);
    case("path,x\n", &["no rows"]);
    case("", &["empty manifest"]);
    assert!(matches!(manifest::load(&root.join("nope.csv"), &ImageOptions::default()), Err(Error::Io { .. })));
}

// ---------------------------------------------------------------- safetensors

#[test]
fn tensor_file_save_load_round_trip() {
    let t = TempDir::new("st");
    let p = t.path().join("a.safetensors");
    let a = synthetic::shapes_task_a(50, 16, 4);
    tensor_file::save(&p, &a).unwrap();
    assert_eq!(tensor_file::load(&p).unwrap(), a);
    // Overwrite in place with a multi-label set (NaN unknowns survive); no temp file is left.
    let mut b = synthetic::scenes_task_b(30, 16, 4);
    if let Targets::Labels { y, .. } = &mut b.targets {
        y[1] = f32::NAN;
        y[7] = f32::NAN;
    }
    tensor_file::save(&p, &b).unwrap();
    let back = tensor_file::load(&p).unwrap();
    assert_eq!(back.x, b.x);
    assert_eq!(back.label_names, b.label_names);
    assert_eq!(back.input_shape, b.input_shape);
    let (y0, _) = labels(&b);
    let (y1, k) = labels(&back);
    assert_eq!(k, 4);
    assert!(y0.iter().zip(y1).all(|(p, q)| p.to_bits() == q.to_bits()));
    let leftovers: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    // Saving an invalid data set or unrepresentable names fails before writing.
    let mut bad = a.clone();
    bad.x[0] = f32::NAN;
    assert!(tensor_file::save(&t.path().join("bad.safetensors"), &bad).is_err());
    let mut bad = a.clone();
    bad.label_names[0] = "a,b".into();
    assert!(tensor_file::save(&t.path().join("bad.safetensors"), &bad).is_err());
    assert!(!t.path().join("bad.safetensors").exists());
}

/// Writes tensors (name, dtype, shape, bytes) and metadata with the safetensors crate.
fn write_st(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        tensors.iter().map(|(n, dt, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap())).collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let bytes = safetensors::serialize(views, if meta.is_empty() { None } else { Some(meta) }).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn tensor_file_reads_u8_and_integer_classes() {
    use safetensors::Dtype;
    let t = TempDir::new("st-u8");
    let p = t.path().join("u8.safetensors");
    let x: Vec<u8> = (0..24).map(|i| (i * 10) as u8).collect();
    let y: Vec<u8> = [1i32, 0, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(&p, &[("x", Dtype::U8, vec![3, 2, 4], x), ("y", Dtype::I32, vec![3], y.clone())], &[]);
    let ds = tensor_file::load(&p).unwrap();
    assert_eq!((ds.n, ds.d), (3, 8));
    assert_eq!(ds.input_shape, vec![2, 4]);
    assert_eq!(ds.x[1], 10.0 / 255.0);
    assert_eq!(classes(&ds), &[1, 0, 2]);
    assert_eq!(ds.num_outputs(), 3);
    // no label_names metadata: no names (the outputs are known by index)
    assert!(ds.label_names.is_empty(), "{:?}", ds.label_names);

    let x: Vec<u8> = vec![0; 24];
    let y64: Vec<u8> = [4i64, 0, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(
        &p,
        &[("x", Dtype::U8, vec![3, 8], x.clone()), ("y", Dtype::I64, vec![3], y64)],
        &[("num_classes", "6"), ("input_shape", "2,2,2"), ("label_names", "a,b,c,d,e,f")],
    );
    let ds = tensor_file::load(&p).unwrap();
    assert_eq!(ds.num_outputs(), 6);
    assert_eq!(ds.input_shape, vec![2, 2, 2]);
    assert_eq!(ds.label_names[5], "f");

    let u32y: Vec<u8> = [1u32, 1, 0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(&p, &[("x", Dtype::U8, vec![3, 8], x.clone()), ("y", Dtype::U32, vec![3], u32y)], &[]);
    assert_eq!(classes(&tensor_file::load(&p).unwrap()), &[1, 1, 0]);
    write_st(&p, &[("x", Dtype::U8, vec![3, 8], x), ("y", Dtype::U8, vec![3], vec![0, 2, 1])], &[]);
    assert_eq!(tensor_file::load(&p).unwrap().num_outputs(), 3);
}

/// One stray class index (9 among 0–3) must not silently make a 10-class head: without
/// `num_classes` a gap in the classes is refused, saying how to give the count; with it the file
/// loads with that many classes.
#[test]
fn tensor_file_refuses_a_stray_class_unless_num_classes_is_given() {
    use safetensors::Dtype;
    let t = TempDir::new("st-stray");
    let p = t.path().join("stray.safetensors");
    let x: Vec<u8> = vec![0; 6 * 4];
    let y = vec![0u8, 1, 2, 3, 9, 1];
    write_st(&p, &[("x", Dtype::U8, vec![6, 4], x.clone()), ("y", Dtype::U8, vec![6], y.clone())], &[]);
    let e = tensor_file::load(&p).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let m = msg(e);
    for needle in ["stray.safetensors", "up to 9", "class 4–8", "10-class", "num_classes", "metadata={\"num_classes\": \"10\"}"] {
        assert!(m.contains(needle), "{m:?} does not mention {needle:?}");
    }
    // Several gaps are listed as ranges.
    write_st(&p, &[("x", Dtype::U8, vec![6, 4], x.clone()), ("y", Dtype::U8, vec![6], vec![0, 2, 5, 7, 8, 12])], &[]);
    let m = msg(tensor_file::load(&p).unwrap_err());
    assert!(m.contains("no example has class 1, 3–4, 6, 9–11;"), "{m}");
    // Given the count, the same classes load, the empty ones included.
    write_st(&p, &[("x", Dtype::U8, vec![6, 4], x.clone()), ("y", Dtype::U8, vec![6], y.clone())], &[("num_classes", "10")]);
    let ds = tensor_file::load(&p).unwrap();
    assert_eq!(ds.num_outputs(), 10);
    assert_eq!(classes(&ds), &[0, 1, 2, 3, 9, 1]);
    // A data set saved by headswap records its count, so one with empty classes reads back.
    let back = t.path().join("saved.safetensors");
    tensor_file::save(&back, &ds).unwrap();
    assert_eq!(tensor_file::load(&back).unwrap(), ds);
    // No gap: no key needed.
    write_st(&p, &[("x", Dtype::U8, vec![6, 4], x), ("y", Dtype::U8, vec![6], vec![3, 1, 2, 0, 0, 1])], &[]);
    assert_eq!(tensor_file::load(&p).unwrap().num_outputs(), 4);
}

#[test]
fn tensor_file_bad_inputs_are_errors() {
    use safetensors::Dtype;
    let t = TempDir::new("st-bad");
    let p = t.path().join("bad.safetensors");
    let f32s = |v: &[f32]| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let x = f32s(&[0.0; 6]);
    let y = vec![0u8, 1, 1];
    let expect = |needle: &str| {
        let e = tensor_file::load(&p).expect_err(needle);
        assert!(matches!(e, Error::Format { .. }), "{e:?}");
        let m = msg(e);
        assert!(m.contains("bad.safetensors") && m.contains(needle), "{m:?} does not mention {needle:?}");
    };
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone())], &[]);
    expect("no tensor named \"y\"");
    write_st(&p, &[("inputs", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::U8, vec![3], y.clone())], &[]);
    expect("no tensor named \"x\"");
    write_st(&p, &[("x", Dtype::F32, vec![6], x.clone()), ("y", Dtype::U8, vec![3], y.clone())], &[]);
    expect("must be [n, d]");
    write_st(&p, &[("x", Dtype::I32, vec![3, 2], vec![0; 24]), ("y", Dtype::U8, vec![3], y.clone())], &[]);
    expect("expected F32 or U8");
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::U8, vec![2], vec![0, 1])], &[]);
    expect("expected [3] or [3, k]");
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::F32, vec![3], f32s(&[0.0; 3]))], &[]);
    expect("must hold integer classes");
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::U8, vec![3, 1], y.clone())], &[]);
    expect("must hold float labels");
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::F32, vec![3, 1], f32s(&[0.0, 3.0, 1.0]))], &[]);
    expect("row 1, label 0");
    let neg: Vec<u8> = [0i64, -1, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::I64, vec![3], neg)], &[]);
    expect("y[1] = -1");
    let huge: Vec<u8> = [0u32, u32::MAX, 1].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::U32, vec![3], huge)], &[]);
    expect("y[1] = 4294967295");
    let ok = [("x", Dtype::F32, vec![3, 2], x.clone()), ("y", Dtype::U8, vec![3], y.clone())];
    write_st(&p, &ok, &[("num_classes", "1")]);
    expect("num_classes = 1");
    write_st(&p, &ok, &[("num_classes", "many")]);
    expect("\"many\"");
    write_st(&p, &ok, &[("input_shape", "1,3")]);
    expect("input_shape");
    write_st(&p, &ok, &[("input_shape", "2,x")]);
    expect("input_shape");
    write_st(&p, &ok, &[("label_names", "a,b,c")]);
    expect("3 names for 2");
    write_st(&p, &[("x", Dtype::F32, vec![3, 2], f32s(&[0.0, 1.0, f32::NAN, 0.0, 0.0, 0.0])), ("y", Dtype::U8, vec![3], y.clone())], &[]);
    expect("row 1, feature 0");
    write_st(&p, &[("x", Dtype::F32, vec![0, 2], vec![]), ("y", Dtype::U8, vec![0], vec![])], &[]);
    expect("empty");

    // Random bytes, an empty file, and every truncation of a valid file: Err, never a panic.
    std::fs::write(&p, b"").unwrap();
    assert!(tensor_file::load(&p).is_err());
    let mut rng = headswap::Rng::new(1);
    for len in [1usize, 7, 8, 9, 100, 4096] {
        let junk: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
        std::fs::write(&p, &junk).unwrap();
        assert!(tensor_file::load(&p).is_err(), "random {len} bytes loaded");
    }
    // A header length that claims a plausible size but a body that is JSON garbage.
    let mut fake = 16u64.to_le_bytes().to_vec();
    fake.extend_from_slice(b"{\"x\": [1, 2, 3]}");
    std::fs::write(&p, &fake).unwrap();
    assert!(tensor_file::load(&p).is_err());
    tensor_file::save(&p, &synthetic::scenes_task_b(3, 8, 1)).unwrap();
    let full = std::fs::read(&p).unwrap();
    for cut in 0..full.len() {
        std::fs::write(&p, &full[..cut]).unwrap();
        assert!(tensor_file::load(&p).is_err(), "file cut at {cut} of {} bytes loaded", full.len());
    }
    // Flipping single bytes of the header: any outcome but a panic; a load that succeeds is valid.
    for i in 8..full.len().min(300) {
        let mut b = full.clone();
        b[i] ^= 0x5A;
        std::fs::write(&p, &b).unwrap();
        if let Ok(ds) = tensor_file::load(&p) {
            ds.validate().unwrap();
        }
    }
    assert!(matches!(tensor_file::load(&t.path().join("absent.safetensors")), Err(Error::Io { .. })));
}

// ---------------------------------------------------------------- digits

#[test]
fn digits_loader_errors_without_shared_data() {
    let t = TempDir::new("digits-err");
    assert!(matches!(digits::load(t.path()), Err(Error::Io { .. })));
    std::fs::write(t.path().join(digits::FILE_NAME), b"not gzip at all").unwrap();
    let m = msg(digits::load(t.path()).unwrap_err());
    assert!(m.contains("digits.csv.gz") && m.contains("gzip"), "{m}");
    let gz = |text: &str| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.as_bytes()).unwrap();
        std::fs::write(t.path().join(digits::FILE_NAME), e.finish().unwrap()).unwrap();
    };
    let row = |label: &str| format!("{}{label}\n", "0,".repeat(64));
    gz(&format!("{}{}", row("3"), row("12")));
    let m = msg(digits::load(t.path()).unwrap_err());
    assert!(m.contains("line 2, column 65") && m.contains("label"), "{m}");
    gz(&format!("{}{}", row("3"), "1,2,3\n"));
    let m = msg(digits::load(t.path()).unwrap_err());
    assert!(m.contains("line 2: 3 columns"), "{m}");
    gz(&format!("17,{}", &row("3")[2..]));
    let m = msg(digits::load(t.path()).unwrap_err());
    assert!(m.contains("line 1, column 1") && m.contains("pixel"), "{m}");
    gz(&format!("{}{}", row("3"), row("9")));
    let ds = digits::load(t.path()).unwrap();
    assert_eq!((ds.n, ds.d), (2, 64));
    assert_eq!(classes(&ds), &[3, 9]);

    // The scenario builders check their input.
    let a = synthetic::shapes_task_a(10, 16, 1);
    assert!(digits::scenes(&a, 10, [0, 1, 2, 3], 1).is_err());
    assert!(digits::single_as_scene_input(&a, 1).is_err());
    assert!(digits::scenes(&ds, 10, [0, 1, 2, 2], 1).is_err());
    assert!(digits::scenes(&ds, 10, [0, 1, 2, 10], 1).is_err());
    assert!(digits::scenes(&ds, 0, [0, 1, 2, 3], 1).is_err());
}

#[test]
fn digits_real_data_when_present() {
    let Some(dir) = digits::default_dir() else {
        println!("SKIPPED digits_real_data_when_present: ../shared/data/digits/digits.csv.gz is absent (set HEADSWAP_DIGITS_DIR)");
        return;
    };
    let ds = digits::load(&dir).unwrap();
    assert_eq!((ds.n, ds.d), (1797, 64));
    assert_eq!(ds.input_shape, vec![1, 8, 8]);
    assert_eq!(ds.num_outputs(), 10);
    let counts = ds.positives_per_output();
    assert!(counts.iter().all(|&c| (174..=183).contains(&c)), "{counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), 1797);
    assert!(ds.x.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(ds.x.contains(&1.0));

    let (train, test) = digits::fixed_split(&ds);
    assert_eq!((train.n, test.n), (1348, 449));
    assert_eq!(digits::fixed_split(&ds), (train.clone(), test.clone()));

    let a = digits::single_as_scene_input(&train, 1).unwrap();
    assert_eq!(a.input_shape, vec![1, 16, 16]);
    assert_eq!(a.n, train.n);
    assert_eq!(classes(&a), classes(&train));
    // Exactly one tile holds the digit: the sum of pixels is preserved.
    for i in 0..20 {
        let s0: f32 = train.row(i).unwrap().iter().sum();
        let s1: f32 = a.row(i).unwrap().iter().sum();
        assert!((s0 - s1).abs() < 1e-4);
    }

    let b = digits::scenes(&train, 3000, digits::TASK_B_DIGITS, 2).unwrap();
    assert_eq!(b.input_shape, vec![1, 16, 16]);
    assert_eq!(b.label_names, vec!["2", "3", "5", "7"]);
    for (j, &p) in b.positives_per_output().iter().enumerate() {
        let rate = p as f64 / 3000.0;
        assert!((0.27..0.41).contains(&rate), "digit label {j}: {rate}");
    }
    assert_eq!(b, digits::scenes(&train, 3000, digits::TASK_B_DIGITS, 2).unwrap());
    assert_ne!(b.x, digits::scenes(&train, 3000, digits::TASK_B_DIGITS, 3).unwrap().x);
}

// ---------------------------------------------------------------- sample PNGs

#[test]
fn sample_pngs_render() {
    let t = TempDir::new("samples");
    let written = preview::save_samples_png(t.path(), 42).unwrap();
    assert!(written.len() >= 2);
    let img = image::open(t.path().join("shapes_task_a.png")).unwrap();
    // 8 columns of 16×4 pixels plus 4-pixel gaps.
    assert_eq!(img.width(), 8 * (64 + 4) + 4);
    assert_eq!(img.height(), 4 * (64 + 4) + 4);
    assert!(t.path().join("scenes_task_b.png").is_file());
}

/// Regenerates the committed sample images in `assets/`:
/// `cargo test --test data -- --ignored regenerate_assets`.
#[test]
#[ignore = "writes into assets/; run by hand to regenerate them"]
fn regenerate_assets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    for p in preview::save_samples_png(&dir, 42).unwrap() {
        println!("wrote {}", p.display());
    }
    let b = synthetic::scenes_task_b(32, 16, 42);
    let (y, k) = labels(&b);
    for (i, r) in y.chunks(k).enumerate() {
        let names: Vec<&str> = (0..k).filter(|&j| r[j] == 1.0).map(|j| b.label_names[j].as_str()).collect();
        println!("scene {i}: {names:?}");
    }
}
