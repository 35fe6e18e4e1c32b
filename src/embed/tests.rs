use super::*;
use crate::predictions::{kl, log_softmax_rows};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn symmetric_kl_matches_hand_value() {
    // ½[(0.5 − 0.9)(ln 0.5 − ln 0.9) + (0.5 − 0.1)(ln 0.5 − ln 0.1)]
    let (p, q) = ([0.5f64.ln(), 0.5f64.ln()], [0.9f64.ln(), 0.1f64.ln()]);
    assert!(close(symmetric_kl(&p, &q), 0.43944491546724385, 1e-12));
    assert!(close(symmetric_kl(&q, &p), 0.43944491546724385, 1e-12), "symmetric");
    assert_eq!(symmetric_kl(&p, &p), 0.0);
    // The mean over rows, and the log-softmax it is fed with.
    let lp = log_softmax_rows(&[0.0, 0.0, 1.0, 0.0], 2, 1.0);
    assert!(close(lp[2], 1.0 - (1.0f64.exp() + 1.0).ln(), 1e-12));
    let lq = log_softmax_rows(&[0.0, 0.0, 0.0, 0.0], 2, 1.0);
    let e = 1.0f64.exp() / (1.0 + 1.0f64.exp());
    let row2 = 0.5 * ((e - 0.5) * (e.ln() - 0.5f64.ln()) + (1.0 - e - 0.5) * ((1.0 - e).ln() - 0.5f64.ln()));
    assert!(close(mean_symmetric_kl(&lp, &lq, 2), row2 / 2.0, 1e-12));
    // Temperature divides the logits.
    let t = log_softmax_rows(&[2.0, 0.0], 2, 2.0);
    assert!(close(t[0], 1.0 - (1.0f64.exp() + 1.0).ln(), 1e-12));
}

#[test]
fn student_t_density_matches_hand_value_and_integrates_to_one() {
    // y = (1, 2), μ = 0, h = 0.5: ‖y − μ‖² = 5, 1 + ½·0.5·5 = 2.25.
    let v = student_t2_logpdf([1.0, 2.0], [0.0, 0.0], 0.5);
    assert!(close(v, 0.5f64.ln() - (2.0 * std::f64::consts::PI).ln() - 2.0 * 2.25f64.ln(), 1e-12));
    // Density sums to ~1 over a large grid (heavy tails: mass beyond radius R is 1/(1 + hR²/2)).
    let (h, step, r) = (2.0, 0.05, 60.0);
    let mut s = 0.0;
    let m = (r / step) as i64;
    for i in -m..m {
        for j in -m..m {
            s += student_t2_logpdf([(i as f64 + 0.5) * step, (j as f64 + 0.5) * step], [0.0, 0.0], h).exp();
        }
    }
    s *= step * step;
    let tail = 1.0 / (1.0 + h * r * r / 2.0); // beyond the disc of radius r (the square holds a bit more)
    assert!(s < 1.0 && s > 1.0 - tail, "{s}");
}

#[test]
fn jsd_entropy_kl_match_hand_values() {
    assert!(close(jsd(&[1.0, 0.0], &[0.0, 1.0]), std::f64::consts::LN_2, 1e-7));
    assert!(close(jsd(&[0.5, 0.5], &[0.9, 0.1]), 0.10174922507919676, 1e-6));
    assert_eq!(jsd(&[0.2, 0.8], &[0.2, 0.8]), 0.0);
    assert!(close(entropy(&[0.5, 0.5]), std::f64::consts::LN_2, 1e-7));
    assert_eq!(entropy(&[1.0, 0.0]), 0.0);
    assert!(close(kl(&[0.5, 0.5], &[0.9, 0.1]), 0.5 * (0.5f64 / 0.9).ln() + 0.5 * (0.5f64 / 0.1).ln(), 1e-6));
}

#[test]
fn kde_matches_scipy() {
    // scipy.stats.gaussian_kde([[0, 1, 3, 0.5], [0, 2, 1, -1]]).evaluate([[0.5], [0.5]]) and its factor.
    let pts = [[0.0, 0.0], [1.0, 2.0], [3.0, 1.0], [0.5, -1.0]];
    assert!(close(Bandwidth::Scott.factor(4), 0.7937005259840998, 1e-12));
    assert_eq!(Bandwidth::Silverman.factor(4), Bandwidth::Scott.factor(4), "equal in 2-D");
    let kde = Kde::fit(&pts, Bandwidth::Scott).unwrap();
    assert!(close(kde.density([0.5, 0.5]), 0.06209815186184406, 1e-10));
    // By hand for two points: covariance [[0.5, 0], [0, 0.5]]·f², density = mean of two Gaussians.
    let two = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
    let f = 0.5;
    let k = Kde::fit(&two, Bandwidth::Factor(f)).unwrap();
    // cov of the three points: var x = var y = 1/3, cov xy = −1/6.
    let s = [1.0 / 3.0 * f * f, -1.0 / 6.0 * f * f, 1.0 / 3.0 * f * f];
    let det = s[0] * s[2] - s[1] * s[1];
    let g = |dx: f64, dy: f64| {
        let q = (s[2] * dx * dx - 2.0 * s[1] * dx * dy + s[0] * dy * dy) / det;
        (-0.5 * q).exp() / (2.0 * std::f64::consts::PI * det.sqrt())
    };
    let want = (g(0.2, 0.3) + g(-0.8, 0.3) + g(0.2, -0.7)) / 3.0;
    assert!(close(k.density([0.2, 0.3]), want, 1e-12));
    // Per predicted class: a point is scored under its own class's KDE only.
    let pts6 = [[0.0, 0.0], [1.0, 0.2], [0.1, 1.0], [10.0, 10.0], [11.0, 10.5], [10.2, 11.0]];
    let pred = [0, 0, 0, 1, 1, 1];
    let d = kde_log_density(&pts6, &pred, Bandwidth::Scott, KdeScope::PredictedClass).unwrap();
    let own = Kde::fit(&pts6[..3], Bandwidth::Scott).unwrap().density(pts6[0]).ln();
    assert!(close(d[0], own, 1e-12));
    let all = kde_log_density(&pts6, &pred, Bandwidth::Scott, KdeScope::All).unwrap();
    assert!(close(all[0], Kde::fit(&pts6, Bandwidth::Scott).unwrap().density(pts6[0]).ln(), 1e-12));
    assert!(Kde::fit(&[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], Bandwidth::Scott).is_err(), "collinear");
}

#[test]
fn local_fidelity_matches_hand_values() {
    // Four points on a line at 0, 1, 3, 7; neighbours: 0→1,3 ; 1→0,3 ; 3→1,0 (tie 2 vs 3: dist² 4
    // vs 9 → 1 then 0) ; 7→3,1.
    let pts = [0.0f32, 0.0, 1.0, 0.0, 3.0, 0.0, 7.0, 0.0];
    let p = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
    let m = local_fidelity(&pts, &p, 2, 2).unwrap();
    let l2 = std::f64::consts::LN_2;
    // k = 1: JSDs 0 (0→1), 0 (1→0), ln2 (3→1), 0 (7→3).
    assert!(close(m[0], l2 / 4.0, 1e-7), "{m:?}");
    // k = 2: point 0: (0 + ln2)/2, point 1: (0 + ln2)/2, point 3: (ln2 + ln2)/2, point 7: (0 + ln2)/2.
    assert!(close(m[1], (0.5 + 0.5 + 1.0 + 0.5) * l2 / 4.0, 1e-7), "{m:?}");
    assert!(local_fidelity(&pts, &p, 2, 4).is_err(), "k must be below n");
}

#[test]
fn rejection_curve_matches_hand_values() {
    let conf = [0.9, 0.1, 0.5, 0.7, 0.3];
    let correct = [true, false, false, true, true];
    // Order by confidence: 0 (ok), 3 (ok), 2 (wrong), 4 (ok), 1 (wrong).
    let c = rejection_curve(&conf, &correct, 5).unwrap();
    let acc: Vec<f64> = c.iter().map(|p| p.1).collect();
    assert_eq!(acc, vec![1.0, 1.0, 2.0 / 3.0, 0.75, 0.6]);
    assert_eq!(c[1].0, 0.4);
    // Half kept: ⌈2.5⌉ = 3 points.
    assert_eq!(rejection_curve(&conf, &correct, 2).unwrap()[0], (0.5, 2.0 / 3.0));
    assert_eq!(max_probability(&[0.2, 0.8, 0.6, 0.4], 2), vec![0.800000011920929, 0.6000000238418579]);
    assert!(close(negative_entropy(&[0.5, 0.5], 2)[0], -std::f64::consts::LN_2, 1e-7));
}

#[test]
fn darksight_gradients_match_finite_differences() {
    let (n, k) = (5, 3);
    let logits: Vec<f32> = (0..n * k).map(|i| ((i * 7) % 5) as f32 * 0.6 - 1.0).collect();
    let log_p = log_softmax_rows(&logits, k, 2.0);
    let y: Vec<f64> = (0..2 * n).map(|i| ((i * 3) % 7) as f64 * 0.4 - 1.2).collect();
    let means: Vec<f64> = (0..2 * k).map(|i| ((i * 5) % 4) as f64 * 0.9 - 1.0).collect();
    let w = vec![0.3, -0.2, 0.1];
    let h = 0.8;
    let (loss, gy, gm, gw) = darksight::loss_and_gradients(&y, &means, &w, h, &log_p);
    // Loss is the mean symmetric KL of the student's posterior against the targets.
    assert!(loss > 0.0);
    let f = |y: &[f64], m: &[f64], w: &[f64]| darksight::loss_and_gradients(y, m, w, h, &log_p).0;
    let eps = 1e-6;
    let fd = |v: &[f64], i: usize, which: u8| {
        let (mut a, mut b) = (v.to_vec(), v.to_vec());
        a[i] += eps;
        b[i] -= eps;
        match which {
            0 => (f(&a, &means, &w) - f(&b, &means, &w)) / (2.0 * eps),
            1 => (f(&y, &a, &w) - f(&y, &b, &w)) / (2.0 * eps),
            _ => (f(&y, &means, &a) - f(&y, &means, &b)) / (2.0 * eps),
        }
    };
    for (i, g) in gy.iter().enumerate() {
        assert!(close(*g, fd(&y, i, 0), 1e-6), "y[{i}]: {g} vs {}", fd(&y, i, 0));
    }
    for (i, g) in gm.iter().enumerate() {
        assert!(close(*g, fd(&means, i, 1), 1e-6), "mu[{i}]");
    }
    for (i, g) in gw.iter().enumerate() {
        assert!(close(*g, fd(&w, i, 2), 1e-6), "w[{i}]");
    }
}

/// Three well-separated classes with per-point variation in confidence.
fn three_class_logits(n: usize) -> (Vec<f32>, Vec<usize>) {
    let logits = (0..n)
        .flat_map(|i| {
            let c = i % 3;
            (0..3).map(move |k| if k == c { 3.0 + (i % 7) as f32 * 0.3 } else { (i % 5) as f32 * 0.15 * k as f32 })
        })
        .collect();
    (logits, (0..n).map(|i| i % 3).collect())
}

#[test]
fn darksight_learns_the_predictions_and_is_deterministic() {
    let (logits, pred) = three_class_logits(90);
    let cfg = DarkSightConfig { batch: 40, ..DarkSightConfig::quick(400) };
    let a = darksight(&logits, 3, &cfg).unwrap();
    let b = darksight(&logits, 3, &cfg).unwrap();
    assert_eq!(a.points, b.points, "same seed, same result");
    assert_eq!(a.agreement(&pred), 1.0);
    assert!(a.final_loss < 0.05, "final symmetric KL {}", a.final_loss);
    assert!(a.loss.last().unwrap() < &a.loss[0]);
    // The final loss is the mean symmetric KL of the student's posteriors.
    let target = log_softmax_rows(&logits, 3, 1.0);
    assert!(close(a.final_loss, mean_symmetric_kl(&a.log_posteriors(), &target, 3), 1e-12));
    // Bad input is refused with a message.
    assert!(darksight(&logits[..5], 3, &cfg).is_err());
    assert!(darksight(&[f32::NAN, 0.0], 2, &cfg).is_err());
    let other = darksight(&logits, 3, &DarkSightConfig { seed: 1, ..cfg.clone() }).unwrap();
    assert_ne!(a.points, other.points, "the seed matters");
    let long = DarkSightConfig { epochs: 10, ..Default::default() };
    let e = darksight(&logits, 3, &long).unwrap_err().to_string();
    assert!(e.contains("annealing over 1000 epochs"), "{e}");
}

#[test]
fn perplexity_calibration_hits_the_target_entropy() {
    let d: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin().abs() * 5.0 + i as f32 * 0.1).collect();
    let mut p = vec![0.0; 50];
    tsne::conditional_row(&d, 10.0, &mut p);
    let h: f64 = -p.iter().filter(|&&v| v > 0.0).map(|v| v * v.ln()).sum::<f64>();
    assert!((h - 10f64.ln()).abs() < 1e-4, "entropy {h}");
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn pca_finds_the_principal_axes() {
    // Points in the (x, y) plane (z = 0): the components are the eigenvectors of the 2×2
    // covariance, in closed form.
    let x: Vec<f32> = (0..40)
        .flat_map(|i| {
            let a = (i as f32 - 20.0) * 0.5;
            let b = if i % 2 == 0 { 0.3 } else { -0.3 } * ((i % 5) as f32 + 1.0);
            [a + b, a - b, 0.0]
        })
        .collect();
    let pc = tsne::pca2(&x, 3);
    let n = 40.0;
    let mean = |c: usize| (0..40).map(|i| x[3 * i + c] as f64).sum::<f64>() / n;
    let (mx, my) = (mean(0), mean(1));
    let cov = |a: usize, ma: f64, b: usize, mb: f64| {
        (0..40).map(|i| (x[3 * i + a] as f64 - ma) * (x[3 * i + b] as f64 - mb)).sum::<f64>()
    };
    let (sxx, sxy, syy) = (cov(0, mx, 0, mx), cov(0, mx, 1, my), cov(1, my, 1, my));
    let l1 = 0.5 * (sxx + syy) + (0.25 * (sxx - syy).powi(2) + sxy * sxy).sqrt();
    let (vx, vy) = (sxy, l1 - sxx);
    let norm = (vx * vx + vy * vy).sqrt();
    let (mut vx, mut vy) = (vx / norm, vy / norm);
    if vx.abs().max(vy.abs()) == -vx.min(vy) {
        (vx, vy) = (-vx, -vy); // sign rule: largest loading positive
    }
    for (i, p) in pc.iter().enumerate() {
        let want = (x[3 * i] as f64 - mx) * vx + (x[3 * i + 1] as f64 - my) * vy;
        assert!((p[0] - want).abs() < 1e-6, "{i}: {} vs {want}", p[0]);
    }
    // The second component is orthogonal: its projections are uncorrelated with the first.
    let c12: f64 = pc.iter().map(|p| p[0] * p[1]).sum();
    assert!(c12.abs() < 1e-6 * l1, "{c12}");
}

#[test]
fn barnes_hut_with_theta_zero_equals_the_exact_gradient() {
    // Same sparse affinities, exact repulsion (θ = 0 never summarises) vs the dense gradient.
    let (logits, _) = three_class_logits(60);
    let p = tsne::joint_probabilities_knn(&logits, 3, 20.0);
    let n = 60;
    let mut dense = vec![0.0; n * n];
    for i in 0..n {
        for e in p.indptr[i]..p.indptr[i + 1] {
            dense[i * n + p.indices[e] as usize] = p.values[e];
        }
    }
    let y: Vec<f64> = (0..2 * n).map(|i| ((i * 37) % 23) as f64 * 0.3 + (i % 2) as f64 * 0.01).collect();
    let (mut g1, mut g2) = (vec![0.0; 2 * n], vec![0.0; 2 * n]);
    let kl1 = tsne::test_hooks::bh(&p, &y, 3.0, 0.0, &mut g1);
    let kl2 = tsne::test_hooks::exact(&dense, &y, 3.0, &mut g2);
    for i in 0..2 * n {
        assert!(close(g1[i], g2[i], 1e-9), "{i}: {} vs {}", g1[i], g2[i]);
    }
    // KL with sparse P: the dense version adds only zero-probability pairs.
    assert!(close(kl1, kl2, 1e-9), "{kl1} vs {kl2}");
    // θ = 0.5 stays close.
    let mut g3 = vec![0.0; 2 * n];
    tsne::test_hooks::bh(&p, &y, 3.0, 0.5, &mut g3);
    let err: f64 = g3.iter().zip(&g2).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = g2.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!(err < 0.05 * norm, "BH error {err} vs norm {norm}");
    // Duplicated points do not break the tree.
    let dup = vec![1.0; 2 * n];
    let mut g4 = vec![0.0; 2 * n];
    assert!(tsne::test_hooks::bh(&p, &dup, 1.0, 0.5, &mut g4).is_finite());
    assert!(g4.iter().all(|v| v.abs() < 1e-12));
}

#[derive(serde::Deserialize)]
struct Reference {
    n: usize,
    d: usize,
    x: Vec<f32>,
    exact_points: usize,
    sklearn_exact_kl: f64,
    sklearn_bh_kl: f64,
    opentsne_bh_kl: f64,
}

fn reference() -> Reference {
    let text = include_str!("../../tests/fixtures/tsne_reference.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn exact_tsne_kl_matches_scikit_learn() {
    // benches/tsne_reference.py: scikit-learn's exact t-SNE on the same 300 points, same settings.
    let r = reference();
    let x = &r.x[..r.exact_points * r.d];
    let t = tsne(x, r.d, &TsneConfig { method: TsneMethod::Exact, ..Default::default() }).unwrap();
    let rel = (t.kl - r.sklearn_exact_kl).abs() / r.sklearn_exact_kl;
    eprintln!("exact t-SNE KL: kdscope {:.4}, scikit-learn {:.4}", t.kl, r.sklearn_exact_kl);
    assert!(rel < 0.03, "kdscope {} vs scikit-learn {} ({:.1} %)", t.kl, r.sklearn_exact_kl, 100.0 * rel);
    assert_eq!(t.method, TsneMethod::Exact);
}

#[test]
fn barnes_hut_tsne_kl_matches_scikit_learn_and_opentsne() {
    let r = reference();
    let t = tsne(&r.x, r.d, &TsneConfig { method: TsneMethod::BarnesHut, ..Default::default() }).unwrap();
    assert_eq!(t.points.len(), r.n);
    eprintln!(
        "BH t-SNE KL: kdscope {:.4}, scikit-learn {:.4}, openTSNE {:.4}",
        t.kl, r.sklearn_bh_kl, r.opentsne_bh_kl
    );
    for (name, want) in [("scikit-learn", r.sklearn_bh_kl), ("openTSNE", r.opentsne_bh_kl)] {
        let rel = (t.kl - want).abs() / want;
        assert!(rel < 0.05, "kdscope {} vs {name} {want} ({:.1} %)", t.kl, 100.0 * rel);
    }
}
