//! # headswap
//!
//! A neural-network training engine whose math runs in WGSL compute shaders on any wgpu adapter
//! (Vulkan, Metal, DX12, GL; a real GPU or Mesa's lavapipe/llvmpipe), built for transfer
//! learning (pretrain, head-swap, fine-tune with a frozen trunk that stays resident on the GPU)
//! and multi-task learning (several sigmoid labels, masked where unknown).
//!
//! ```
//! use headswap::{Gpu, nn::{Head, Network}, train::{Freeze, TrainConfig, Trainer}};
//! use headswap::data::synthetic::{scenes_task_b, shapes_task_a};
//!
//! let gpu = Gpu::new()?;                                              // WGPU_BACKEND etc. respected
//! let mut net = Network::new(&gpu, &[256, 64], Head::classes(8), 42)?; // trunk 256→64, 8 classes
//! let mut trainer = Trainer::new(&gpu, TrainConfig::default());
//! trainer.fit(&mut net, &shapes_task_a(512, 16, 1), 2)?;              // pretrain on task A
//! let swap = net.swap_head(Head::labels(4), 7)?;                      // fresh 4-label head
//! assert_eq!(swap.created.len(), 1);
//! let report = trainer.fine_tune(&mut net, &scenes_task_b(64, 16, 2), Freeze::Trunk, 2)?;
//! assert!(report.cached_features);                                    // frozen trunk ran once
//! let metrics = trainer.evaluate(&net, &scenes_task_b(64, 16, 3))?;
//! assert_eq!(metrics.labels.unwrap().f1.len(), 4);                    // per-label F1
//! # Ok::<(), headswap::Error>(())
//! ```
//!
//! The modules: [`gpu`] (device, tensors, pipeline cache), [`kernels`] (the WGSL kernel library,
//! usable on a host program's own device and buffers), [`nn`] (networks, head-swap),
//! [`train`] (training passes), [`data`], [`checkpoint`]; and, behind cargo features of the same
//! names, `demo` and `report`. The default feature `cli` (the `headswap` binary, with its `bench`
//! command) turns them all on; a program that only trains depends on headswap with
//! `default-features = false` and compiles none of their dependencies (gemm, plotters,
//! indicatif, tracing-subscriber).
//!
//! A program that owns its wgpu device hands it over with [`Gpu::from_device`], through
//! [`wgpu`] re-exported here (the same version headswap uses).

pub mod checkpoint;
pub mod data;
#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "distributed")]
pub mod distributed;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod nn;
pub mod reference;
#[cfg(feature = "report")]
pub mod report;
pub mod rng;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, Tensor};
pub use rng::Rng;
/// The wgpu headswap is built on, for a host program that hands over its own device
/// ([`Gpu::from_device`]): `headswap::wgpu` is the same version, so its types are headswap's.
pub use wgpu;

/// The README's Rust blocks, compiled as doc tests so the calls it shows are the real ones.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
