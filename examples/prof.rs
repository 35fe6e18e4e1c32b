use dfdx::prelude::Backward;
use kdscope::distill::losses::{cross_entropy, logits_of};
use kdscope::nn::{Sgd, Shape4, Var};
use std::time::Instant;
fn main() {
    kdscope::perf::tune_allocator();
    let mut model = kdscope::Model::build("resnet20", 100, 0).unwrap();
    let mut sgd = Sgd::new(0.05, 0.9, true, 5e-4);
    let x = Var::from_vec(vec![0.5; 128 * 3 * 1024], Shape4::new(128, 3, 32, 32));
    let y: Vec<usize> = (0..128).map(|i| i % 100).collect();
    for it in 0..6 {
        let t0 = Instant::now();
        let out = model.forward_with(x.detach().traced_input(), true, false);
        let t1 = Instant::now();
        let loss = cross_entropy(logits_of(out.logits), &y);
        let mut grads = loss.backward();
        let t2 = Instant::now();
        sgd.step(&mut model.store, &mut grads).unwrap();
        let t3 = Instant::now();
        drop(grads);
        let t4 = Instant::now();
        if it > 0 {
            println!(
                "fwd {:.1}ms bwd {:.1}ms sgd {:.1}ms drop {:.1}ms",
                (t1 - t0).as_secs_f64() * 1e3,
                (t2 - t1).as_secs_f64() * 1e3,
                (t3 - t2).as_secs_f64() * 1e3,
                (t4 - t3).as_secs_f64() * 1e3
            );
        }
    }
}
