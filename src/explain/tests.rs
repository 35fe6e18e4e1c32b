//! Tests of the saliency methods, UniCAM, the quality metrics, agreement and overlays against
//! hand-computed values, finite differences and closed forms on small networks.
use super::agreement::*;
use super::dcor::partial_distance_correlation_grad;
use super::overlay::*;
use super::quality::*;
use super::unicam::*;
use super::*;
use crate::data::sample_indices;
use crate::nn::Shape4;

fn batch(n: usize, seed: usize) -> Var {
    let x: Vec<f32> = (0..n * 3 * 32 * 32).map(|i| (((i + seed) * 37 % 101) as f32 / 50.0) - 1.0).collect();
    Var::from_vec(x, Shape4 { n, c: 3, h: 32, w: 32 })
}

fn fc_weights(m: &Model) -> Vec<f32> {
    m.store.get(m.store.find("fc.weight").unwrap()).values()
}

/// On a GAP + linear head, Grad-CAM at the last stage is ReLU(CAM) / (h·w) (its α_c = W_tc / hw).
#[test]
fn grad_cam_equals_relu_cam_on_the_last_stage() {
    let m = Model::build("resnet8", 10, 5).unwrap();
    let x = batch(2, 0);
    let targets = [3, 8];
    let g = GradCam::default().explain(&m, &x, &targets).unwrap();
    let c = Cam.explain(&m, &x, &targets).unwrap();
    assert_eq!((g.n, g.h, g.w), (2, 8, 8));
    assert!(c.data.iter().any(|&v| v > 0.0) && c.data.iter().any(|&v| v < 0.0), "a non-trivial case");
    for (a, b) in g.data.iter().zip(&c.data) {
        assert!((a - b.max(0.0) / 64.0).abs() < 1e-6, "{a} vs {b}");
    }
    assert!(GradCam::default().explain(&m, &x, &[1]).is_err());
    assert!(GradCam::default().explain(&m, &x, &[1, 10]).is_err());
    assert!(GradCam::at("nope").explain(&m, &x, &targets).is_err());
    let up = GradCam::default().maps(&m, &x, &targets).unwrap();
    assert_eq!((up.n, up.h, up.w), (2, 32, 32));
}

/// Grad-CAM++ weights by hand on one plane, and on the last stage in closed form: the gradient there is
/// the constant `g = W_tc / 64`, so `w_c = 64 · g² / (2g² + S_c g³ + ε) · max(g, 0)`.
#[test]
fn grad_cam_plus_plus_weights() {
    // a = [1, 2, 3] (S = 6), g = [0.5, -1, 0]: 0.25 / (0.5 + 6 · 0.125) · 0.5 = 0.1, then 0 and 0.
    let w = grad_cam_plus_plus::plus_plus_weight(&[1.0, 2.0, 3.0], &[0.5, -1.0, 0.0]);
    assert!((w - 0.1).abs() < 1e-6, "{w}");
    let m = Model::build("resnet8", 10, 2).unwrap();
    let x = batch(2, 3);
    let targets = [1, 6];
    let got = GradCamPlusPlus::default().explain(&m, &x, &targets).unwrap();
    let out = m.forward_with(Var::from_vec(x.to_vec(), x.shape), false, true);
    let a = out.features.get("layer3").unwrap().to_vec();
    let fc = fc_weights(&m);
    for (i, &t) in targets.iter().enumerate() {
        let mut expect = vec![0.0f32; 64];
        for c in 0..64 {
            let plane = &a[(i * 64 + c) * 64..(i * 64 + c + 1) * 64];
            let s: f32 = plane.iter().sum();
            let g = fc[t * 64 + c] / 64.0;
            let wc = if g > 0.0 { 64.0 * g * g / (2.0 * g * g + s * g * g * g + 1e-6) * g } else { 0.0 };
            for (e, v) in expect.iter_mut().zip(plane) {
                *e += wc * v;
            }
        }
        for (p, e) in got.map(i).iter().zip(&expect) {
            assert!((p - e.max(0.0)).abs() < 1e-5 * (1.0 + e.abs()), "{p} vs {e}");
        }
    }
}

/// The input gradient from the tape matches central finite differences of the target logit.
#[test]
fn input_gradient_matches_finite_differences() {
    let m = Model::build("resnet8", 10, 4).unwrap();
    let x = batch(1, 9);
    let t = 7;
    let g = input_gradient(&m, &x, &[t], false).unwrap();
    let logit = |v: &[f32]| m.logits(Var::from_vec(v.to_vec(), x.shape)).data()[t] as f64;
    let mut order: Vec<usize> = (0..g.len()).collect();
    order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
    let eps = 1e-2f32;
    for &p in order.iter().take(6).chain(order.iter().skip(1000).step_by(700).take(4)) {
        let (mut hi, mut lo) = (x.to_vec(), x.to_vec());
        hi[p] += eps;
        lo[p] -= eps;
        let fd = (logit(&hi) - logit(&lo)) / (2.0 * eps as f64);
        assert!((fd - g[p] as f64).abs() < 2e-3 + 0.03 * fd.abs(), "pixel {p}: fd {fd} vs tape {}", g[p]);
    }
    let vm = VanillaGradient.explain(&m, &x, &[t]).unwrap();
    assert_eq!((vm.h, vm.w), (32, 32));
    for px in [0usize, 77, 1023] {
        let want = (0..3).map(|c| g[c * 1024 + px].abs()).fold(0.0f32, f32::max);
        assert_eq!(vm.data[px], want);
    }
}

/// Guided backprop on a network: it only ever removes negative gradients at ReLUs, so it differs
/// from the vanilla gradient, and the model-level call equals `input_gradient(.., guided = true)`.
#[test]
fn guided_backprop_on_a_resnet() {
    let m = Model::build("resnet8", 10, 6).unwrap();
    let x = batch(2, 1);
    let g = input_gradient(&m, &x, &[2, 5], true).unwrap();
    let v = input_gradient(&m, &x, &[2, 5], false).unwrap();
    assert!(g.iter().zip(&v).any(|(a, b)| (a - b).abs() > 1e-6), "guided differs from vanilla");
    let gm = GuidedBackprop.explain(&m, &x, &[2, 5]).unwrap();
    let want = (0..3).map(|c| g[c * 1024 + 5].abs()).fold(0.0f32, f32::max);
    assert_eq!(gm.data[5], want);
}

#[test]
fn methods_by_name() {
    for (n, want) in [
        ("gradient", "gradient"),
        ("guided-backprop", "guided-backprop"),
        ("cam", "cam"),
        ("Grad-CAM", "grad-cam"),
        ("grad-cam@layer2", "grad-cam@layer2"),
        ("gradcam++", "grad-cam++"),
    ] {
        assert_eq!(method(n).unwrap().name(), want);
    }
    assert!(method("cam@layer1").is_err());
    assert!(method("lime").is_err());
}

/// UniCAM's distilled map is Grad-CAM with the gradient of the partial distance correlation: through
/// the global average pool, the gradient at `layer3` is `∂R*/∂f_c / 64`, with `∂R*/∂f` from the
/// independent closed form of `partial_distance_correlation_grad`.
#[test]
fn unicam_map_is_grad_cam_of_the_partial_distance_correlation() {
    let s = Model::build("resnet8", 4, 1).unwrap();
    let r = Model::build("resnet8", 4, 2).unwrap();
    let x = batch(8, 5);
    let labels = [0, 1, 2, 3, 0, 1, 2, 3];
    let (e, de) = LabelEmbedding::OneHot.embed(&labels, 4);
    assert_eq!((de, &e[4..8]), (4, &[0.0, 1.0, 0.0, 0.0][..]));
    let (fs, ds) = penultimate(&s, &x).unwrap();
    let (fr, dr) = penultimate(&r, &x).unwrap();
    let (map, rs) = unicam::conditioned_cam(&s, &x, (&e, de), (&fr, dr)).unwrap();
    let (rs2, g) = partial_distance_correlation_grad(&fs, ds, &e, de, &fr, dr);
    assert!((rs - rs2).abs() < 1e-9);
    let out = s.forward_with(Var::from_vec(x.to_vec(), x.shape), false, true);
    let a = out.features.get("layer3").unwrap().to_vec();
    let mut nonzero = 0;
    for i in 0..8 {
        for p in 0..64 {
            let v: f32 = (0..64).map(|c| g[i * 64 + c] / 64.0 * a[(i * 64 + c) * 64 + p]).sum();
            let got = map.data[i * 64 + p];
            assert!((got - v.max(0.0)).abs() < 1e-6 * (1.0 + v.abs()) + 1e-9, "{got} vs {v}");
            nonzero += (got > 0.0) as usize;
        }
    }
    assert!(nonzero > 0);
    let u = unicam(&s, &r, &x, &labels, &LabelEmbedding::OneHot).unwrap();
    assert!((u.rs_distilled - rs).abs() < 1e-9);
    assert!((u.fss - fss(&fs, ds, &fr, dr)).abs() < 1e-12 && u.fss > 0.0 && u.fss <= 1.0);
    assert_eq!((u.distilled.h, u.residual.w), (32, 32));
    // A model against itself keeps nothing beyond itself.
    let same = unicam(&s, &s, &x, &labels, &LabelEmbedding::OneHot).unwrap();
    assert!(same.rs_distilled.abs() < 1e-9 && same.distilled.data.iter().all(|&v| v == 0.0));
    assert!((fss(&fs, ds, &fs, ds) - 1.0).abs() < 1e-9);
    let scaled: Vec<f32> =
        fs.chunks(ds).enumerate().flat_map(|(i, r)| r.iter().map(move |v| v * (i + 1) as f32)).collect();
    assert!((fss(&scaled, ds, &fr, dr) - u.fss).abs() < 1e-6, "FSS normalises each feature vector");
    assert!(unicam(&s, &r, &batch(3, 0), &[0, 1, 2], &LabelEmbedding::OneHot).is_err());
}

#[test]
fn pearson_ssim_adcc_by_hand() {
    assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 4.5 / (2.0f64 * 61.0 / 6.0).sqrt()).abs() < 1e-12);
    assert_eq!(pearson(&[1.0, 1.0], &[0.0, 1.0]), 0.0);
    let a: Vec<f32> = (0..256).map(|i| ((i * 7) % 13) as f32 / 12.0).collect();
    assert!((ssim(&a, &a, 16, 16) - 1.0).abs() < 1e-12);
    // Constant maps 0.2 and 0.6: σ = 0, so SSIM = (2·0.12 + C1) / (0.04 + 0.36 + C1).
    let (p, q) = (vec![0.2f32; 256], vec![0.6f32; 256]);
    let want = (2.0 * 0.2 * 0.6 + 1e-4) / (0.04 + 0.36 + 1e-4);
    assert!((ssim(&p, &q, 16, 16) - want).abs() < 1e-6);
    // ADCC = 3 / (1/0.8 + 1/0.5 + 1/0.75) = 3 / 4.5833…
    assert!((adcc(0.8, 0.5, 0.25) - 3.0 / (1.25 + 2.0 + 4.0 / 3.0)).abs() < 1e-12);
    assert_eq!(adcc(0.0, 0.1, 0.1), 0.0);
    let s = sample_indices(100, 10, 3);
    assert_eq!((s.len(), s == sample_indices(100, 10, 3)), (10, true));
    assert!(s.windows(2).all(|w| w[0] < w[1]));
}

/// A fixed map (left half 1, right half 0) makes every metric hand-computable: Complexity 0.5,
/// Coherency 1 (the masked image gets the same map), the masked score from zeroing the right half.
struct LeftHalf;
impl Saliency for LeftHalf {
    fn name(&self) -> String {
        "left-half".into()
    }
    fn explain(&self, _: &Model, x: &Var, _: &[usize]) -> anyhow::Result<Maps> {
        let (h, w) = (x.shape.h, x.shape.w);
        let one: Vec<f32> = (0..h * w).map(|p| if p % w < w / 2 { 1.0 } else { 0.0 }).collect();
        Ok(Maps { n: x.shape.n, h, w, data: one.repeat(x.shape.n) })
    }
}

#[test]
fn quality_metrics_on_a_fixed_map() {
    use crate::data::synthetic::{builtin_dataset, SynthConfig};
    let data = builtin_dataset(&SynthConfig { train_per_class: 1, test_per_class: 1, ..Default::default() });
    let m = Model::build("resnet8", 20, 3).unwrap();
    let idx = [0usize, 5, 9];
    let targets = [data.test.labels[0], 2, data.test.labels[9]];
    let df = quality_per_image(&m, &LeftHalf, &data.test, &idx, &targets, 2).unwrap();
    assert_eq!(df.height(), 3);
    let col = |c: &str| -> Vec<f64> { df.column(c).unwrap().f64().unwrap().into_no_null_iter().collect() };
    let b = make_batch(&data.test, &idx, None);
    let mut masked = b.x.to_vec();
    for (k, v) in masked.iter_mut().enumerate() {
        if k % 32 >= 16 {
            *v = 0.0;
        }
    }
    let probs = |v: Vec<f32>| -> Vec<f64> {
        let l = m.logits(Var::from_vec(v, b.x.shape)).to_vec();
        l.chunks(20)
            .zip(&targets)
            .map(|(r, &t)| {
                let z: f64 = r.iter().map(|&v| (v as f64).exp()).sum();
                (r[t] as f64).exp() / z
            })
            .collect()
    };
    let (y, o) = (probs(b.x.to_vec()), probs(masked));
    for i in 0..3 {
        assert!((col("score")[i] - y[i]).abs() < 1e-6 && (col("masked_score")[i] - o[i]).abs() < 1e-6);
        let drop = (y[i] - o[i]).max(0.0) / y[i];
        assert!((col("drop")[i] - 100.0 * drop).abs() < 1e-4);
        assert_eq!(col("increase")[i], if y[i] < o[i] { 100.0 } else { 0.0 });
        assert!((col("coherency")[i] - 1.0).abs() < 1e-9 && (col("coherency_ssim")[i] - 1.0).abs() < 1e-9);
        assert_eq!(col("complexity")[i], 0.5);
        assert!((col("adcc")[i] - 3.0 / (1.0 + 2.0 + 1.0 / (1.0 - drop))).abs() < 1e-6);
    }
    let sum = quality_summary("resnet8", "left-half", &df).unwrap();
    let avg: f64 = col("drop").iter().sum::<f64>() / 3.0;
    assert!((sum.column("average_drop").unwrap().f64().unwrap().get(0).unwrap() - avg).abs() < 1e-9);
    assert_eq!(sum.column("complexity").unwrap().f64().unwrap().get(0), Some(0.5));
}

#[test]
fn agreement_by_hand() {
    assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    // Top 50 % of [.9 .1 .8 .2] = {0, 2}; of [.9 .8 .1 .2] = {0, 1}: IoU = 1/3.
    assert!((top_iou(&[0.9, 0.1, 0.8, 0.2], &[0.9, 0.8, 0.1, 0.2], 0.5) - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(top_fraction(&[0.5, 0.5, 0.1], 0.1), vec![0]);
    let t = Maps { n: 2, h: 1, w: 4, data: vec![0.9, 0.1, 0.8, 0.2, 1.0, 2.0, 3.0, 4.0] };
    let s = Maps { n: 2, h: 1, w: 4, data: vec![0.9, 0.8, 0.1, 0.2, 4.0, 3.0, 2.0, 1.0] };
    let names: Vec<String> = vec!["a".into(), "b".into()];
    let df = agreement_per_image(&t, &s, &[7, 8], &[1, 1], &names, 0.5).unwrap();
    let per_class = agreement_per_class(&df, &names).unwrap();
    assert_eq!(per_class.height(), 1);
    let rc = per_class.column("rank_corr").unwrap().f64().unwrap().get(0).unwrap();
    // Ranks [4 1 3 2] and [4 3 1 2]: ρ = 1 − 6·8/(4·15) = 0.2; the second pair is reversed: −1.
    assert!((rc - (0.2 + -1.0) / 2.0).abs() < 1e-12, "{rc}");
    let iou = per_class.column("top_iou").unwrap().f64().unwrap().get(0).unwrap();
    assert!((iou - (1.0 / 3.0 + 0.0) / 2.0).abs() < 1e-12, "{iou}");
}

#[test]
fn jet_overlay_and_png() {
    assert_eq!(jet(0.0), [0, 0, 128]);
    assert_eq!(jet(0.5), [128, 255, 128]);
    assert_eq!(jet(1.0), [128, 0, 0]);
    let img = image::RgbImage::from_pixel(2, 2, image::Rgb([100, 50, 0]));
    let maps = Maps { n: 1, h: 2, w: 2, data: vec![0.0, 0.5, 1.0, 1.0] };
    let o = overlay(&img, &maps, 0, 0.5);
    assert_eq!(o.get_pixel(0, 0).0, [50, 25, 64]);
    assert_eq!(o.get_pixel(1, 0).0, [114, 153, 64]);
    assert_eq!(heatmap(&maps, 0).get_pixel(0, 1).0, [128, 0, 0]);
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(gray_png_base64(&maps, 0)).unwrap();
    let back = image::load_from_memory(&bytes).unwrap().to_luma8();
    assert_eq!(back.into_raw(), vec![0, 128, 255, 255]);
}

/// Every method runs on a WRN and a VGG too (last stages `final` / `block4`, classifiers `fc` /
/// `classifier`), with maps at input size; Grad-CAM = ReLU(CAM)/hw there as well.
#[test]
fn methods_run_on_a_wide_resnet_and_a_vgg() {
    for arch in ["wrn_16_1", "vgg8"] {
        let m = Model::build(arch, 10, 0).unwrap();
        let x = batch(2, 4);
        for name in METHODS {
            let maps = method(name).unwrap().maps(&m, &x, &[1, 2]).unwrap();
            assert_eq!((maps.n, maps.h, maps.w), (2, 32, 32), "{arch} {name}");
            assert!(maps.data.iter().all(|v| v.is_finite()), "{arch} {name}");
        }
        let g = GradCam::default().explain(&m, &x, &[1, 2]).unwrap();
        let c = Cam.explain(&m, &x, &[1, 2]).unwrap();
        let hw = (g.h * g.w) as f32;
        let scale = c.data.iter().fold(0.0f32, |a, b| a.max(b.abs())) / hw;
        assert!(
            g.data.iter().zip(&c.data).all(|(a, b)| (a - b.max(0.0) / hw).abs() <= 1e-5 * scale.max(1e-6)),
            "{arch}"
        );
    }
}
