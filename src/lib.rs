//! kdscope: knowledge-distillation experiments and explanations.
pub mod models;
pub mod nn;

pub use models::{Arch, Model, ModelSpec, Outputs};
pub mod data;
pub mod demo;
pub mod distill;
pub mod perf;
pub mod train;
