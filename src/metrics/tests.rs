use polars::prelude::*;

use super::export::*;
use super::*;

/// Predictions whose arg-max is `pred` (logit 2 on the predicted class, 1 on `second`, 0 elsewhere).
fn preds(k: usize, labels: &[usize], pred: &[usize], second: &[usize]) -> Predictions {
    let mut logits = vec![0.0f32; labels.len() * k];
    for (i, (&p, &s)) in pred.iter().zip(second).enumerate() {
        logits[i * k + s] = 1.0;
        logits[i * k + p] = 2.0;
    }
    Predictions { num_classes: k, labels: labels.to_vec(), logits }
}

fn f64s(df: &DataFrame, c: &str) -> Vec<f64> {
    df.column(c).unwrap().f64().unwrap().into_no_null_iter().collect()
}

fn u64s(df: &DataFrame, c: &str) -> Vec<u64> {
    df.column(c).unwrap().u64().unwrap().into_no_null_iter().collect()
}

fn close(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-12, "{a:?} vs {b:?}");
    }
}

/// 4 classes in 2 superclasses {0,1}, {2,3}; class 3 never predicted.
fn small() -> Evaluation {
    let labels = [0, 0, 0, 1, 1, 2, 2, 3];
    let pred = [0, 0, 1, 1, 0, 2, 2, 2];
    let second = [1, 1, 0, 3, 1, 3, 3, 1];
    let h = Hierarchy::new(vec!["A".into(), "B".into()], vec![0, 0, 1, 1]).unwrap();
    let names = ["c0", "c1", "c2", "c3"].map(String::from).to_vec();
    Evaluation::new("m", preds(4, &labels, &pred, &second), names, Some(h))
}

#[test]
fn per_class_by_hand() {
    let df = per_class(&small()).unwrap();
    // class 0: support 3, predicted 3 (imgs 0,1,4), correct 2 -> P 2/3, R 2/3, F1 2/3
    // class 1: support 2, predicted 2 (imgs 2,3), correct 1 -> P 1/2, R 1/2
    // class 2: support 2, predicted 3, correct 2 -> P 2/3, R 1, F1 0.8
    // class 3: support 1, predicted 0 -> P 0 (zero division), R 0, F1 0
    assert_eq!(u64s(&df, "support"), vec![3, 2, 2, 1]);
    assert_eq!(u64s(&df, "predicted"), vec![3, 2, 3, 0]);
    close(&f64s(&df, "precision"), &[2. / 3., 0.5, 2. / 3., 0.0]);
    close(&f64s(&df, "recall"), &[2. / 3., 0.5, 1.0, 0.0]);
    close(&f64s(&df, "f1"), &[2. / 3., 0.5, 0.8, 0.0]);
    close(&f64s(&df, "accuracy"), &f64s(&df, "recall"));
    // top-5 of 4 classes is always a hit
    close(&f64s(&df, "top5_accuracy"), &[1.0; 4]);
    let sc: Vec<String> =
        df.column("superclass").unwrap().str().unwrap().iter().map(|s| s.unwrap().to_string()).collect();
    assert_eq!(sc, ["A", "A", "B", "B"]);
}

#[test]
fn per_superclass_and_overall_by_hand() {
    let ev = small();
    let df = per_superclass(&ev).unwrap();
    // superclass labels A A A A A B B B; predictions A A A A A B B B -> all correct
    close(&f64s(&df, "precision"), &[1.0, 1.0]);
    close(&f64s(&df, "class_f1_mean"), &[(2. / 3. + 0.5) / 2., 0.4]);
    close(&f64s(&df, "class_accuracy_mean"), &[(2. / 3. + 0.5) / 2., 0.5]);
    let o = overall(&ev).unwrap();
    close(&f64s(&o, "accuracy"), &[5. / 8.]);
    close(&f64s(&o, "superclass_accuracy"), &[1.0]);
    close(&f64s(&o, "macro_precision"), &[(2. / 3. + 0.5 + 2. / 3. + 0.0) / 4.]);
    close(&f64s(&o, "macro_f1"), &[(2. / 3. + 0.5 + 0.8) / 4.]);
    close(&f64s(&o, "micro_f1"), &[5. / 8.]);
    let c = confusion(&ev).unwrap();
    assert_eq!(c.height(), 16);
    // row true=0: predicted 0 twice, 1 once
    assert_eq!(&u64s(&c, "count")[0..4], &[2, 1, 0, 0]);
    close(&f64s(&c, "rate")[0..4], &[2. / 3., 1. / 3., 0., 0.]);
    assert_eq!(u64s(&superclass_confusion(&ev).unwrap(), "count"), vec![5, 0, 0, 3]);
    // mistakes: 0->1 (1), 1->0 (1), 3->2 (1); ties in true-then-predicted order
    let top = top_confusions(&ev, 2).unwrap();
    let t: Vec<&str> = top.column("true_class").unwrap().str().unwrap().iter().map(|s| s.unwrap()).collect();
    assert_eq!(t, ["c0", "c1"]);
    close(&f64s(&top, "rate"), &[1. / 3., 0.5]);
    assert_eq!(top_confusions(&ev, 10).unwrap().height(), 3);
}

#[derive(serde::Deserialize)]
struct Sk {
    num_classes: usize,
    y_true: Vec<usize>,
    y_pred: Vec<usize>,
    precision: Vec<f64>,
    recall: Vec<f64>,
    f1: Vec<f64>,
    support: Vec<u64>,
    #[serde(rename = "macro")]
    macro_avg: Vec<f64>,
    micro: Vec<f64>,
    accuracy: f64,
    confusion: Vec<Vec<u64>>,
}

#[test]
fn matches_scikit_learn() {
    let sk: Sk = serde_json::from_str(include_str!("../../tests/fixtures/sklearn_metrics.json")).unwrap();
    let k = sk.num_classes;
    let second: Vec<usize> = sk.y_pred.iter().map(|&p| (p + 1) % k).collect();
    let names = (0..k).map(|c| format!("c{c}")).collect();
    let ev = Evaluation::new("m", preds(k, &sk.y_true, &sk.y_pred, &second), names, None);
    let df = per_class(&ev).unwrap();
    close(&f64s(&df, "precision"), &sk.precision);
    close(&f64s(&df, "recall"), &sk.recall);
    close(&f64s(&df, "f1"), &sk.f1);
    assert_eq!(u64s(&df, "support"), sk.support);
    let o = overall(&ev).unwrap();
    close(&[f64s(&o, "macro_precision")[0], f64s(&o, "macro_recall")[0], f64s(&o, "macro_f1")[0]], &sk.macro_avg);
    close(&[f64s(&o, "micro_precision")[0], f64s(&o, "micro_recall")[0], f64s(&o, "micro_f1")[0]], &sk.micro);
    close(&f64s(&o, "accuracy"), &[sk.accuracy]);
    assert!(f64s(&o, "superclass_accuracy")[0].is_nan(), "no hierarchy");
    let cm = confusion_matrix(&ev);
    for t in 0..k {
        for p in 0..k {
            assert_eq!(cm.get(t, p), sk.confusion[t][p], "confusion[{t}][{p}]");
        }
    }
    assert!(per_superclass(&ev).unwrap_err().to_string().contains("no class hierarchy"));
}

#[test]
fn teacher_student_comparison_by_hand() {
    let t = small();
    // the student predicts every image as class 0 except image 5 (class 2)
    let s_pred = [0, 0, 0, 0, 0, 2, 0, 0];
    let mut s = small();
    s.predictions = preds(4, &t.predictions.labels, &s_pred, &[1; 8]);
    s.name = "s".into();
    let df = compare_classes(&t, &s).unwrap();
    // teacher predicted 0,0,1,1,0,2,2,2; agreement per class: c0 imgs 0,1,2 -> 2/3; c1 imgs 3,4 -> 1/2;
    // c2 imgs 5,6 -> 1/2; c3 img 7 -> 0
    close(&f64s(&df, "agreement"), &[2. / 3., 0.5, 0.5, 0.0]);
    // student accuracy on class 0 = 1, teacher 2/3
    close(&f64s(&df, "delta_accuracy")[0..1], &[1.0 - 2. / 3.]);
    // KL on image 0: teacher logits (2,1,0,0) vs student (2,1,0,0) -> 0; image 2: teacher (1,2,0,0) vs (2,1,0,0)
    let sm = |v: [f64; 4]| {
        let z: f64 = v.iter().map(|x| x.exp()).sum();
        v.map(|x| x.exp() / z)
    };
    let (a, b) = (sm([1., 2., 0., 0.]), sm([2., 1., 0., 0.]));
    let kl2: f64 = a.iter().zip(&b).map(|(p, q)| p * (p / q).ln()).sum();
    assert!((f64s(&df, "kl_teacher_student")[0] - kl2 / 3.0).abs() < 1e-6);
    let sdf = compare_superclasses(&t, &s).unwrap();
    assert_eq!(sdf.height(), 2);
    close(&f64s(&sdf, "agreement"), &[3. / 5., 1. / 3.]);
    // a student on other images is refused
    let mut other = small();
    other.predictions.labels[0] = 1;
    assert!(compare_classes(&t, &other).is_err());
}

#[test]
fn exports_round_trip() {
    let df = per_class(&small()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_csv(&df, dir.path().join("a/pc.csv")).unwrap();
    let back = read_csv(dir.path().join("a/pc.csv")).unwrap();
    assert_eq!(back.shape(), df.shape());
    close(&f64s(&back, "f1"), &f64s(&df, "f1"));
    write_parquet(&df, dir.path().join("pc.parquet")).unwrap();
    let back = read_parquet(dir.path().join("pc.parquet")).unwrap();
    assert!(back.equals(&df), "{back}\n{df}");
    write_json(&df, dir.path().join("pc.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("pc.json")).unwrap()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert_eq!(v[2]["class"], "c2");
    assert_eq!(v[2]["f1"].as_f64().unwrap(), 0.8);
    assert_eq!(v[3]["predicted"], 0);
    let tex = to_latex(&df.select(["class", "f1"]).unwrap(), "Per-class F1 & more", "tab:f1", 3);
    assert!(tex.contains("\\caption{Per-class F1 \\& more}"));
    assert!(tex.contains("\\begin{tabular}{lr}\n\\toprule\nclass & f1 \\\\\n\\midrule\nc0 & 0.667 \\\\\n"));
    assert!(tex.contains("c2 & 0.800 \\\\\nc3 & 0.000 \\\\\n\\bottomrule"));
    assert_eq!(latex_escape("a_b%c<d>"), "a\\_b\\%c\\textless{}d\\textgreater{}");
}
