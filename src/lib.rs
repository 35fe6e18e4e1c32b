//! kdscope: knowledge-distillation experiments and explanations.
pub mod nn;
