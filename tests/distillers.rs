//! Distillation methods against a float64 PyTorch reference (`tests/fixtures/make_distill_reference.py`)
//! on small formula-given features and modules, and end-to-end training on the built-in dataset.
use std::collections::BTreeMap;

use dfdx::prelude::*;
use kdscope::distill::review_kd::{ReviewKd, ReviewKdConfig};
use kdscope::models::{FeatureLayout, Stage};
use kdscope::nn::{Shape4, Store, Var};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    n: usize,
    reviewkd: BTreeMap<String, ReviewCase>,
}

#[derive(Deserialize)]
struct ReviewCase {
    student: Vec<(usize, usize)>,
    teacher: Vec<(usize, usize)>,
    config: BTreeMap<String, bool>,
    loss: f64,
    input_grads: Vec<Vec<f64>>,
    param_grad_norms: BTreeMap<String, f64>,
}

fn reference() -> Reference {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/distill_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture's parameter formula (same as the VGG reference's).
fn value(name: &str, shape: &[usize], i: usize) -> f32 {
    let s = name.bytes().map(|b| b as usize).sum::<usize>() % 1000;
    let v = (12.9898 * i as f64 + 0.011 * s as f64).sin();
    let x = if name.ends_with("bias") {
        0.1 * v
    } else if shape.len() == 4 {
        v * (2.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt()
    } else if shape.len() == 2 {
        v * (1.0 / shape[1] as f64).sqrt()
    } else {
        1.0 + 0.2 * v
    };
    x as f32
}

/// The fixture's input formula.
fn feature(tag: &str, shape: Shape4, relu: bool) -> Var {
    let s = tag.bytes().map(|b| b as usize).sum::<usize>() % 1000;
    let v = (0..shape.numel())
        .map(|i| {
            let x = ((0.7 * i as f64 + 0.013 * s as f64).sin() * (1.0 + 0.5 * (0.11 * i as f64).cos())) as f32;
            if relu {
                x.max(0.0)
            } else {
                x
            }
        })
        .collect();
    Var::from_vec(v, shape)
}

fn set_by_formula(store: &mut Store) {
    let ids: Vec<(String, Vec<usize>)> = store.params.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
    for (name, shape) in ids {
        let n = shape.iter().product();
        let id = store.find(&name).unwrap();
        store.set(id, (0..n).map(|i| value(&name, &shape, i)).collect());
    }
}

fn layout(levels: &[(usize, usize)]) -> FeatureLayout {
    let (stages, pool) = levels.split_at(levels.len() - 1);
    FeatureLayout {
        stages: stages
            .iter()
            .enumerate()
            .map(|(i, &(c, h))| Stage {
                feat: format!("s{i}"),
                preact: format!("s{i}.pre"),
                channels: c,
                height: h,
                width: h,
            })
            .collect(),
        pool_channels: pool[0].0,
    }
}

/// `got` within `rel` of `want`, or within `floor` of it when both are tiny (gradients that are zero
/// analytically come out as float32 rounding noise).
fn close_or(got: f64, want: f64, rel: f64, floor: f64, what: &str) {
    assert!((got - want).abs() <= (rel * want.abs()).max(floor), "{what}: {got} vs PyTorch {want}");
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    close_or(got, want, rel, 1e-7, what)
}

#[test]
fn reviewkd_matches_pytorch_in_every_ablation() {
    let r = reference();
    assert_eq!(r.reviewkd.len(), 12);
    for (name, case) in &r.reviewkd {
        let c = &case.config;
        let cfg = ReviewKdConfig {
            review: c["review"],
            residual: c["residual"],
            attention: c["attention"],
            hcl: c["hcl"],
            residual_from_output: c["residual_from_output"],
            ..ReviewKdConfig::default()
        };
        let mut m = ReviewKd::new(cfg);
        m.build(&layout(&case.student), &layout(&case.teacher), 0).unwrap();
        set_by_formula(m.store_mut());
        let shape = |(c, h): (usize, usize)| Shape4::new(r.n, c, h, h);
        let student: Vec<Var> =
            case.student.iter().enumerate().map(|(i, &l)| feature(&format!("s{i}"), shape(l), true)).collect();
        let teacher: Vec<Var> =
            case.teacher.iter().enumerate().map(|(i, &l)| feature(&format!("t{i}"), shape(l), false)).collect();
        let handles: Vec<Var> = student.iter().map(|v| v.detach()).collect();
        let loss = m.feature_loss(student.into_iter().map(|v| v.traced()).collect(), &teacher);
        close(loss.array() as f64, case.loss, 2e-5, &format!("{name} loss"));
        let mut g = loss.backward();
        for (i, (h, want)) in handles.iter().zip(&case.input_grads).enumerate() {
            let got = h.grad(&mut g);
            let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            for (a, b) in got.iter().zip(want) {
                assert!((*a as f64 - b).abs() <= 1e-4 * scale + 1e-7, "{name}: gradient of level {i}: {a} vs {b}");
            }
        }
        let store = m.store_mut();
        let mut names: Vec<&str> = store.params.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        assert_eq!(names, case.param_grad_norms.keys().map(|k| k.as_str()).collect::<Vec<_>>(), "{name}: module names");
        for p in &store.params {
            let gn = g
                .get_or_alloc_mut(kdscope::nn::params::tensor_of(p))
                .unwrap()
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            close_or(gn, case.param_grad_norms[&p.name], 1e-4, 1e-6, &format!("{name}: gradient norm of {}", p.name));
        }
    }
}
