//! Frames and charts made from runs, and evaluations of models for the metric frames.
use plotly::Plot;
use polars::prelude::DataFrame;

use super::Run;
use crate::data::Dataset;
use crate::metrics::{column, Evaluation};
use crate::models::Model;
use crate::predictions::Predictions;
use crate::train::evaluate;

/// Evaluates `model` on `data` and wraps the predictions for the metric frames and reports.
pub fn evaluate_model(name: &str, model: &Model, data: &Dataset) -> Evaluation {
    evaluation_of(name, model, evaluate(model, data, 256), data)
}

pub(super) fn evaluation_of(name: &str, model: &Model, predictions: Predictions, data: &Dataset) -> Evaluation {
    Evaluation {
        name: name.into(),
        arch: model.spec.arch.to_string(),
        params: model.num_params(),
        predictions,
        class_names: data.class_names.clone(),
        hierarchy: data.hierarchy.clone(),
    }
}

/// One row per run: name, architecture, method, parameters, top-1/top-5 test accuracy (%), train seconds.
pub fn summary_frame(runs: &[&Run]) -> anyhow::Result<DataFrame> {
    Ok(DataFrame::new_infer_height(vec![
        column("run", runs.iter().map(|r| r.name.clone()).collect::<Vec<_>>()),
        column("arch", runs.iter().map(|r| r.model.spec.arch.to_string()).collect::<Vec<_>>()),
        column("method", runs.iter().map(|r| r.method.clone()).collect::<Vec<_>>()),
        column("params", runs.iter().map(|r| r.model.num_params() as u64).collect::<Vec<_>>()),
        column("top1_pct", runs.iter().map(|r| 100.0 * r.test.accuracy()).collect::<Vec<_>>()),
        column("top5_pct", runs.iter().map(|r| 100.0 * r.test.top_k_accuracy(5)).collect::<Vec<_>>()),
        column("train_s", runs.iter().map(|r| r.history.total_seconds()).collect::<Vec<_>>()),
    ])?)
}

/// Every epoch of every run, long format: run, epoch, lr, train loss/accuracy, test loss/accuracy (%).
pub fn history_frame(runs: &[&Run]) -> anyhow::Result<DataFrame> {
    let rows: Vec<(&str, &crate::train::EpochRecord)> =
        runs.iter().flat_map(|r| r.history.epochs.iter().map(move |e| (r.name.as_str(), e))).collect();
    Ok(DataFrame::new_infer_height(vec![
        column("run", rows.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>()),
        column("epoch", rows.iter().map(|(_, e)| e.epoch as u32).collect::<Vec<_>>()),
        column("lr", rows.iter().map(|(_, e)| e.lr).collect::<Vec<_>>()),
        column("train_loss", rows.iter().map(|(_, e)| e.train_loss).collect::<Vec<_>>()),
        column("train_acc_pct", rows.iter().map(|(_, e)| 100.0 * e.train_acc).collect::<Vec<_>>()),
        column("test_loss", rows.iter().map(|(_, e)| e.test_loss).collect::<Vec<_>>()),
        column("test_acc_pct", rows.iter().map(|(_, e)| 100.0 * e.test_acc).collect::<Vec<_>>()),
    ])?)
}

/// Test accuracy per epoch, one line per run.
pub fn training_curves(runs: &[&Run]) -> Plot {
    crate::report::accuracy_curves(runs.iter().map(|r| (r.name.as_str(), &r.history)))
}
