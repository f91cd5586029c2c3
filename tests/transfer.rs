//! The transfer story on data nobody generated: on the real handwritten digits, a trunk
//! pretrained on single digits and fine-tuned (head only) on a few multi-label digit scenes beats
//! the same network trained on those scenes from scratch. Also runs the synthetic demo end to end.
mod common;
use common::*;
use headswap::demo::{self, DemoConfig, DemoData, HEAD_ONLY, SCRATCH};

#[test]
fn transfer_beats_scratch_on_real_digits() {
    let Some(dir) = headswap::data::digits::default_dir() else {
        eprintln!("SKIPPED: ../shared/data/digits is absent (set HEADSWAP_DIGITS_DIR to run this test)");
        return;
    };
    let gpu = gpu();
    let cfg = DemoConfig { data: DemoData::Digits(Some(dir)), sizes: vec![40], quick: true, ..DemoConfig::default() };
    let report = demo::run(&gpu, &cfg, &mut |l| eprintln!("{l}")).unwrap();
    eprintln!("{report}");
    let transfer = report.f1(40, HEAD_ONLY).unwrap();
    let scratch = report.f1(40, SCRATCH).unwrap();
    assert!(transfer > scratch + 0.05, "transfer mean F1 {transfer:.3} should beat from-scratch {scratch:.3} with 40 task-B scenes");
}

#[test]
fn synthetic_demo_runs_and_transfer_helps_when_b_is_small() {
    let gpu = gpu();
    let cfg = DemoConfig { sizes: vec![40], quick: true, ..DemoConfig::default() };
    let report = demo::run(&gpu, &cfg, &mut |l| eprintln!("{l}")).unwrap();
    assert_eq!(report.rows.len(), 3);
    assert!(report.task_a_test_accuracy > 0.5, "task A accuracy {}", report.task_a_test_accuracy);
    let transfer = report.f1(40, HEAD_ONLY).unwrap();
    let scratch = report.f1(40, SCRATCH).unwrap();
    assert!(transfer > scratch, "transfer mean F1 {transfer:.3} vs from scratch {scratch:.3}");
    assert!(report.to_json().contains("\"results\""));
}
