//! `kdscope bench`'s timing and profiles on small models, with the FLOPs counted by hand.
use super::*;

#[test]
fn kd_step_is_timed_and_profiled() {
    assert_eq!(kd_pairs(&["resnet56:resnet20".into()]).unwrap(), [("resnet56".into(), "resnet20".into())]);
    for bad in ["resnet56", ":resnet20", "resnet56:"] {
        let e = kd_pairs(&[bad.into()]).unwrap_err().to_string();
        assert!(e.contains("expected TEACHER:STUDENT"), "{e}");
    }
    let (r, rows) = bench_train_profiled("resnet8", Some("resnet8"), (2, 8), 1, 2, true).unwrap();
    assert_eq!((r.mode.as_str(), r.batch, r.size, r.sec_per_iter.len()), ("kd_from_resnet8", 2, 8, 2));
    let total = |op: &str| rows.iter().find(|x| x.op == op && x.pass == "total").map(|x| x.calls);
    // one profiled step: its phases, the teacher's forward among them
    assert_eq!((total("step"), total("teacher forward"), total("backward (all)")), (Some(1), Some(1), Some(1)));
    // The convolutions by kind, with their FLOPs counted by hand for ResNet-8 on 2 images of
    // 8x8: per forward, 3x3/1 the stem (3 -> 16 channels, 8x8), two 16 -> 16 at 8x8, 32 -> 32 at
    // 4x4 and 64 -> 64 at 2x2; 3x3/2 16 -> 32 to 4x4 and 32 -> 64 to 2x2; 1x1/2 the two
    // shortcuts. The forward rows hold the teacher's and the student's; the backward rows the
    // student's, twice the forward's (weight and input gradients) but the stem's (no input
    // gradient: the images are not traced).
    let f = |co: usize, ci: usize, k: usize, hw: usize| 2.0 * (2 * co * ci * k * k * hw * hw) as f64;
    let kinds = profile::by_kind(&rows);
    let conv = |kind: &str, pass: &str| {
        let r = kinds.iter().find(|x| x.op == format!("conv2d {kind}") && x.pass == pass);
        r.map(|r| (r.calls, r.flop))
    };
    // By shape too: the two 16 -> 16 layers at 8x8 of each model, the stem.
    let shape = |name: &str, pass: &str| {
        let r = rows.iter().find(|x| x.op == format!("conv2d {name}") && x.pass == pass);
        r.map(|r| (r.calls, r.flop))
    };
    assert_eq!(shape("3x3/1 @ 16→16 8x8", "forward"), Some((4, 4.0 * f(16, 16, 3, 8))));
    assert_eq!(shape("3x3/1 @ 3→16 8x8", "backward"), Some((1, f(16, 3, 3, 8))));
    assert_eq!(shape("3x3/2 @ 16→32 8x8", "backward"), Some((1, 2.0 * f(32, 16, 3, 4))));
    let (stem, s1) = (f(16, 3, 3, 8), 2.0 * f(16, 16, 3, 8) + f(32, 32, 3, 4) + f(64, 64, 3, 2));
    let (s2, p2) = (f(32, 16, 3, 4) + f(64, 32, 3, 2), f(32, 16, 1, 4) + f(64, 32, 1, 2));
    assert_eq!((stem + s1, s2, p2), (2_469_888.0, 589_824.0, 65_536.0));
    assert_eq!(conv("3x3/1", "forward"), Some((10, 2.0 * (stem + s1))));
    assert_eq!(conv("3x3/1", "backward"), Some((5, stem + 2.0 * s1)));
    assert_eq!(conv("3x3/2", "forward"), Some((4, 2.0 * s2)));
    assert_eq!(conv("3x3/2", "backward"), Some((2, 2.0 * s2)));
    assert_eq!(conv("1x1/2", "forward"), Some((4, 2.0 * p2)));
    assert_eq!(conv("1x1/2", "backward"), Some((2, 2.0 * p2)));
    assert!(rows.iter().filter(|r| r.op.starts_with("conv2d")).all(|r| r.gflops().is_some_and(|g| g > 0.0)));
    assert!(rows.iter().filter(|r| r.op.starts_with("batch_norm")).all(|r| r.flop == 0.0 && r.gflops().is_none()));
    let e = throughput(&[], &[], (&[0], None, 8), 1, 1, false).unwrap_err().to_string();
    assert!(e.contains("--batch"), "{e}");
    assert!(cpu_description().contains("threads"));
}

/// The inference profile: whole forwards as `step`, and the folded convolutions by kind with
/// their FLOPs (ResNet-8 on 2 images of 8x8, as counted by hand in the test above).
#[test]
fn inference_is_profiled() {
    let (r, rows) = bench_infer_profiled("resnet8", (2, 8), 2, 1, true).unwrap();
    assert_eq!((r.mode.as_str(), r.batch, r.sec_per_iter.len()), ("infer", 2, 1));
    let step = rows.iter().find(|x| x.op == "step" && x.pass == "total").map(|x| x.calls);
    assert_eq!(step, Some(2));
    let kinds = profile::by_kind(&rows);
    let conv = |kind: &str| kinds.iter().find(|x| x.op == format!("conv2d {kind}")).map(|r| (r.pass, r.calls, r.flop));
    assert_eq!(conv("3x3/1"), Some(("forward", 10, 2.0 * 2_469_888.0)));
    assert_eq!(conv("3x3/2"), Some(("forward", 4, 2.0 * 589_824.0)));
    assert_eq!(conv("1x1/2"), Some(("forward", 4, 2.0 * 65_536.0)));
    assert!(rows.iter().all(|r| r.pass != "backward"), "no backward in inference");
    let (_, rows) = bench_infer_profiled("resnet8", (2, 8), 1, 1, false).unwrap();
    assert!(rows.is_empty(), "nothing profiled unless asked");
}

/// Two profiled benches at once in one process (as the tests above run in parallel) each get a
/// whole table of their own: profiling runs one at a time ([`profile::session`]).
#[test]
fn concurrent_profiles_do_not_mix() {
    let runs: Vec<_> =
        (0..3).map(|_| std::thread::spawn(|| bench_infer_profiled("resnet8", (2, 8), 2, 1, true).unwrap().1)).collect();
    for rows in runs.into_iter().map(|r| r.join().unwrap()) {
        let calls = |op: &str, pass: &str| rows.iter().find(|x| x.op == op && x.pass == pass).map(|x| x.calls);
        assert_eq!(calls("step", "total"), Some(2));
        let kinds = profile::by_kind(&rows);
        let conv = kinds.iter().find(|x| x.op == "conv2d 3x3/1").map(|r| (r.pass, r.calls));
        assert_eq!(conv, Some(("forward", 10)));
    }
}
