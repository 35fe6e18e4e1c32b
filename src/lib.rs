//! kdscope: knowledge-distillation experiments and explanations.
//!
//! The README below is part of the crate documentation, so its Rust example is compiled and run by
//! `cargo test`.
#![doc = include_str!("../README.md")]
pub mod data;
pub mod demo;
pub mod distill;
pub mod models;
pub mod nn;
pub mod perf;
pub mod train;

pub use models::{Arch, Model, ModelSpec, Outputs};
