//! Headless Chromium for what only a browser does with a report: each chart as SVG and PNG through
//! plotly.js's own image export (the page's exact data and styling), PDF printing (the page's print
//! stylesheet), screenshots. Chromium is an optional runtime dependency, found as `KDSCOPE_CHROMIUM` or
//! `chromium`, `chromium-browser`, `google-chrome` on `PATH`; without it these functions say how to get
//! it. Every run is offline (no proxy, no host resolves), in a fresh profile, and killed after a
//! timeout.
//!
//! ```no_run
//! // `kdscope figures --report reports/demo.html --out reports/demo-figures` does this:
//! let written = kdscope::report::browser::write_figures("reports/demo.html".as_ref(), "figs".as_ref())?;
//! println!("{} files", written.len());
//! # Ok::<(), anyhow::Error>(())
//! ```
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use base64::Engine as _;

/// A Chromium binary and the flags of an offline headless run.
pub struct Chromium {
    pub bin: PathBuf,
    /// Wall-clock limit of one run.
    pub timeout: Duration,
}

impl Chromium {
    /// `KDSCOPE_CHROMIUM`, else the first of `chromium`, `chromium-browser`, `google-chrome` on `PATH`.
    pub fn find() -> anyhow::Result<Self> {
        let bin = match std::env::var_os("KDSCOPE_CHROMIUM") {
            Some(p) => {
                let p = PathBuf::from(p);
                ensure!(p.is_file(), "KDSCOPE_CHROMIUM is {}, which is not a file", p.display());
                p
            }
            None => ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .find_map(|name| {
                    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
                })
                .context(
                    "this needs headless Chromium, and none was found: install it (Debian/Ubuntu: \
                     `apt-get install chromium`) or set KDSCOPE_CHROMIUM to a Chromium or Chrome binary",
                )?,
        };
        Ok(Self { bin, timeout: Duration::from_secs(180) })
    }

    /// Runs Chromium on `url` with `extra` flags in a fresh profile; returns its standard output.
    pub fn run(&self, extra: &[String], url: &str) -> anyhow::Result<Vec<u8>> {
        let profile = tempfile::tempdir()?;
        let out = tempfile::NamedTempFile::new()?;
        let mut child = Command::new(&self.bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                // No network: every proxy connection and host lookup fails.
                "--proxy-server=127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(out.reopen()?)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not finish within {:?} on {url}", self.bin.display(), self.timeout);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("{} failed ({status}) on {url}: {}", self.bin.display(), err.trim());
        }
        Ok(std::fs::read(out.path())?)
    }

    /// The DOM after the page's scripts ran (within `budget_ms` of virtual time), in a window of
    /// `size` pixels.
    pub fn dump_dom(&self, url: &str, size: (u32, u32), budget_ms: u32) -> anyhow::Result<String> {
        let flags = [
            format!("--window-size={},{}", size.0, size.1),
            format!("--virtual-time-budget={budget_ms}"),
            "--dump-dom".into(),
        ];
        Ok(String::from_utf8_lossy(&self.run(&flags, url)?).into_owned())
    }

    /// A PNG of the window's view of `url`.
    pub fn screenshot(&self, url: &str, size: (u32, u32), out: &Path) -> anyhow::Result<()> {
        let flags = [
            format!("--window-size={},{}", size.0, size.1),
            "--virtual-time-budget=15000".into(),
            format!("--screenshot={}", out.display()),
        ];
        self.run(&flags, url)?;
        ensure!(out.is_file(), "Chromium wrote no screenshot to {}", out.display());
        Ok(())
    }

    /// `url` printed to PDF with the page's print stylesheet (no header or footer lines).
    pub fn print_pdf(&self, url: &str, out: &Path) -> anyhow::Result<()> {
        let flags = [
            "--virtual-time-budget=15000".to_string(),
            "--no-pdf-header-footer".into(),
            format!("--print-to-pdf={}", out.display()),
        ];
        self.run(&flags, url)?;
        ensure!(out.is_file(), "Chromium wrote no PDF to {}", out.display());
        Ok(())
    }
}

/// The `file://` URL of a local file.
pub fn file_url(path: &Path) -> anyhow::Result<String> {
    let abs = path.canonicalize().with_context(|| format!("{}", path.display()))?;
    Ok(format!("file://{}", abs.display()))
}

/// `html` with `js` run after the page's own scripts (a `<script>` before the last `</body>`).
pub fn with_script(html: &str, js: &str) -> anyhow::Result<String> {
    let at = html.rfind("</body>").context("the page has no </body>: not a kdscope report?")?;
    Ok(format!("{}<script type=\"text/javascript\">{js}</script>\n{}", &html[..at], &html[at..]))
}

/// One chart of a report, as plotly.js exported it.
pub struct Figure {
    /// The chart element's id on the page.
    pub id: String,
    /// The chart's title (may be empty).
    pub title: String,
    /// The SVG document.
    pub svg: String,
    /// The PNG (twice the on-page size).
    pub png: Vec<u8>,
}

/// The figure exporter run in the page: every plotly chart, in page order, as SVG and PNG at its
/// on-page size (1280 px wide window), into a JSON script element.
const EXPORT_JS: &str = r#"
document.addEventListener("DOMContentLoaded", function () {
  (async function () {
    var out = [], plots = document.querySelectorAll(".js-plotly-plot");
    for (var i = 0; i < plots.length; i++) {
      var el = plots[i], w = el.offsetWidth || 700, h = el.offsetHeight || 450;
      var svg = await Plotly.toImage(el, { format: "svg", width: w, height: h });
      var png = await Plotly.toImage(el, { format: "png", width: w, height: h, scale: 2 });
      var t = el.layout && el.layout.title;
      out.push({ id: el.id, title: (t && (t.text || (typeof t === "string" ? t : ""))) || "", svg: svg, png: png });
    }
    var s = document.createElement("script"); s.type = "application/json"; s.id = "kd-figures";
    s.textContent = JSON.stringify(out).replace(/</g, "\\u003c"); document.body.appendChild(s);
  })().catch(function (e) { document.documentElement.setAttribute("data-figures-error", String(e)); });
});
"#;

/// Every chart of the report at `report` as plotly.js exports it in Chromium.
pub fn figures(chromium: &Chromium, report: &Path) -> anyhow::Result<Vec<Figure>> {
    let html = std::fs::read_to_string(report).with_context(|| format!("reading the report {}", report.display()))?;
    ensure!(
        html.contains("window.Plotly"),
        "{} has no charts (plotly.js is not on the page): is it a kdscope report?",
        report.display()
    );
    let dir = tempfile::tempdir()?;
    let page = dir.path().join("figures.html");
    std::fs::write(&page, with_script(&html, EXPORT_JS)?)?;
    let dom = chromium.dump_dom(&file_url(&page)?, (1280, 1000), 60_000)?;
    if let Some(e) = attribute(&dom, "data-figures-error") {
        bail!("plotly.js could not export the charts of {}: {e}", report.display());
    }
    if let Some(e) = attribute(&dom, "data-js-errors") {
        bail!("the report's script failed in Chromium: {e}");
    }
    let open = "<script type=\"application/json\" id=\"kd-figures\">";
    let start = dom.find(open).context("Chromium stopped before the charts were exported")? + open.len();
    let end = dom[start..].find("</script>").context("truncated figure data")? + start;
    let raw: Vec<serde_json::Value> = serde_json::from_str(&dom[start..end]).context("figure data")?;
    raw.iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
            let svg = s("svg");
            let svg = svg.strip_prefix("data:image/svg+xml,").context("plotly.js returned no SVG data URL")?;
            let svg = percent_encoding::percent_decode_str(svg).decode_utf8()?.into_owned();
            let png = s("png");
            let png = png.strip_prefix("data:image/png;base64,").context("plotly.js returned no PNG data URL")?;
            let png = base64::engine::general_purpose::STANDARD.decode(png)?;
            Ok(Figure { id: s("id"), title: s("title"), svg, png })
        })
        .collect()
}

fn attribute(dom: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!("{name}=\""))? + name.len() + 2;
    Some(dom[at..].split('"').next().unwrap_or("").to_string())
}

/// A file-name stem from a title: lower-case letters and digits joined by `-` (at most 60 bytes, cut
/// between words).
pub fn slug(title: &str) -> String {
    let mut s = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let s = s.trim_end_matches('-');
    if s.len() <= 60 {
        return s.to_string();
    }
    // Cut at the last word boundary within 60 bytes (a word longer than that is cut inside).
    let cut = &s[..60];
    match cut.rfind('-') {
        Some(i) if i > 0 && s.as_bytes()[60] != b'-' => cut[..i].to_string(),
        _ => cut.trim_end_matches('-').to_string(),
    }
}

/// Writes every chart of `report` to `out` as `NN-title.svg` and `NN-title.png` (in page order), and
/// `figures.json` (file, chart id and title of each); returns the files written.
pub fn write_figures(report: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let figs = figures(&Chromium::find()?, report)?;
    ensure!(!figs.is_empty(), "{} has no charts", report.display());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = vec![];
    let mut index = vec![];
    for (n, f) in figs.iter().enumerate() {
        let name = slug(if f.title.is_empty() { &f.id } else { &f.title });
        let stem = format!("{:02}-{}", n + 1, if name.is_empty() { "chart" } else { &name });
        for (ext, bytes) in [("svg", f.svg.as_bytes()), ("png", f.png.as_slice())] {
            let p = out.join(format!("{stem}.{ext}"));
            crate::io::write_atomic(&p, bytes)?;
            written.push(p);
        }
        index.push(serde_json::json!({ "svg": format!("{stem}.svg"), "png": format!("{stem}.png"),
                                        "id": f.id, "title": f.title }));
    }
    let p = out.join("figures.json");
    crate::io::write_atomic(&p, serde_json::to_string_pretty(&index)?.as_bytes())?;
    written.push(p);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_injection() {
        assert_eq!(slug("teacher: resnet56 (outer)"), "teacher-resnet56-outer");
        assert_eq!(slug("M_k: mean JSD … (lower is better)"), "m-k-mean-jsd-lower-is-better");
        assert_eq!(slug("::"), "");
        assert!(slug(&"a".repeat(100)).len() == 60);
        assert_eq!(
            slug("M_k: mean JSD to the k nearest neighbours in 2-D (lower is better)"),
            "m-k-mean-jsd-to-the-k-nearest-neighbours-in-2-d-lower-is"
        );
        let page = with_script("<body><p>x</p></body></html>", "f()").unwrap();
        assert_eq!(page, "<body><p>x</p><script type=\"text/javascript\">f()</script>\n</body></html>");
        assert!(with_script("<p>", "f()").is_err());
        assert_eq!(attribute("<html data-x=\"a b\">", "data-x").as_deref(), Some("a b"));
    }

    #[test]
    fn a_missing_browser_is_named() {
        std::env::set_var("KDSCOPE_CHROMIUM", "/nonexistent/chromium");
        let e = Chromium::find().err().unwrap().to_string();
        std::env::remove_var("KDSCOPE_CHROMIUM");
        assert!(e.contains("KDSCOPE_CHROMIUM") && e.contains("not a file"), "{e}");
    }
}
