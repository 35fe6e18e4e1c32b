//! The report's sections, one type and file each, each rendered by its own partial in
//! `templates/sections/`: free-form [`blocks`] (also a grid's "Experiments"), the teacher-vs-student
//! views ([`models`], [`superclasses`], [`confusion`], the image corpus [`images`], [`training`], with
//! the names they share in [`teacher_student`]), [`explanations`], [`embeddings`] and the
//! [`reproducibility`] appendix.
pub mod blocks;
pub mod confusion;
pub mod embeddings;
pub mod explanations;
pub mod images;
pub mod models;
pub mod reproducibility;
pub mod superclasses;
pub mod teacher_student;
pub mod training;

pub use reproducibility::Reproducibility;
