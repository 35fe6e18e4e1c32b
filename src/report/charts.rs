//! The report's charts as plotly figures: superclass circular bars, grouped confusion matrices,
//! rejection and local-fidelity curves and embedding scatters, built from frames (also shown on their
//! own in notebooks).
use anyhow::ensure;
use polars::prelude::DataFrame;
use serde_json::{json, Value};

use super::kd::{single_group, with_hierarchy};
use super::palette::PALETTE;
use plotly::common::{ColorScale, ColorScaleElement, DashType, Font, Line, Marker, Mode, Orientation, TickMode, Ticks};
use plotly::layout::{
    AngularAxis, Axis, LayoutPolar, Legend, Margin, PolarAxisAttributes, PolarAxisTicks, PolarDirection, RadialAxis,
    Shape, ShapeLine, ShapeType,
};
use plotly::{HeatMap, Layout, Plot, Scatter};

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

/// A trace type plotly.rs has no builder for (the polar bar chart), given as its JSON.
#[derive(Clone, serde::Serialize)]
#[serde(transparent)]
struct JsonTrace(Value);

impl plotly::Trace for JsonTrace {
    fn to_json(&self) -> String {
        self.0.to_string()
    }
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
    let ring = |name: String, r: &[f64], base: Option<f64>, color: &str, who: &str| {
        let mut t = json!({ "type": "barpolar", "name": name, "theta": supers, "r": r, "marker": { "color": color },
            "customdata": r, "hovertemplate": format!("%{{theta}}<br>{who} %{{customdata:.3f}}<extra></extra>") });
        if let Some(b) = base {
            t["base"] = json!(vec![b; r.len()]);
        }
        Box::new(JsonTrace(t))
    };
    let mut plot = Plot::new();
    plot.add_trace(ring(format!("teacher: {tn} (outer)"), teacher, Some(OUTER), PALETTE.teacher, "teacher"));
    plot.add_trace(ring(format!("student: {sn} (inner)"), student, None, PALETTE.student, "student"));
    // The radial axis spans 0 to the outer ring's end (its range is autoscaled from the bars).
    let radial = RadialAxis::new().axis_attributes(
        PolarAxisAttributes::new().ticks(PolarAxisTicks::new().show_tick_labels(false).ticks(Ticks::None)),
    );
    plot.set_layout(
        Layout::new()
            .title(title)
            .polar(
                LayoutPolar::new()
                    .radial_axis(radial)
                    .angular_axis(AngularAxis::new().direction(PolarDirection::Clockwise)),
            )
            .legend(Legend::new().orientation(Orientation::Horizontal))
            .margin(Margin::new().left(30).right(30).top(50).bottom(20)),
    );
    Chart { id: id.into(), json: plot.to_json(), height_px: 420 }
}

/// Above this many classes the confusion matrices label superclasses (at their centres) instead of
/// classes: 100 class labels are unreadable at 5 px a row and cost plotly ~0.3 s per matrix to lay out.
pub(crate) const CLASS_TICKS_MAX: usize = 40;

/// A confusion matrix (rates per true class) with classes in `names` order, grouped by superclass: the
/// groups end at `bounds` and are named `groups`. Hovering a cell names both classes.
pub(crate) fn confusion_chart(
    id: &str,
    title: &str,
    names: &[&str],
    z: &[Vec<f64>],
    bounds: &[usize],
    groups: &[String],
) -> Chart {
    let n = names.len() as f64;
    let line = |x0: f64, x1: f64, y0: f64, y1: f64| {
        Shape::new()
            .shape_type(ShapeType::Line)
            .x0(x0)
            .x1(x1)
            .y0(y0)
            .y1(y1)
            .line(ShapeLine::new().color("#222").width(1.0))
    };
    let shapes: Vec<Shape> = bounds[..bounds.len().saturating_sub(1)]
        .iter()
        .flat_map(|&b| {
            let p = b as f64 - 0.5;
            [line(p, p, -0.5, n - 0.5), line(-0.5, n - 0.5, p, p)]
        })
        .collect();
    // Cells are addressed by class name (a category axis), so hovering names both classes; by index
    // where two classes share a name.
    let unique = names.iter().collect::<std::collections::BTreeSet<_>>().len() == names.len();
    let axis: Vec<String> = if unique {
        names.iter().map(|s| s.to_string()).collect()
    } else {
        (0..names.len()).map(|i| i.to_string()).collect()
    };
    let scale = |stops: &[(f64, &str)]| {
        ColorScale::Vector(stops.iter().map(|&(v, c)| ColorScaleElement(v, c.to_string())).collect())
    };
    // Trace 0 is grey (everything), trace 1 coloured (the page script blanks what a selection leaves out).
    let trace = |colors: ColorScale, show: bool| {
        HeatMap::new(axis.clone(), axis.clone(), z.to_vec())
            .zmin(0.0)
            .zmax(1.0)
            .color_scale(colors)
            .show_scale(show)
            .hover_template("true %{y}, predicted %{x}: %{z:.3f}<extra></extra>")
    };
    let mut plot = Plot::new();
    plot.add_trace(trace(scale(&[(0.0, "#fafafa"), (1.0, "#6b6b6b")]), false));
    plot.add_trace(trace(scale(&[(0.0, "#f7fbff"), (0.1, "#c6dbef"), (0.4, "#4292c6"), (1.0, "#08306b")]), true));
    let (tick_at, tick_text, size): (Vec<usize>, Vec<String>, usize) = if names.len() <= CLASS_TICKS_MAX {
        ((0..names.len()).collect(), names.iter().map(|s| s.to_string()).collect(), 8)
    } else {
        let starts = std::iter::once(0).chain(bounds.iter().copied());
        let centres = starts.zip(bounds).map(|(a, &b)| (a + b.max(a + 1) - 1) / 2).collect();
        (centres, groups.to_vec(), 10)
    };
    let ticks = || {
        Axis::new()
            .tick_mode(TickMode::Array)
            .tick_values(tick_at.iter().map(|&i| i as f64).collect())
            .tick_text(tick_text.clone())
            .tick_font(Font::new().size(size))
    };
    plot.set_layout(
        Layout::new()
            .title(title)
            .x_axis(ticks().title("predicted").tick_angle(-60.0))
            // The first class on top: the y range runs from the last row to the first.
            .y_axis(ticks().title("true").range(vec![n - 0.5, -0.5]))
            .shapes(shapes)
            .margin(Margin::new().left(90).right(10).top(40).bottom(90)),
    );
    Chart { id: id.into(), json: plot.to_json(), height_px: 560 }
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
    let mut plot = Plot::new();
    for (name, x, y, dashed) in lines {
        plot.add_trace(
            Scatter::new(x, y)
                .mode(Mode::LinesMarkers)
                .name(name)
                .marker(Marker::new().size(4))
                .line(Line::new().dash(if dashed { DashType::Dash } else { DashType::Solid })),
        );
    }
    plot.set_layout(
        Layout::new()
            .title(title)
            .x_axis(Axis::new().title(xt))
            .y_axis(Axis::new().title(yt))
            .legend(Legend::new().orientation(Orientation::Horizontal).y(-0.25))
            .margin(Margin::new().left(50).right(10).top(40).bottom(40)),
    );
    Chart { id: id.into(), json: plot.to_json(), height_px: 440 }
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
    let mut plot = Plot::new();
    for c in rows.iter().map(|&r| pred[r]).collect::<std::collections::BTreeSet<_>>() {
        let rs: Vec<usize> = rows.iter().copied().filter(|&r| pred[r] == c).collect();
        let name = class_names.get(c as usize).cloned().unwrap_or_else(|| c.to_string());
        plot.add_trace(
            Scatter::new(rs.iter().map(|&r| x[r]).collect(), rs.iter().map(|&r| y[r]).collect())
                .web_gl_mode(true)
                .mode(Mode::Markers)
                .name(name)
                .marker(Marker::new().size(5))
                .text_array(rs.iter().map(|&r| format!("#{}", idx[r])).collect())
                .hover_template("%{text} predicted %{fullData.name}<extra></extra>"),
        );
    }
    let bare = || Axis::new().show_tick_labels(false).zero_line(false);
    plot.set_layout(
        Layout::new()
            .title(format!("{model}: {method}").as_str())
            .x_axis(bare())
            .y_axis(bare().scale_anchor("x"))
            .margin(Margin::new().left(10).right(10).top(40).bottom(10)),
    );
    Ok(Chart { id: notebook::unique_id("kd-embed"), json: plot.to_json(), height_px: 560 })
}
