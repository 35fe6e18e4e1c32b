//! DarkSight on a model trained on the built-in dataset: its Naive-Bayes student must agree with the
//! model's predicted class on at least 95 % of the test points, with the official defaults.
use kdscope::data::synthetic::{builtin_dataset, SynthConfig};
use kdscope::distill::Method;
use kdscope::embed::{self, DarkSightConfig, EmbedConfig, TsneConfig};
use kdscope::train::{evaluate, fit, RunOptions, Schedule, TrainConfig};
use kdscope::{Model, ModelSpec};

#[test]
fn darksight_agrees_with_a_trained_model_on_the_built_in_dataset() {
    // shapes-20, which ResNet-8 learns to ≈85 % in 8 epochs (on fractals-20 it needs longer).
    let data = builtin_dataset(&SynthConfig {
        train_per_class: 150,
        test_per_class: 20,
        fractal: false,
        ..Default::default()
    });
    let mut m = Model::new(ModelSpec::new("resnet8", 20).unwrap(), 0);
    let cfg = TrainConfig {
        epochs: 8,
        batch_size: 64,
        lr: 0.1,
        schedule: Schedule::Cosine { min_lr: 0.0 },
        seed: 5,
        ..TrainConfig::default()
    };
    let quiet = RunOptions { label: "test".into(), checkpoint: None, resume: false, progress: false, stop_after: None };
    fit(&mut m, None, &mut Method::Alone, &data, &cfg, &quiet).unwrap();
    let p = evaluate(&m, &data.test, 100);
    // A usefully trained model (≈85 % here); DarkSight is meant for confident classifiers, an
    // untrained one's near-uniform predictions have no stable arg-max to reproduce.
    assert!(p.accuracy() > 0.7, "the model is trained: {}", p.accuracy());

    let ds = embed::darksight(&p.logits, 20, &DarkSightConfig::default()).unwrap();
    let agreement = ds.agreement(&p.predicted());
    assert!(agreement >= 0.95, "DarkSight agrees with the model on {:.1} % of points", 100.0 * agreement);
    assert_eq!(ds.len(), 400);

    // The whole section on the same model (teacher = student here): frames of the right sizes.
    let ecfg = EmbedConfig {
        darksight: DarkSightConfig::quick(300),
        tsne: TsneConfig { iters: 300, exaggeration_iters: 100, ..Default::default() },
        max_points: Some(120),
        ..Default::default()
    };
    let s = embed::section(("a", &m), ("b", &m), &data.test, &ecfg).unwrap();
    assert_eq!(s.points.height(), 2 * 4 * 120, "2 models x (DarkSight + 3 t-SNE) x 120 points");
    assert_eq!(s.summary.height(), 8);
    assert_eq!(s.fidelity.height(), 8 * 20);
    assert_eq!(s.rejection.height(), 2 * 6 * 20, "4 KDEs + max probability + entropy, 20 steps");
    assert_eq!(s.outliers.height(), 2 * 12);
}
