//! # headswap
//!
//! A neural-network training engine whose math runs in WGSL compute shaders on any wgpu adapter
//! (Vulkan, Metal, DX12, GL; a real GPU or Mesa's lavapipe/llvmpipe), built for transfer
//! learning (pretrain, head-swap, fine-tune with a frozen trunk that stays resident on the GPU)
//! and multi-task learning (several sigmoid labels, masked where unknown).

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod demo;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod nn;
pub mod reference;
pub mod report;
pub mod rng;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{Gpu, Tensor};
pub use rng::Rng;
