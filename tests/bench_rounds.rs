//! `scripts/bench_rounds.py`, which tabulates the logs of `scripts/bench_vs_pytorch.sh` and
//! `scripts/bench_bf16.sh`: results by round with their medians, and the kdscope runs that began on
//! a contended machine (an FMA-peak reading below 0.8 of the log's highest), which the tables flag.
use std::process::Command;

/// Two rounds: in the first, a kdscope run at the full peak (232), the anchor's result (no peak of
/// its own), and a kdscope run that began at half of it (117, one core's worth for two threads);
/// in the second, a run at 190 (0.82 of 232: within the margin).
const LOG: &str = "\
ROUND 1
FMA peak (measured, f32, all threads): 232 GFLOP/s
RESULT resnet20_train_b128 0.2000 640.0
RESULT resnet20_train_b128 0.2100 600.0
RESULT resnet20_train_b128 0.2050 620.0
RESULT torch_train_r20_b128 0.30 420.0
FMA peak (measured, f32, all threads): 117 GFLOP/s
RESULT resnet20_train_b32 0.0850 380.0
ROUND 2
FMA peak (measured, f32, all threads): 190 GFLOP/s
RESULT resnet20_train_b128 0.2100 610.0
";

const CHECK: &str = r#"
import sys
sys.path.insert(0, "scripts")
from bench_rounds import contended, median, rounds
r = rounds(sys.argv[1])
print(len(r))
print(median(r[0], "resnet20_train_b128"), median(r[0], "torch_train_r20_b128"), median(r[1], "resnet20_train_b32"))
for i, name in [(0, "resnet20_train_b128"), (0, "resnet20_train_b32"), (0, "torch_train_r20_b128"), (1, "resnet20_train_b128")]:
    print(repr(contended(r[i], name)))
"#;

#[test]
fn rounds_and_contended_runs() {
    let dir = std::env::temp_dir().join(format!("kdscope-bench-rounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let log = dir.join("bench.log");
    std::fs::write(&log, LOG).expect("the log written");
    let out = Command::new("python3")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-c", CHECK])
        .arg(&log)
        .output()
        .expect("python3 runs");
    std::fs::remove_dir_all(&dir).ok();
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    let got = String::from_utf8(out.stdout).expect("UTF-8");
    let want = "2\n\
        620.0 420.0 nan\n\
        ''\n\
        '  (FMA peak 117 of 232 GFLOP/s at its start: contended, rerun)'\n\
        ''\n\
        ''\n";
    assert_eq!(got, want);
}
