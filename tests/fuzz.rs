//! The bounded fuzz run of `cargo test`: 10,000 mutated inputs for every reader of outside bytes, no
//! panic, no input slower than 5 s (`kdscope fuzz --inputs 1000000` is the long run; BENCHMARKS.md).
use std::time::Duration;

use kdscope::fuzz::{mutate, run, targets, Rng};

#[test]
fn mutations_are_seeded_and_varied() {
    let seed: Vec<u8> = (0..100).collect();
    let a: Vec<Vec<u8>> = (0..50).map(|_| mutate(&mut Rng::new(7), &seed, 300)).collect();
    assert!(a.windows(2).all(|w| w[0] == w[1]), "same RNG state, same mutation");
    let mut rng = Rng::new(7);
    let many: Vec<Vec<u8>> = (0..2000).map(|_| mutate(&mut rng, &seed, 300)).collect();
    assert!(many.iter().all(|m| m.len() <= 300));
    assert!(many.iter().any(|m| m.len() < 100) && many.iter().any(|m| m.len() > 100));
    let distinct: std::collections::HashSet<&Vec<u8>> = many.iter().collect();
    assert!(distinct.len() > 1800, "{} distinct of 2000", distinct.len());
    // Every byte position gets changed by some input (headers more often, but not only).
    let changed = (0..100).filter(|&i| many.iter().any(|m| m.len() == 100 && m[i] != seed[i])).count();
    assert!(changed > 90, "{changed}");
}

#[test]
fn every_reader_survives_ten_thousand_mutated_inputs() {
    let work = tempfile::tempdir().unwrap();
    let inputs = std::env::var("KDSCOPE_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let mut report = Vec::new();
    for t in targets() {
        let o = run(&t, inputs, 1, work.path(), &work.path().join("kept"), Duration::from_secs(5)).unwrap();
        assert!(o.panics.is_empty(), "{o}\n{:?}", o.panics.iter().take(3).collect::<Vec<_>>());
        assert!(o.slowest.1 < Duration::from_secs(5), "{o}");
        // Mutations must leave some inputs readable and make others fail, or the target tests little.
        assert!(o.accepted < o.inputs, "{o}");
        report.push(o.to_string());
    }
    eprintln!("{}", report.join("\n"));
    assert_eq!(report.len(), targets().len());
}
