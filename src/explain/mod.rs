//! Explanations of what a model looks at, and how teacher and student differ.
//!
//! So far: the distance statistics ([`dcor`]) that UniCAM's FSS and RS scores are built on. The saliency
//! methods, UniCAM and the explanation-quality metrics follow (issue 5).
pub mod dcor;
