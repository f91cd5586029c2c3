//! The built-in architectures against PyTorch itself: torchvision's own resnet18, resnet34,
//! resnet50 and mobilenet_v2 with random weights and BatchNorm statistics that are not the
//! defaults, loaded from `.pth` and from `.safetensors` under their own names, give torchvision's
//! evaluation-mode logits to 1e-4.
//!
//! The files are too big to commit: `python3 scripts/torchvision_check.py DIR` (torch,
//! torchvision) writes them, and the test runs when `HEADSWAP_TORCHVISION_DIR=DIR` is set. Without
//! it the test says it was skipped: `cargo test` needs no Python. `.ci/run` has no torch (a 3 GB
//! download), so this runs where torch is installed.
mod common;
use common::*;
use headswap::checkpoint;
use headswap::nn::models::Arch;
use headswap::nn::{Head, Init, LoadOptions, Network};
use std::path::PathBuf;

#[test]
fn builtin_architectures_give_torchvisions_logits() {
    let Some(dir) = std::env::var_os("HEADSWAP_TORCHVISION_DIR").map(PathBuf::from) else {
        eprintln!("skipped: set HEADSWAP_TORCHVISION_DIR to the folder scripts/torchvision_check.py writes");
        return;
    };
    let gpu = gpu();
    for arch in Arch::ALL {
        let io = checkpoint::load(&dir.join(format!("{}_io.safetensors", arch.name()))).unwrap();
        let x = io.get("x").unwrap();
        let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3]);
        for ext in ["pth", "safetensors"] {
            let file = dir.join(format!("{}.{ext}", arch.name()));
            let state = checkpoint::load(&file).unwrap();
            let trunk = arch.trunk(3, h, w).unwrap();
            let mut net = Network::from_trunk(&gpu, 3 * h * w, trunk, Init::KaimingUniform, arch.head(Head::classes(1000)), 1).unwrap();
            let report =
                net.load_state_dict(&state, LoadOptions { strict: true, ..Default::default() }, &file.display().to_string()).unwrap();
            assert!(report.is_exact(), "{report}");
            let logits = headswap::train::predict_logits(&net, &x.data, n, n).unwrap();
            let want = to_f64(&io.get("logits").unwrap().data);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let what = format!("{} from .{ext}: logits against torchvision's", arch.name());
            assert_close(&what, &logits, &want, Tolerance { rel: 1e-4, abs: 1e-4 * scale });
            eprintln!("{what}: within 1e-4 (largest |logit| {scale:.3})");
        }
    }
}
