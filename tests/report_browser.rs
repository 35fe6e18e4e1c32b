//! Opens a generated teacher-vs-student report in headless Chromium with networking disabled and checks
//! that every chart rendered, the page script ran without errors and the superclass selection (from the
//! URL) filtered the image corpus, and the pop-up drew both models' saliency maps. Keeps a screenshot in `target/tmp/report-browser/` (CI artifact).
//!
//! Needs Chromium (`apt-get install chromium`; `.ci/run` installs it). Set `KDSCOPE_CHROMIUM` to use
//! another binary, or `KDSCOPE_SKIP_BROWSER=1` to skip where no browser can be installed.
use std::path::{Path, PathBuf};
use std::process::Command;

use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
use kdscope::embed::{self, DarkSightConfig, EmbedConfig, TsneConfig};
use kdscope::explain::{section, SectionConfig};
use kdscope::metrics::Evaluation;
use kdscope::models::Model;
use kdscope::report::KdViews;
use kdscope::train::Predictions;

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("KDSCOPE_CHROMIUM") {
        return Some(p.into());
    }
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    })
}

fn browser(bin: &Path, profile: &Path, extra: &[&str], url: &str) -> std::process::Output {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // No network: every proxy connection and host lookup fails.
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn report_renders_offline_in_chromium() {
    let Some(bin) = chromium() else {
        if std::env::var("KDSCOPE_SKIP_BROWSER").is_ok() {
            eprintln!("KDSCOPE_SKIP_BROWSER set: browser test skipped");
            return;
        }
        panic!("no Chromium found: apt-get install chromium (or set KDSCOPE_CHROMIUM / KDSCOPE_SKIP_BROWSER=1)");
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let mut test = builtin_dataset(&SynthConfig { train_per_class: 1, test_per_class: 2, ..Default::default() }).test;
    test.class_names[0] = "<script>alert(1)</script>".into();
    // Two fake models: the teacher is right on every image, the student on the even-numbered ones.
    let model = |name: &str, right: &dyn Fn(usize) -> bool| {
        let logits = test
            .labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| {
                let guess = if right(i) { l } else { (l + 1) % 20 };
                (0..20).map(move |c| if c == guess { 3.0 } else { (c % 3) as f32 * 0.1 })
            })
            .collect();
        let p = Predictions { num_classes: 20, labels: test.labels.clone(), logits };
        Evaluation::new(name, p, test.class_names.clone(), test.hierarchy.clone())
    };
    let report = KdViews::new(model("teacher", &|_| true), model("student", &|i| i % 2 == 0));
    // Explanations from two small untrained networks (the report only reads their maps and frames).
    let (tm, sm) = (Model::build("resnet8", 20, 1).unwrap(), Model::build("resnet8", 20, 2).unwrap());
    let cfg = SectionConfig { samples: 16, batch: 8, examples: 4, ..Default::default() };
    let ex = section(("teacher", &tm), ("student", &sm), None, &test, &report.corpus_indices(&test), &cfg).unwrap();
    // Embeddings of the same two networks (short schedules: 40 points).
    let ecfg = EmbedConfig {
        darksight: DarkSightConfig::quick(200),
        tsne: TsneConfig { perplexity: 5.0, iters: 300, exaggeration_iters: 100, ..Default::default() },
        kmax: 5,
        outliers: 4,
        ..Default::default()
    };
    let emb = embed::section(("teacher", &tm), ("student", &sm), &test, &ecfg).unwrap();
    let report = report.explanations(ex).embeddings(emb);
    let path = report.report(&test).unwrap().write(dir.join("report.html")).unwrap();
    // Select the blue superclass and open the panel of the first corpus image.
    let url = format!("file://{}#super=blue&image=0&emb=1:3", path.canonicalize().unwrap().display());

    let out = browser(&bin, &dir.join("profile-dom"), &["--dump-dom"], &url);
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    std::fs::write(dir.join("dom.html"), &dom).unwrap();
    assert!(dom.contains("data-ready=\"1\""), "the page script did not finish");
    let errors = dom.split("data-js-errors=\"").nth(1).map(|e| e.split('"').next().unwrap_or("").to_string());
    assert!(errors.is_none(), "script errors: {errors:?}");
    for id in ["kd-polar-precision", "kd-polar-recall", "kd-polar-f1", "kd-cm-teacher", "kd-cm-student"] {
        let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id} missing"));
        let rest = &dom[start..];
        let end = rest[10..].find("id=\"kd-").map(|e| e + 10).unwrap_or(rest.len());
        assert!(rest[..end].contains("main-svg"), "chart {id} did not render");
    }
    // `#super=blue` selected the blue superclass: 4 classes x 2 images of 40 are shown.
    assert!(dom.contains("8 of 40 images"), "corpus filter");
    assert_eq!(dom.matches("<script>alert(1)").count(), 0);
    // The panel shows the image's label and both models' top-5; image 0 is class 0 (the hostile name),
    // shown as text, and the student is right on it (even position).
    let panel = &dom[dom.find("id=\"panel\"").expect("panel")..];
    assert!(panel.starts_with("id=\"panel\" style=\"display: block;\""), "panel not opened");
    assert!(panel.contains("true: &lt;script&gt;alert(1)&lt;/script&gt; (red)"), "{}", &panel[..400.min(panel.len())]);
    assert!(panel.contains("teacher (teacher) top-5") && panel.contains("student (student) top-5"));
    assert_eq!(panel.split("</table>").next().unwrap().matches("<tr").count(), 5, "five rows of top-5");
    // Both models' maps (first method: grad-cam) drawn over the image, with a method selector.
    assert_eq!(panel.matches("data-drawn=\"1\"").count(), 2, "two saliency maps drawn");
    assert!(panel.contains("<option value=\"guided-backprop\">"), "method selector");
    assert!(panel.contains("teacher: teacher") && panel.contains("student: student"));
    // The explanations section: quality rows for both models, UniCAM scores, agreement, examples.
    let ex = &dom[dom.find("id=\"explanations\"").expect("explanations section")..];
    assert!(ex.contains("average_drop") && ex.contains("rs_distilled") && ex.contains("top_iou"));
    assert_eq!(ex.matches("class=\"explain-example\"").count(), 4);
    // The embeddings section: both scatter plots, the rejection and M_k charts, the point shown from
    // the URL (#emb=1:3: student side, fourth point) with its image and both models' top-3.
    let em = &dom[dom.find("id=\"embeddings\"").expect("embeddings section")..];
    for id in ["emb-plot-0", "emb-plot-1", "kd-reject-0", "kd-reject-1", "kd-fidelity"] {
        let start = em.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id} missing"));
        assert!(em[start..].contains("main-svg"), "chart {id} did not render");
    }
    let scatter = &em[em.find("id=\"emb-plot-0\"").unwrap()..em.find("id=\"emb-plot-1\"").unwrap()];
    // WebGL where available, else SVG (headless Chromium here has no WebGL): 40 points either way.
    if scatter.contains("data-trace=\"scatter\"") {
        assert_eq!(scatter.matches("class=\"point\"").count(), 40, "SVG points");
    } else {
        assert!(scatter.contains("data-trace=\"scattergl\"") && scatter.contains("gl-container"), "WebGL scatter");
    }
    let info = &em[em.find("id=\"emb-info\"").expect("info box")..];
    assert!(info.starts_with("id=\"emb-info\" data-point=\"1:3\""), "{}", &info[..200.min(info.len())]);
    assert!(info.contains("data:image/png;base64,") && info.contains("image #3"));
    assert!(info.contains("teacher (teacher)") && info.contains("student (student)"));
    assert!(em.contains("<option value=\"t-SNE features\">") && em.contains("<option value=\"DarkSight\">"));
    assert_eq!(em.matches("class=\"outlier\"").count(), 8, "4 outliers per model");
    assert!(em.contains("M_5") && em.contains("agreement"), "summary table");

    browser(
        &bin,
        &dir.join("profile-shot"),
        &["--window-size=1280,2400", &format!("--screenshot={}", dir.join("report.png").display())],
        &url,
    );
    let png = std::fs::read(dir.join("report.png")).expect("screenshot written");
    assert!(png.len() > 10_000 && png.starts_with(b"\x89PNG"));
}

/// `kdscope report` from `.npy` logits made elsewhere (no models, no images): every chart that needs no
/// model renders offline, the page script runs without errors, and the page says why explanations are
/// missing.
#[test]
fn report_from_logits_renders_offline_in_chromium() {
    let Some(bin) = chromium() else {
        if std::env::var("KDSCOPE_SKIP_BROWSER").is_ok() {
            return;
        }
        panic!("no Chromium found: apt-get install chromium (or set KDSCOPE_CHROMIUM / KDSCOPE_SKIP_BROWSER=1)");
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-browser-logits");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import");
    let names = dir.join("classes.txt");
    std::fs::write(&names, (0..10).map(|c| format!("c{c}\n")).collect::<String>()).unwrap();
    let hierarchy = dir.join("hierarchy.csv");
    std::fs::write(
        &hierarchy,
        (0..10).map(|c| format!("c{c},{}\n", if c < 5 { "low" } else { "high" })).collect::<String>(),
    )
    .unwrap();
    let out = dir.join("report.html");
    let status = Command::new(env!("CARGO_BIN_EXE_kdscope"))
        .args(["report", "--teacher-logits"])
        .arg(fx.join("teacher_logits.npy"))
        .arg("--student-logits")
        .arg(fx.join("student_logits.npy"))
        .arg("--labels")
        .arg(fx.join("labels.npy"))
        .arg("--class-names")
        .arg(&names)
        .arg("--hierarchy")
        .arg(&hierarchy)
        .args(["--embed", "--embed-points", "40", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("file://{}", out.canonicalize().unwrap().display());
    let dom = String::from_utf8_lossy(&browser(&bin, &dir.join("profile"), &["--dump-dom"], &url).stdout).to_string();
    std::fs::write(dir.join("dom.html"), &dom).unwrap();
    assert!(dom.contains("data-ready=\"1\""), "the page script did not finish");
    let errors = dom.split("data-js-errors=\"").nth(1).map(|e| e.split('"').next().unwrap_or("").to_string());
    assert!(errors.is_none(), "script errors: {errors:?}");
    for id in
        ["kd-polar-recall", "kd-cm-teacher", "kd-cm-student", "emb-plot-0", "emb-plot-1", "kd-reject-0", "kd-fidelity"]
    {
        let start = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("{id} missing"));
        assert!(dom[start..].contains("main-svg"), "chart {id} did not render");
    }
    assert!(dom.contains(">low<") && dom.contains(">high<"), "the hierarchy's superclasses");
    assert!(!dom.contains("id=\"corpus\""), "no image corpus without images");
    assert!(dom.contains("explanations need a model"));
}
