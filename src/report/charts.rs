//! The report's charts as plotly figures: superclass circular bars, grouped confusion matrices,
//! rejection and local-fidelity curves and embedding scatters, built from frames (also shown on their
//! own in notebooks).
use anyhow::ensure;
use polars::prelude::DataFrame;
use serde_json::{json, Value};

use super::kd::{single_group, with_hierarchy};
use crate::metrics::{self, Evaluation};
use crate::notebook::{self, Chart};

/// The superclass circular bar chart of one metric (`precision`, `recall`, `accuracy` or `f1`):
/// teacher on the outer ring, student on the inner ring (for notebooks; the report shows three).
pub fn superclass_polar(teacher: &Evaluation, student: &Evaluation, metric: &str) -> anyhow::Result<Chart> {
    let h = teacher.hierarchy.clone().unwrap_or_else(|| single_group(teacher.num_classes()));
    let (t, s) = (with_hierarchy(teacher, &h), with_hierarchy(student, &h));
    let (ts, ss) = (metrics::per_superclass(&t)?, metrics::per_superclass(&s)?);
    let a: Vec<f64> = crate::notebook::col(&ts, metric)?.f64()?.into_no_null_iter().collect();
    let b: Vec<f64> = crate::notebook::col(&ss, metric)?.f64()?.into_no_null_iter().collect();
    Ok(polar_chart(&notebook::unique_id("kd-polar"), metric, &h.super_names, &a, &b, &t.name, &s.name))
}

pub(crate) fn polar_chart(
    id: &str,
    title: &str,
    supers: &[String],
    teacher: &[f64],
    student: &[f64],
    tn: &str,
    sn: &str,
) -> Chart {
    const OUTER: f64 = 1.15;
    let fig = json!({
        "data": [
            { "type": "barpolar", "name": format!("teacher: {tn} (outer)"), "theta": supers, "r": teacher,
              "base": vec![OUTER; teacher.len()], "marker": { "color": "#4c78a8" },
              "customdata": teacher, "hovertemplate": "%{theta}<br>teacher %{customdata:.3f}<extra></extra>" },
            { "type": "barpolar", "name": format!("student: {sn} (inner)"), "theta": supers, "r": student,
              "marker": { "color": "#f58518" },
              "customdata": student, "hovertemplate": "%{theta}<br>student %{customdata:.3f}<extra></extra>" },
        ],
        "layout": {
            "title": { "text": title },
            "polar": { "radialaxis": { "range": [0, OUTER + 1.0], "showticklabels": false, "ticks": "" },
                       "angularaxis": { "direction": "clockwise" } },
            "legend": { "orientation": "h" },
            "margin": { "l": 30, "r": 30, "t": 50, "b": 20 },
        },
    });
    Chart { id: id.into(), json: fig.to_string(), height_px: 420 }
}

pub(crate) fn confusion_chart(id: &str, title: &str, names: &[&str], z: &[Vec<f64>], bounds: &[usize]) -> Chart {
    let n = names.len() as f64;
    let shapes: Vec<Value> = bounds[..bounds.len().saturating_sub(1)]
        .iter()
        .flat_map(|&b| {
            let p = b as f64 - 0.5;
            let line = json!({ "color": "#222", "width": 1 });
            [
                json!({ "type": "line", "x0": p, "x1": p, "y0": -0.5, "y1": n - 0.5, "line": line }),
                json!({ "type": "line", "y0": p, "y1": p, "x0": -0.5, "x1": n - 0.5, "line": line }),
            ]
        })
        .collect();
    let idx: Vec<usize> = (0..names.len()).collect();
    let grey = json!([[0, "#fafafa"], [1, "#6b6b6b"]]);
    let blue = json!([[0, "#f7fbff"], [0.1, "#c6dbef"], [0.4, "#4292c6"], [1, "#08306b"]]);
    let trace = |colorscale: &Value, showscale: bool| {
        json!({ "type": "heatmap", "z": z, "x": idx, "y": idx, "zmin": 0, "zmax": 1, "colorscale": colorscale,
                "showscale": showscale, "customdata": names,
                "hovertemplate": "true %{y}, predicted %{x}: %{z:.3f}<extra></extra>" })
    };
    let ticks = json!({ "tickmode": "array", "tickvals": idx, "ticktext": names, "tickfont": { "size": 8 } });
    let mut xaxis = ticks.clone();
    xaxis["title"] = json!("predicted");
    xaxis["tickangle"] = json!(-60);
    let mut yaxis = ticks;
    yaxis["title"] = json!("true");
    yaxis["autorange"] = json!("reversed");
    let fig = json!({
        "data": [trace(&grey, false), trace(&blue, true)],
        "layout": { "title": { "text": title }, "xaxis": xaxis, "yaxis": yaxis, "shapes": shapes,
                    "margin": { "l": 90, "r": 10, "t": 40, "b": 90 } },
    });
    Chart { id: id.into(), json: fig.to_string(), height_px: 560 }
}

/// The distinct values of a string column, in order of first appearance.
pub(crate) fn distinct(df: &DataFrame, col: &str) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = vec![];
    for v in crate::notebook::col(df, col)?.str()?.iter().map(|v| v.unwrap_or("")) {
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

pub(crate) fn f64s(df: &DataFrame, col: &str) -> anyhow::Result<Vec<f64>> {
    Ok(crate::notebook::col(df, col)?.f64()?.into_no_null_iter().collect())
}

pub(crate) fn u32s(df: &DataFrame, col: &str) -> anyhow::Result<Vec<u32>> {
    Ok(crate::notebook::col(df, col)?.u32()?.into_no_null_iter().collect())
}

pub(crate) fn strs(df: &DataFrame, col: &str) -> anyhow::Result<Vec<String>> {
    Ok(crate::notebook::col(df, col)?.str()?.iter().map(|s| s.unwrap_or("").to_string()).collect())
}

pub(crate) fn line_chart(
    id: &str,
    title: &str,
    xt: &str,
    yt: &str,
    lines: Vec<(String, Vec<f64>, Vec<f64>, bool)>,
) -> Chart {
    let data: Vec<Value> = lines
        .into_iter()
        .map(|(name, x, y, dashed)| {
            json!({ "type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": y,
                    "marker": { "size": 4 }, "line": { "dash": if dashed { "dash" } else { "solid" } } })
        })
        .collect();
    let fig = json!({
        "data": data,
        "layout": { "title": { "text": title }, "xaxis": { "title": xt }, "yaxis": { "title": yt },
                    "legend": { "orientation": "h", "y": -0.25 }, "margin": { "l": 50, "r": 10, "t": 40, "b": 40 } },
    });
    Chart { id: id.into(), json: fig.to_string(), height_px: 440 }
}

/// Accuracy-vs-data-kept curves of one model from a rejection frame (`model, measure, kept,
/// accuracy`, see [`crate::embed::ModelEmbeddings::rejection_frame`]); KDE measures solid, the model's
/// own confidences dashed.
pub fn rejection_chart(rejection: &DataFrame, model: &str) -> anyhow::Result<Chart> {
    let (rm, rme, rk, ra) = (
        strs(rejection, "model")?,
        strs(rejection, "measure")?,
        f64s(rejection, "kept")?,
        f64s(rejection, "accuracy")?,
    );
    ensure!(rm.iter().any(|m| m == model), "no rejection curves of model {model:?}");
    let lines = distinct(rejection, "measure")?
        .into_iter()
        .map(|me| {
            let rows: Vec<usize> = (0..rm.len()).filter(|&r| rm[r] == model && rme[r] == me).collect();
            let dashed = !me.starts_with("KDE");
            (me, rows.iter().map(|&r| rk[r]).collect(), rows.iter().map(|&r| ra[r]).collect(), dashed)
        })
        .collect();
    Ok(line_chart(
        &notebook::unique_id("kd-reject"),
        &format!("{model}: rejection curves"),
        "fraction of data kept (most confident first)",
        "accuracy",
        lines,
    ))
}

/// `M_k` against `k` for every model and embedding of a fidelity frame (`model, method, k, m_k`);
/// the second model's lines dashed.
pub fn fidelity_chart(fidelity: &DataFrame) -> anyhow::Result<Chart> {
    let (fm, fme, fk, fv) =
        (strs(fidelity, "model")?, strs(fidelity, "method")?, u32s(fidelity, "k")?, f64s(fidelity, "m_k")?);
    let mut lines = vec![];
    for (mi, m) in distinct(fidelity, "model")?.iter().enumerate() {
        for me in distinct(fidelity, "method")? {
            let rows: Vec<usize> = (0..fm.len()).filter(|&r| &fm[r] == m && fme[r] == me).collect();
            if rows.is_empty() {
                continue;
            }
            let (x, y) = (rows.iter().map(|&r| fk[r] as f64).collect(), rows.iter().map(|&r| fv[r]).collect());
            lines.push((format!("{m}: {me}"), x, y, mi % 2 == 1));
        }
    }
    Ok(line_chart(
        &notebook::unique_id("kd-fidelity"),
        "M_k: mean JSD to the k nearest neighbours in 2-D (lower is better)",
        "k",
        "M_k (nats)",
        lines,
    ))
}

/// One embedding of one model from a points frame (see
/// [`crate::embed::ModelEmbeddings::points_frame`]), coloured by predicted class (for notebooks; the
/// report draws its own interactive pair).
pub fn embedding_scatter(
    points: &DataFrame,
    model: &str,
    method: &str,
    class_names: &[String],
) -> anyhow::Result<Chart> {
    let (pm, pme) = (strs(points, "model")?, strs(points, "method")?);
    let (x, y, idx, pred) =
        (f64s(points, "x")?, f64s(points, "y")?, u32s(points, "index")?, u32s(points, "predicted")?);
    let rows: Vec<usize> = (0..pm.len()).filter(|&r| pm[r] == model && pme[r] == method).collect();
    ensure!(!rows.is_empty(), "no points of model {model:?} and method {method:?}");
    let mut traces = vec![];
    for c in rows.iter().map(|&r| pred[r]).collect::<std::collections::BTreeSet<_>>() {
        let rs: Vec<usize> = rows.iter().copied().filter(|&r| pred[r] == c).collect();
        let name = class_names.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
        traces.push(json!({
            "type": "scattergl", "mode": "markers", "name": name, "marker": { "size": 5 },
            "x": rs.iter().map(|&r| x[r]).collect::<Vec<_>>(), "y": rs.iter().map(|&r| y[r]).collect::<Vec<_>>(),
            "text": rs.iter().map(|&r| format!("#{}", idx[r])).collect::<Vec<_>>(),
            "hovertemplate": "%{text} predicted %{fullData.name}<extra></extra>",
        }));
    }
    let fig = json!({
        "data": traces,
        "layout": { "title": { "text": format!("{model}: {method}") },
                    "xaxis": { "showticklabels": false, "zeroline": false },
                    "yaxis": { "showticklabels": false, "zeroline": false, "scaleanchor": "x" },
                    "margin": { "l": 10, "r": 10, "t": 40, "b": 10 } },
    });
    Ok(Chart { id: notebook::unique_id("kd-embed"), json: fig.to_string(), height_px: 560 })
}
