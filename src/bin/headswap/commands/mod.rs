//! One file per command; each takes its parsed arguments and does every check it can before
//! the first piece of work that costs time or prints a result.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod finetune;
pub mod info;
pub mod predict;
pub mod pretrain;
pub mod resume;
pub mod train;
