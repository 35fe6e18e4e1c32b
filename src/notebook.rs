//! Rich, offline display of frames, charts and images in Jupyter notebooks (evcxr kernel).
//!
//! evcxr shows a value richly when its type has an `evcxr_display` method that prints
//! `EVCXR_BEGIN_CONTENT <mime>` … `EVCXR_END_CONTENT` blocks. polars has no such method, and plotly's
//! own displays either emit a MIME type classic Jupyter does not render or load plotly.js from a CDN;
//! offline both show nothing. So a notebook calls:
//!
//! - [`init`] once, in its first cell: it inlines plotly.js into the notebook (one copy per notebook);
//! - [`table`] for a polars `DataFrame` (HTML table + plain text);
//! - [`chart`] for a plotly `Plot` (a `div` and a short script; no copy of plotly.js per chart);
//! - [`image`] for an RGB image (inline PNG), e.g. a saliency overlay.
//!
//! Each wrapper also has [`Html::html`] / [`Chart::html`] etc., so the same content goes into reports.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use polars::prelude::{AnyValue, Column, DataFrame};

fn emit(mime: &str, content: &str) {
    println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
}

/// The plotly.js bundle that `plotly` ships (with its `plotly_embed_js` feature), without MathJax.
pub fn plotly_js() -> String {
    let all = plotly::Plot::offline_js_sources();
    let start = all.find('>').map(|i| i + 1).unwrap_or(0);
    let end = all[start..].find("</script>").map(|i| start + i).unwrap_or(all.len());
    all[start..end].to_string()
}

/// The one-time notebook set-up: shows a short confirmation and inlines plotly.js.
pub struct Init;

/// Call in the first cell of a notebook (as the cell's last expression) so that later [`chart`]s
/// render without network access.
pub fn init() -> Init {
    Init
}

impl Init {
    pub fn evcxr_display(&self) {
        let html = format!(
            "<script type=\"text/javascript\">{}</script>\n<div class=\"kdscope-init\">kdscope {} ready \
             (plotly.js inlined, charts work offline)</div>",
            plotly_js(),
            env!("CARGO_PKG_VERSION")
        );
        emit("text/html", &html);
    }
}

/// An HTML fragment with a plain-text alternative.
#[derive(Clone, Debug)]
pub struct Html {
    pub html: String,
    pub text: String,
}

impl Html {
    pub fn html(&self) -> &str {
        &self.html
    }

    pub fn evcxr_display(&self) {
        emit("text/plain", &self.text);
        emit("text/html", &self.html);
    }
}

/// A frame's column by name, found by comparing names one by one.
///
/// Prefer it to `DataFrame::column` for frames that may come from another notebook cell: evcxr
/// links a copy of polars into every cell, and a frame keeps a name index hashed with the hasher of
/// the cell that built it, so `DataFrame::column` in a later cell can miss a column that is there.
pub fn col<'a>(df: &'a DataFrame, name: &str) -> anyhow::Result<&'a Column> {
    df.columns().iter().find(|c| c.name().as_str() == name).ok_or_else(|| {
        let have: Vec<&str> = df.columns().iter().map(|c| c.name().as_str()).collect();
        anyhow::anyhow!("the frame has no column {name:?} (columns: {have:?})")
    })
}

/// Escapes `&`, `<`, `>` and quotes for HTML text and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One cell of a frame as text: floats with 4 decimals, strings without quotes.
pub fn cell_text(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::Float64(x) => format_float(*x),
        AnyValue::Float32(x) => format_float(*x as f64),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        other => other.to_string(),
    }
}

fn format_float(x: f64) -> String {
    if x.is_finite() && x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// Rows shown by [`table`] before eliding the middle of a long frame.
pub const MAX_ROWS: usize = 60;

/// A polars frame as an HTML table (head and tail of long frames, with a row count).
pub fn table(df: &DataFrame) -> Html {
    table_with(df, MAX_ROWS)
}

/// [`table`] with a chosen number of rows shown.
pub fn table_with(df: &DataFrame, max_rows: usize) -> Html {
    let n = df.height();
    let rows: Vec<Option<usize>> = if n <= max_rows {
        (0..n).map(Some).collect()
    } else {
        let head = max_rows - max_rows / 4;
        (0..head).map(Some).chain(std::iter::once(None)).chain((n - max_rows / 4..n).map(Some)).collect()
    };
    let cols = df.columns();
    let mut h = String::from("<table class=\"kdscope-frame\">\n<thead><tr>");
    for c in cols {
        let _ = write!(h, "<th>{}<br><small>{}</small></th>", escape(c.name()), escape(&c.dtype().to_string()));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        h.push_str("<tr>");
        match r {
            Some(i) => {
                for c in cols {
                    let v = c.get(i).map(|v| cell_text(&v)).unwrap_or_default();
                    let _ = write!(h, "<td>{}</td>", escape(&v));
                }
            }
            None => {
                let _ = write!(h, "<td colspan=\"{}\">…</td>", cols.len());
            }
        }
        h.push_str("</tr>\n");
    }
    let _ = write!(h, "</tbody></table>\n<small>{n} rows × {} columns</small>", cols.len());
    Html { html: h, text: format!("{df}") }
}

/// JSON made safe to embed in a `<script>` element: `<`, `>` and `&` (which occur only inside JSON
/// strings) become `\u003c`, `\u003e`, `\u0026`, so no string can end the script or open markup.
pub fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A unique element id for this process (charts of one notebook never collide).
pub fn unique_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// A plotly chart shown as a `div` plus a script that draws it with the page's plotly.js.
#[derive(Clone, Debug)]
pub struct Chart {
    pub id: String,
    pub json: String,
    pub height_px: u32,
}

/// Wraps a plotly `Plot` for display; needs [`init`] earlier in the notebook.
pub fn chart(plot: &plotly::Plot) -> Chart {
    Chart { id: unique_id("kdscope-chart"), json: plot.to_json(), height_px: 420 }
}

impl Chart {
    pub fn height(mut self, px: u32) -> Self {
        self.height_px = px;
        self
    }

    /// The `div` + `script` fragment (expects plotly.js loaded on the page).
    pub fn html(&self) -> String {
        let json = script_json(&self.json);
        format!(
            "<div id=\"{id}\" class=\"kdscope-chart\" style=\"width:100%;height:{h}px\"></div>\n\
             <script type=\"text/javascript\">(function() {{\n\
             var el = document.getElementById(\"{id}\"); var fig = {json};\n\
             function draw() {{\n\
             if (!window.Plotly) {{ el.textContent = \"plotly.js is not loaded: run kdscope::notebook::init() first\"; return; }}\n\
             var cfg = fig.config || {{}}; cfg.responsive = true;\n\
             Plotly.newPlot(el, fig.data, fig.layout || {{}}, cfg);\n\
             }}\n\
             // Draw once the page is laid out, so the chart takes its final width.\n\
             if (document.readyState === \"loading\") document.addEventListener(\"DOMContentLoaded\", draw); else draw();\n\
             }})();</script>",
            id = self.id,
            h = self.height_px,
        )
    }

    pub fn evcxr_display(&self) {
        emit("text/html", &self.html());
    }
}

/// An image shown inline as PNG.
#[derive(Clone, Debug)]
pub struct Png {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Encodes an RGB image as PNG for display (pass `scale` > 1 to enlarge small images crisply).
pub fn image(img: &image::RgbImage) -> Png {
    image_scaled(img, 1)
}

/// [`image`] enlarged `scale` times with nearest-neighbour sampling (32x32 images are tiny on screen).
pub fn image_scaled(img: &image::RgbImage, scale: u32) -> Png {
    let scale = scale.max(1);
    let big;
    let img = if scale > 1 {
        big = image::imageops::resize(
            img,
            img.width() * scale,
            img.height() * scale,
            image::imageops::FilterType::Nearest,
        );
        &big
    } else {
        img
    };
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).expect("PNG encoding into memory");
    Png { bytes, width: img.width(), height: img.height() }
}

/// Tiles images (all of the first image's size) into a grid `cols` wide, with a 2-px white gap.
pub fn grid(images: &[image::RgbImage], cols: usize) -> image::RgbImage {
    let Some(first) = images.first() else { return image::RgbImage::new(1, 1) };
    let (w, h, gap) = (first.width(), first.height(), 2u32);
    let cols = cols.clamp(1, images.len()) as u32;
    let rows = (images.len() as u32).div_ceil(cols);
    let mut out = image::RgbImage::from_pixel(cols * (w + gap) - gap, rows * (h + gap) - gap, image::Rgb([255; 3]));
    for (k, img) in images.iter().enumerate() {
        let (gx, gy) = ((k as u32 % cols) * (w + gap), (k as u32 / cols) * (h + gap));
        image::imageops::replace(&mut out, img, gx as i64, gy as i64);
    }
    out
}

impl Png {
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.bytes)
    }

    /// An `<img>` tag with the PNG as a data URI.
    pub fn html(&self) -> String {
        format!(
            "<img src=\"data:image/png;base64,{}\" width=\"{}\" height=\"{}\">",
            self.base64(),
            self.width,
            self.height
        )
    }

    pub fn evcxr_display(&self) {
        emit("image/png", &self.base64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn table_html_escapes_and_elides() {
        let df = df!("name" => ["a<b", "c"], "acc" => [0.5f64, 0.25]).unwrap();
        let t = table(&df);
        assert!(t.html.contains("<td>a&lt;b</td><td>0.5000</td>"), "{}", t.html);
        assert!(t.html.contains("<th>acc<br><small>f64</small></th>"));
        assert!(t.text.contains("a<b"));
        let long = df!("i" => (0..100i64).collect::<Vec<_>>()).unwrap();
        let t = table_with(&long, 8);
        assert_eq!(t.html.matches("<tr>").count(), 1 + 6 + 1 + 2);
        assert!(t.html.contains("<td>5</td>") && t.html.contains("<td>98</td>") && !t.html.contains("<td>50</td>"));
        assert!(t.html.contains("100 rows × 1 columns"));
    }

    #[test]
    fn chart_is_a_div_and_a_script_without_plotly_js() {
        let mut plot = plotly::Plot::new();
        plot.add_trace(plotly::Scatter::new(vec![1, 2], vec![3, 4]).name("</script>"));
        let c = chart(&plot);
        let h = c.html();
        assert!(h.starts_with(&format!("<div id=\"{}\"", c.id)));
        assert_eq!(h.matches("</script>").count(), 1, "a name cannot close the script early");
        assert!(h.len() < 2000, "no plotly.js copy per chart");
        assert_ne!(chart(&plot).id, c.id);
        let js = plotly_js();
        assert!(js.len() > 1_000_000 && js.contains("window.Plotly = Plotly") && !js.contains("<script"));
    }

    #[test]
    fn grid_places_tiles_with_gaps() {
        let tiles: Vec<_> = (0..5u8).map(|k| image::RgbImage::from_pixel(3, 2, image::Rgb([k, 0, 0]))).collect();
        let g = grid(&tiles, 2);
        assert_eq!((g.width(), g.height()), (2 * 3 + 2, 3 * 2 + 2 * 2));
        assert_eq!(g.get_pixel(5, 0)[0], 1, "second tile starts after the gap");
        assert_eq!(g.get_pixel(3, 0), &image::Rgb([255; 3]), "gap");
        assert_eq!(g.get_pixel(0, 8)[0], 4, "fifth tile on the third row");
    }

    #[test]
    fn png_round_trips() {
        let img = image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 80, y as u8 * 200, 7]));
        let png = image_scaled(&img, 4);
        assert_eq!((png.width, png.height), (12, 8));
        let back = image::load_from_memory(&png.bytes).unwrap().to_rgb8();
        assert_eq!(back.get_pixel(5, 7), &image::Rgb([80, 200, 7]));
        assert!(png.html().starts_with("<img src=\"data:image/png;base64,iVBOR"));
    }
}
