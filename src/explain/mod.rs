//! Explanations of what a model looks at, and how teacher and student differ.
//!
//! So far: Grad-CAM and CAM at a named feature tap ([`grad_cam`]), with gradients read from the tape by
//! gradient probes on the real forward pass, and the distance statistics ([`dcor`]) that UniCAM's FSS
//! and RS scores are built on. Guided backprop, Grad-CAM++, UniCAM, the explanation-quality metrics and
//! their report section follow (issue 5).
pub mod dcor;
pub mod grad_cam;

pub use grad_cam::{cam, grad_cam, Maps};
