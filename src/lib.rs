//! kdscope: knowledge-distillation experiments and explanations.
//!
//! The README below is part of the crate documentation, so its Rust example is compiled and run by
//! `cargo test`.
#![doc = include_str!("../README.md")]
pub mod bench;
pub mod cli;
pub mod data;
pub mod demo;
pub mod distill;
pub mod embed;
pub mod explain;
pub mod fuzz;
pub mod grid;
pub mod interop;
pub mod io;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod notebook;
pub mod predictions;
pub mod report;
pub mod run;
pub mod train;

pub use models::{Arch, Model, ModelSpec, Outputs};
/// The image, polars and plotly versions kdscope's frames and charts use, so notebooks need no extra `:dep`.
pub use {image, plotly, polars};

/// What a notebook usually needs, in one `use kdscope::prelude::*;`.
pub mod prelude {
    pub use crate::data::sample_indices;
    pub use crate::data::synthetic::{builtin_dataset, SynthConfig};
    pub use crate::data::{make_batch, DataSplit, Dataset};
    pub use crate::embed::{
        darksight, embed_predictions, local_fidelity, model_outputs, rejection_curve, section as embed_section,
        sections_from, tsne, DarkSightConfig, EmbedConfig, TsneConfig,
    };
    pub use crate::explain::agreement::{agreement_per_class, agreement_per_image};
    pub use crate::explain::overlay::{overlay, overlays};
    pub use crate::explain::quality::{quality_per_image, quality_summary};
    pub use crate::explain::unicam::{unicam, LabelEmbedding};
    pub use crate::explain::{
        explain_images, method as saliency, section as explain_section, Maps, Saliency, SectionConfig,
    };
    pub use crate::grid::{Grid, GridResults, MethodSpec, Metric, Pair};
    pub use crate::metrics::export::{to_latex, write_csv, write_json, write_latex, write_parquet};
    pub use crate::metrics::{
        compare_classes, compare_superclasses, confusion, overall, per_class, per_superclass, superclass_confusion,
        top_confusions, Evaluation,
    };
    pub use crate::models::Model;
    pub use crate::notebook::{self as nb, chart, grid, image, image_scaled, table};
    pub use crate::report::kd::{embedding_scatter, fidelity_chart, rejection_chart, superclass_polar};
    pub use crate::report::{KdViews, Report};
    pub use crate::run::{evaluate_model, history_frame, summary_frame, training_curves, Recipe, Run};
    pub use crate::train::{checkpoint::load_model, TrainConfig};
    pub use image::RgbImage;
    pub use polars::prelude::DataFrame;
}
