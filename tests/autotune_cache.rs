//! The autotune cache file when it cannot be written: the choices still work (kept in memory),
//! and the user is told once, not once per choice measured.
mod common;
use common::*;
use headswap::kernels::autotune::{self, Source};
use headswap::kernels::matmul::Problem;
use headswap::kernels::{Epilogue, Transpose};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{Event, Level, Metadata, Subscriber, span};

/// A tracing subscriber that keeps the message of every warning.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message<'a>(&'a mut String);

impl tracing::field::Visit for Message<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        span::Id::from_u64(NEXT.fetch_add(1, Ordering::Relaxed) as u64)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        if *event.metadata().level() == Level::WARN {
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            self.0.lock().unwrap().push(text);
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

/// The child: measures three matmul classes with `HEADSWAP_CACHE_DIR` under a regular file (so
/// no folder can be made there, even as root), and checks what was said.
#[test]
#[ignore = "a child process of unwritable_cache_folder_warns_once (does nothing without HEADSWAP_TEST_CHILD)"]
fn unwritable_cache_child() {
    if std::env::var("HEADSWAP_TEST_CHILD").as_deref() != Ok("unwritable") {
        return;
    }
    let warnings = Warnings::default();
    tracing::subscriber::set_global_default(warnings.clone()).unwrap();
    let gpu = private_gpu();
    let forms = [Transpose::NN, Transpose::NT, Transpose::TN];
    for &t in &forms {
        let c = autotune::choose(&gpu, Problem { m: 9, n: 11, k: 13, t }, Epilogue::default()).unwrap();
        assert_eq!(c.source, Source::Measured);
    }
    assert_eq!(autotune::measurements(), forms.len() as u64);
    // each choice is still remembered, in memory
    for &t in &forms {
        let c = autotune::choose(&gpu, Problem { m: 9, n: 11, k: 13, t }, Epilogue::default()).unwrap();
        assert_eq!(c.source, Source::Memory);
    }
    let said = warnings.0.lock().unwrap().clone();
    let about_cache: Vec<&String> = said.iter().filter(|w| w.contains("autotune cache")).collect();
    assert_eq!(about_cache.len(), 1, "warnings about the cache: {about_cache:#?}");
    assert!(about_cache[0].contains("could not write") && about_cache[0].contains("HEADSWAP_CACHE_DIR"), "{}", about_cache[0]);
    println!("child checks passed");
}

#[test]
fn unwritable_cache_folder_warns_once() {
    let tmp = TempDir::new("unwritable_cache");
    let blocker = tmp.path().join("a_file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["unwritable_cache_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("HEADSWAP_TEST_CHILD", "unwritable")
        .env("HEADSWAP_CACHE_DIR", blocker.join("cache"))
        .env_remove("HEADSWAP_MATMUL")
        .env_remove("HEADSWAP_AUTOTUNE")
        .output()
        .unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("child checks passed"), "the child failed:\n{text}");
}
