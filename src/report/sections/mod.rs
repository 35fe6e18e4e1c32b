//! The report's larger sections, one file each: what they show and the data they hand to the page.
pub mod embeddings;
pub mod explanations;
pub mod images;
