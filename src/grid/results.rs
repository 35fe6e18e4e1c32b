//! A grid's results: frames (every run, mean ± std per method), the [Re] study's comparison table, its
//! LaTeX, the chart, the report section and the exported files.
use std::path::{Path, PathBuf};

use polars::prelude::DataFrame;

use super::{slug, Grid, Metric, Pair, RunResult, TeacherResult};
use crate::metrics::column;
use crate::report::sections::blocks::{Block, Blocks};
use crate::report::Report;

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The results of a grid: every run's record and the teachers'.
#[derive(Clone, Debug)]
pub struct GridResults {
    pub name: String,
    pub grid: Grid,
    pub runs: Vec<RunResult>,
    pub teachers: Vec<TeacherResult>,
    /// The folder the grid ran in.
    pub out_dir: PathBuf,
}

impl GridResults {
    /// Method labels and pair labels in grid order.
    fn axes(&self) -> (Vec<String>, Vec<String>) {
        let mut labels: Vec<String> = Vec::new();
        let mut pairs: Vec<String> = Vec::new();
        for r in &self.runs {
            if !labels.contains(&r.label) {
                labels.push(r.label.clone());
            }
            if !pairs.contains(&r.pair) {
                pairs.push(r.pair.clone());
            }
        }
        (labels, pairs)
    }

    fn accs(&self, pair: &str, label: &str, metric: Metric) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.pair == pair && r.label == label)
            .map(|r| 100.0 * if metric == Metric::Best { r.best_acc } else { r.last_acc })
            .collect()
    }

    /// One row per run: pair, method label, method, seed, best and last accuracy (%), epochs, seconds.
    pub fn runs_frame(&self) -> anyhow::Result<DataFrame> {
        let r = &self.runs;
        Ok(DataFrame::new_infer_height(vec![
            column("pair", r.iter().map(|x| x.pair.clone()).collect::<Vec<_>>()),
            column("label", r.iter().map(|x| x.label.clone()).collect::<Vec<_>>()),
            column("method", r.iter().map(|x| x.method.clone()).collect::<Vec<_>>()),
            column("seed", r.iter().map(|x| x.seed).collect::<Vec<_>>()),
            column("best_acc_pct", r.iter().map(|x| 100.0 * x.best_acc).collect::<Vec<_>>()),
            column("last_acc_pct", r.iter().map(|x| 100.0 * x.last_acc).collect::<Vec<_>>()),
            column("epochs", r.iter().map(|x| x.epochs as u32).collect::<Vec<_>>()),
            column("seconds", r.iter().map(|x| x.seconds).collect::<Vec<_>>()),
        ])?)
    }

    /// One row per (pair, method label): number of seeds, mean and sample std of the best and last
    /// accuracy (%).
    pub fn summary_frame(&self) -> anyhow::Result<DataFrame> {
        let (labels, pairs) = self.axes();
        let mut rows = Vec::new();
        for p in &pairs {
            for l in &labels {
                let best = self.accs(p, l, Metric::Best);
                if best.is_empty() {
                    continue;
                }
                let last = self.accs(p, l, Metric::Last);
                rows.push((p.clone(), l.clone(), best.len() as u32, mean_std(&best), mean_std(&last)));
            }
        }
        Ok(DataFrame::new_infer_height(vec![
            column("pair", rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()),
            column("label", rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>()),
            column("seeds", rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            column("best_mean", rows.iter().map(|r| r.3 .0).collect::<Vec<_>>()),
            column("best_std", rows.iter().map(|r| r.3 .1).collect::<Vec<_>>()),
            column("last_mean", rows.iter().map(|r| r.4 .0).collect::<Vec<_>>()),
            column("last_std", rows.iter().map(|r| r.4 .1).collect::<Vec<_>>()),
        ])?)
    }

    /// The comparison table: a `method` column and one column per pair with `mean ± std` (%), the
    /// teacher's accuracy in the first row — the layout of the [Re] study's tables.
    pub fn table(&self, metric: Metric) -> anyhow::Result<DataFrame> {
        let (labels, pairs) = self.axes();
        let mut columns = vec![column(
            "method",
            std::iter::once("teacher".to_string()).chain(labels.iter().cloned()).collect::<Vec<_>>(),
        )];
        for p in &pairs {
            let teacher_arch = self.runs.iter().find(|r| &r.pair == p).map(|r| r.teacher.clone()).unwrap_or_default();
            let t = self.teachers.iter().find(|t| t.arch == teacher_arch);
            let mut cells = vec![t
                .map(|t| format!("{:.2}", 100.0 * if metric == Metric::Best { t.best_acc } else { t.last_acc }))
                .unwrap_or_default()];
            for l in &labels {
                let v = self.accs(p, l, metric);
                cells.push(if v.is_empty() {
                    String::new()
                } else {
                    let (m, s) = mean_std(&v);
                    format!("{m:.2} ± {s:.2}")
                });
            }
            columns.push(column(p, cells));
        }
        Ok(DataFrame::new_infer_height(columns)?)
    }

    /// [`table`](GridResults::table) as a booktabs LaTeX table (`±` as `$\pm$`, `→` as `$\to$`).
    pub fn latex_table(&self, metric: Metric, caption: &str) -> anyhow::Result<String> {
        let label =
            format!("tab:{}-{}", slug(&self.name).to_lowercase(), if metric == Metric::Best { "best" } else { "last" });
        let tex = crate::metrics::export::to_latex(&self.table(metric)?, caption, &label, 2);
        Ok(tex.replace('±', "$\\pm$").replace('→', "$\\to$"))
    }

    /// Test accuracy per method (mean over seeds, error bars one std), one bar group per pair.
    pub fn chart(&self, metric: Metric) -> plotly::Plot {
        use plotly::common::ErrorData;
        let (labels, pairs) = self.axes();
        let mut plot = plotly::Plot::new();
        for p in &pairs {
            let (mut x, mut y, mut e) = (Vec::new(), Vec::new(), Vec::new());
            for l in &labels {
                let v = self.accs(p, l, metric);
                if !v.is_empty() {
                    let (m, s) = mean_std(&v);
                    x.push(l.clone());
                    y.push(m);
                    e.push(s);
                }
            }
            plot.add_trace(
                plotly::Bar::new(x, y).name(p).error_y(ErrorData::new(plotly::common::ErrorType::Data).array(e)),
            );
        }
        plot.set_layout(
            plotly::Layout::new()
                .title(format!(
                    "{} test accuracy (%), mean ± std over seeds",
                    if metric == Metric::Best { "Best" } else { "Last-epoch" }
                ))
                .y_axis(plotly::layout::Axis::new().title("accuracy (%)")),
        );
        plot
    }

    /// Appends the grid's comparison to a report as its "Experiments" section: best- and last-epoch
    /// tables, the chart, every run and the LaTeX.
    pub fn add_to(&self, report: Report) -> anyhow::Result<Report> {
        let legend = format!(
            "{}: test accuracy (%), mean ± sample std over seeds {:?}; teachers trained once; rows are methods, columns teacher → student pairs.",
            self.name, self.grid.seeds
        );
        let latex = self.latex_table(Metric::Best, &format!("{}: top-1 accuracy (%)", self.name))?;
        Ok(report.section(
            Blocks::titled("experiments", "Experiments")
                .push(Block::table("Best-epoch accuracy (%)", &legend, &self.table(Metric::Best)?))
                .push(Block::table("Last-epoch accuracy (%)", "", &self.table(Metric::Last)?))
                .push(Block::chart(&format!("{}: accuracy by method", self.name), &self.chart(Metric::Best)))
                .push(Block::table("Every run", "", &self.runs_frame()?))
                .push(Block::preformatted("LaTeX (booktabs)", &latex)),
        ))
    }

    /// The checkpoint of a run's student (`pair` as [`Pair::label`], `label` the method's label).
    pub fn student_checkpoint(&self, pair: &str, label: &str, seed: u64) -> anyhow::Result<PathBuf> {
        let r =
            self.runs.iter().find(|r| r.pair == pair && r.label == label && r.seed == seed).ok_or_else(|| {
                anyhow::anyhow!("no run '{label}' of {pair} with seed {seed} in grid '{}'", self.name)
            })?;
        let p = Pair { teacher: r.teacher.clone(), assistants: r.assistants.clone(), student: r.student.clone() };
        Ok(self
            .out_dir
            .join("runs")
            .join(p.slug())
            .join(slug(label))
            .join(format!("seed{seed}"))
            .join(format!("{}.safetensors", slug(&r.student))))
    }

    /// A teacher's checkpoint.
    pub fn teacher_checkpoint(&self, arch: &str) -> anyhow::Result<PathBuf> {
        self.teachers
            .iter()
            .find(|t| t.arch == arch)
            .map(|t| t.checkpoint.clone())
            .ok_or_else(|| anyhow::anyhow!("grid '{}' has no teacher {arch}", self.name))
    }

    /// Writes `runs.csv`, `summary.csv`, `table_best.tex`, `table_last.tex` and `report.html` into `dir`.
    pub fn export(&self, dir: impl AsRef<Path>) -> anyhow::Result<PathBuf> {
        use crate::metrics::export::write_csv;
        let dir = dir.as_ref();
        write_csv(&self.runs_frame()?, dir.join("runs.csv"))?;
        write_csv(&self.summary_frame()?, dir.join("summary.csv"))?;
        for (m, f) in [(Metric::Best, "table_best.tex"), (Metric::Last, "table_last.tex")] {
            crate::io::write_atomic(
                &dir.join(f),
                self.latex_table(m, &format!("{}: top-1 accuracy (%)", self.name))?.as_bytes(),
            )?;
        }
        let report = self.add_to(Report::new(&self.name))?.fact("grid", &self.grid);
        report.write(dir.join("report.html"))
    }
}
