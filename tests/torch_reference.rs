//! kdscope against PyTorch on the same weights: the checkpoints in `tests/fixtures` were written by
//! `tests/fixtures/make_torch_reference.py` from the RepDistiller model definitions. Loading them
//! checks the state_dict naming and layouts; the forward, loss, every parameter gradient and the
//! batch-norm running statistics must match PyTorch.
use dfdx::prelude::{AsArray, Backward};
use kdscope::distill::losses::{cross_entropy, logits_of};
use kdscope::nn::{Shape4, Var};
use kdscope::train::checkpoint;
use kdscope::{Model, ModelSpec};
use safetensors::SafeTensors;

fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has no {name}"));
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * scale, "{what}[{i}]: kdscope {x} vs PyTorch {y} (scale {scale})");
    }
}

fn check(arch: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut model = Model::new(ModelSpec::new(arch, 10).unwrap(), 123);
    checkpoint::load_into(dir.join(format!("{arch}_state.safetensors")), &mut model).unwrap();
    let io_bytes = std::fs::read(dir.join(format!("{arch}_io.safetensors"))).unwrap();
    let io = SafeTensors::deserialize(&io_bytes).unwrap();
    let x = f32s(&io, "input");
    let labels: Vec<usize> = io
        .tensor("labels")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as usize)
        .collect();
    let shape = Shape4::new(6, 3, 32, 32);

    let logits = model.logits(Var::from_vec(x.clone(), shape));
    close(logits.data(), &f32s(&io, "logits_eval"), 1e-4, "eval logits");

    let out = model.forward(Var::from_vec(x, shape).traced(), true);
    let loss = cross_entropy(logits_of(out.logits), &labels);
    let want_loss = f32s(&io, "loss_train")[0];
    assert!((loss.array() - want_loss).abs() < 1e-4, "train loss {} vs {want_loss}", loss.array());
    let mut grads = loss.backward();
    for p in &model.store.params {
        let g = grads.get_or_alloc_mut(kdscope::nn::params::tensor_of(p)).unwrap().to_vec();
        close(&g, &f32s(&io, &format!("grad.{}", p.name)), 2e-3, &format!("grad of {}", p.name));
    }
    for bn in &model.store.bns {
        let st = bn.stats.lock().unwrap();
        close(&st.mean, &f32s(&io, &format!("after_train_forward.{}.running_mean", bn.prefix)), 1e-5, "running_mean");
        close(&st.var, &f32s(&io, &format!("after_train_forward.{}.running_var", bn.prefix)), 1e-5, "running_var");
    }
}

#[test]
fn resnet8_matches_pytorch() {
    check("resnet8");
}

#[test]
fn wrn_16_1_matches_pytorch() {
    check("wrn_16_1");
}
