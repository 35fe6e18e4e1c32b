//! Op tests: hand-computed cases and finite-difference gradient checks (input and parameters).
use dfdx::prelude::{Backward, SumTo, Tensor, TensorFromVec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::nn::params::{BatchNorm2d, Conv2d, Linear, Store};
use crate::nn::var::{Grads, Shape4, Tracked, Var};

pub(super) fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// `sum(out * r)` as a dfdx scalar, so dfdx's `backward` drives our ops.
pub(super) fn weighted_loss(out: Var<Tracked>, r: &[f32]) -> Tensor<(), f32, crate::nn::Dev, Tracked> {
    let (n, k) = (out.shape.n, out.shape.per_sample());
    let m = out.dfdx_matrix();
    let rt = crate::nn::dev().tensor_from_vec(r.to_vec(), (n, k));
    (m * rt).sum()
}

fn weighted_value(out: &Var, r: &[f32]) -> f64 {
    out.data().iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Checks d(sum(f(x) * r))/dx against central differences, and returns the analytic gradient.
pub(super) fn check_input_grad(
    f: impl Fn(Var<Tracked>) -> Var<Tracked>,
    g: impl Fn(Var) -> Var,
    x: Vec<f32>,
    shape: Shape4,
    eps: f32,
    tol: f64,
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let out0 = g(Var::from_vec(x.clone(), shape));
    let r = rand_vec(&mut rng, out0.shape.numel());
    let xv = Var::from_vec(x.clone(), shape);
    let h = xv.detach();
    let grads: Grads = weighted_loss(f(xv.traced()), &r).backward();
    let mut grads = grads;
    let analytic = h.grad(&mut grads);
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += eps;
        let mut xm = x.clone();
        xm[i] -= eps;
        let fd = (weighted_value(&g(Var::from_vec(xp, shape)), &r) - weighted_value(&g(Var::from_vec(xm, shape)), &r))
            / (2.0 * eps as f64);
        let a = analytic[i] as f64;
        assert!((fd - a).abs() <= tol * (1.0 + fd.abs()), "input grad {i}: analytic {a} vs finite difference {fd}");
    }
    analytic
}

/// Checks the gradients of every parameter of `store` for `f`.
fn check_param_grads(
    store: &mut Store,
    f: impl Fn(&Store, Var<Tracked>) -> Var<Tracked>,
    g: impl Fn(&Store, Var) -> Var,
    x: Vec<f32>,
    shape: Shape4,
    eps: f32,
    tol: f64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let out0 = g(store, Var::from_vec(x.clone(), shape));
    let r = rand_vec(&mut rng, out0.shape.numel());
    let mut grads: Grads = weighted_loss(f(store, Var::from_vec(x.clone(), shape).traced_input()), &r).backward();
    for pi in 0..store.params.len() {
        let analytic = grads.get_or_alloc_mut(&store.params[pi].t).unwrap().to_vec();
        let base = store.params[pi].values();
        for i in 0..base.len() {
            let mut v = base.clone();
            v[i] += eps;
            store.set(crate::nn::PId(pi), v.clone());
            let up = weighted_value(&g(store, Var::from_vec(x.clone(), shape)), &r);
            v[i] -= 2.0 * eps;
            store.set(crate::nn::PId(pi), v);
            let down = weighted_value(&g(store, Var::from_vec(x.clone(), shape)), &r);
            store.set(crate::nn::PId(pi), base.clone());
            let fd = (up - down) / (2.0 * eps as f64);
            let a = analytic[i] as f64;
            assert!(
                (fd - a).abs() <= tol * (1.0 + fd.abs()),
                "param {} [{i}]: analytic {a} vs finite difference {fd}",
                store.params[pi].name
            );
        }
    }
}

#[test]
fn conv2d_hand_computed() {
    // 1 image, 1 channel 3x3, 2x2 kernel of ones, stride 1, no padding: sums of 2x2 windows.
    let mut s = Store::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let conv = Conv2d::new(&mut s, &mut rng, "c", 1, 1, 2, ConvCfg::new(1, 0), true);
    s.set(conv.weight, vec![1.0; 4]);
    s.set(conv.bias.unwrap(), vec![0.5]);
    let x = Var::from_vec((1..=9).map(|v| v as f32).collect(), Shape4::new(1, 1, 3, 3));
    let y = conv.forward(&s, x);
    assert_eq!(y.shape, Shape4::new(1, 1, 2, 2));
    assert_eq!(y.data(), &[12.5, 16.5, 24.5, 28.5]);
    // stride 2, padding 1, 3x3 kernel with only the centre tap: picks x[0,0], x[0,2], x[2,0], x[2,2].
    let mut s = Store::new();
    let conv = Conv2d::new(&mut s, &mut rng, "c", 1, 1, 3, ConvCfg::new(2, 1), false);
    let mut w = vec![0.0; 9];
    w[4] = 2.0;
    s.set(conv.weight, w);
    let y = conv.forward(&s, Var::from_vec((1..=9).map(|v| v as f32).collect(), Shape4::new(1, 1, 3, 3)));
    assert_eq!(y.data(), &[2.0, 6.0, 14.0, 18.0]);
}

#[test]
fn conv2d_gradients_match_finite_differences() {
    for (cin, cout, k, stride, pad, groups, n, hw) in [
        (3, 4, 3, 1, 1, 1, 2, 5),
        (4, 6, 3, 2, 1, 2, 3, 6),
        (4, 4, 3, 1, 1, 4, 1, 4),   // depthwise (direct loops), batch smaller than the pool
        (6, 6, 3, 2, 1, 6, 3, 7),   // depthwise, stride 2, odd size, batch over the pool
        (3, 3, 5, 1, 2, 3, 2, 4),   // depthwise 5x5 wider than half the input
        (4, 8, 3, 1, 1, 4, 2, 4),   // grouped with two outputs per group (GEMM path)
        (3, 5, 1, 1, 0, 1, 2, 3),   // pointwise
        (2, 3, 1, 2, 0, 1, 2, 5),   // strided 1x1 shortcut (tile kernel), odd size
        (3, 4, 1, 2, 0, 1, 1, 6),   // strided 1x1 shortcut, even size, batch smaller than the pool
        (16, 16, 3, 1, 1, 1, 3, 4), // 3x3: tight planes and the blocked weight gradient on AVX-512
        (3, 5, 3, 2, 1, 1, 3, 6),   // 3x3 stride 2, even size: forward on the polyphase planes
        (3, 4, 3, 2, 1, 1, 2, 7),   // 3x3 stride 2, odd size: im2col + GEMM
        (2, 2, 5, 1, 2, 1, 2, 4),   // kernel wider than half the input
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut s = Store::new();
        let conv = Conv2d::new(&mut s, &mut rng, "c", cin, cout, k, ConvCfg::new(stride, pad).groups(groups), true);
        let shape = Shape4::new(n, cin, hw, hw);
        let x = rand_vec(&mut rng, shape.numel());
        let c2 = conv.clone();
        let s_ref = &s;
        check_input_grad(|v| conv.forward(s_ref, v), |v| c2.forward(s_ref, v), x.clone(), shape, 1e-2, 2e-3);
        check_param_grads(&mut s, |s, v| conv.forward(s, v), |s, v| conv.forward(s, v), x, shape, 1e-2, 2e-3);
    }
}

#[test]
fn batch_norm_train_gradients_and_stats() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut s = Store::new();
    let bn = BatchNorm2d::new(&mut s, "bn", 3);
    s.set(bn.gamma, vec![1.5, -0.7, 0.9]);
    s.set(bn.beta, vec![0.1, 0.2, -0.3]);
    let shape = Shape4::new(4, 3, 3, 3);
    let x: Vec<f32> = rand_vec(&mut rng, shape.numel()).iter().map(|v| v * 2.0 + 0.5).collect();
    // Hand-computed statistics: channel 0 mean and (unbiased) variance.
    let ch0: Vec<f64> = (0..4).flat_map(|n| x[n * 27..n * 27 + 9].iter().map(|&v| v as f64)).collect();
    let mu = ch0.iter().sum::<f64>() / 36.0;
    let var_b = ch0.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / 36.0;
    let y = bn.forward(&s, Var::from_vec(x.clone(), shape), true, false);
    {
        let st = s.bns[0].stats.lock().unwrap();
        assert!((st.mean[0] as f64 - 0.1 * mu).abs() < 1e-6);
        assert!((st.var[0] as f64 - (0.9 + 0.1 * var_b * 36.0 / 35.0)).abs() < 1e-5);
        assert_eq!(st.batches, 1);
    }
    let want = 1.5 * (x[0] as f64 - mu) / (var_b + 1e-5).sqrt() + 0.1;
    assert!((y.data()[0] as f64 - want).abs() < 1e-5);
    for fuse_relu in [false, true] {
        let b2 = bn.clone();
        let sr = &s;
        check_input_grad(
            |v| bn.forward(sr, v, true, fuse_relu),
            |v| b2.forward(sr, v, true, fuse_relu),
            x.clone(),
            shape,
            1e-2,
            3e-3,
        );
        check_param_grads(
            &mut s,
            |s, v| bn.forward(s, v, true, fuse_relu),
            |s, v| bn.forward(s, v, true, fuse_relu),
            x.clone(),
            shape,
            1e-2,
            3e-3,
        );
        check_param_grads(
            &mut s,
            |s, v| bn.forward(s, v, false, fuse_relu),
            |s, v| bn.forward(s, v, false, fuse_relu),
            x.clone(),
            shape,
            1e-2,
            3e-3,
        );
        let sr = &s;
        check_input_grad(
            |v| bn.forward(sr, v, false, fuse_relu),
            |v| b2.forward(sr, v, false, fuse_relu),
            x.clone(),
            shape,
            1e-2,
            3e-3,
        );
    }
}

#[test]
fn batch_norm_eval_uses_running_stats() {
    let mut s = Store::new();
    let bn = BatchNorm2d::new(&mut s, "bn", 1);
    {
        let mut st = s.bns[0].stats.lock().unwrap();
        st.mean[0] = 2.0;
        st.var[0] = 4.0;
    }
    let y = bn.forward(&s, Var::from_vec(vec![4.0, 0.0], Shape4::new(1, 1, 1, 2)), false, true);
    let d = (4.0f32 + 1e-5).sqrt();
    assert!((y.data()[0] - 2.0 / d).abs() < 1e-6);
    assert_eq!(y.data()[1], 0.0); // relu
}

#[test]
fn elementwise_and_pools_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let shape = Shape4::new(2, 3, 6, 6);
    // Values away from 0 and without ties, so ReLU and max are differentiable at the test point.
    let mut x: Vec<f32> = (0..shape.numel()).map(|i| (i as f32 * 0.7137).sin() * 2.0).collect();
    for v in x.iter_mut() {
        if v.abs() < 0.05 {
            *v += 0.2;
        }
    }
    check_input_grad(relu, relu, x.clone(), shape, 1e-3, 1e-3);
    check_input_grad(|v| max_pool2d(v, 3, 2, 1), |v| max_pool2d(v, 3, 2, 1), x.clone(), shape, 1e-3, 1e-3);
    check_input_grad(|v| avg_pool2d(v, 3, 2, 1), |v| avg_pool2d(v, 3, 2, 1), x.clone(), shape, 1e-2, 1e-3);
    check_input_grad(|v| adaptive_avg_pool2d(v, 4, 3), |v| adaptive_avg_pool2d(v, 4, 3), x.clone(), shape, 1e-2, 1e-3);
    check_input_grad(global_avg_pool, global_avg_pool, x.clone(), shape, 1e-2, 1e-3);
    check_input_grad(|v| upsample_nearest(v, 9, 12), |v| upsample_nearest(v, 9, 12), x.clone(), shape, 1e-2, 1e-3);
    check_input_grad(|v| scale(v, -1.5), |v| scale(v, -1.5), x.clone(), shape, 1e-2, 1e-3);
    let y: Vec<f32> = rand_vec(&mut rng, shape.numel());
    let yv = y.clone();
    // add and add+relu w.r.t. the first operand (the second is a constant input here).
    for fuse in [false, true] {
        let y1 = y.clone();
        let y2 = yv.clone();
        check_input_grad(
            move |v| add(v, Var::from_vec(y1.clone(), shape).traced(), fuse),
            move |v| add(v, Var::from_vec(y2.clone(), shape), fuse),
            x.clone(),
            shape,
            1e-3,
            1e-3,
        );
    }
}

#[test]
fn pools_hand_computed() {
    let x = Var::from_vec((1..=16).map(|v| v as f32).collect(), Shape4::new(1, 1, 4, 4));
    assert_eq!(max_pool2d(x.detach(), 2, 2, 0).data(), &[6.0, 8.0, 14.0, 16.0]);
    assert_eq!(avg_pool2d(x.detach(), 2, 2, 0).data(), &[3.5, 5.5, 11.5, 13.5]);
    // padding counts in the divisor (count_include_pad): corner window holds only x[0,0] = 1.
    assert_eq!(avg_pool2d(x.detach(), 2, 2, 1).data()[0], 0.25);
    // adaptive 4 -> 3: bins [0,2), [1,3), [2,4) on each axis.
    let a = adaptive_avg_pool2d(x.detach(), 3, 3);
    assert_eq!(a.data()[0], (1.0 + 2.0 + 5.0 + 6.0) / 4.0);
    assert_eq!(a.data()[4], (6.0 + 7.0 + 10.0 + 11.0) / 4.0);
    let g = global_avg_pool(x.detach());
    assert_eq!(g.shape, Shape4::mat(1, 1));
    assert_eq!(g.data(), &[8.5]);
    let u = upsample_nearest(Var::from_vec(vec![1.0, 2.0, 3.0, 4.0], Shape4::new(1, 1, 2, 2)), 4, 4);
    assert_eq!(&u.data()[..8], &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
}

#[test]
fn linear_hand_computed_and_gradients() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut s = Store::new();
    let fc = Linear::new(&mut s, &mut rng, "fc", 3, 2, true);
    s.set(fc.weight, vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
    s.set(fc.bias.unwrap(), vec![0.5, -0.5]);
    let y = fc.forward(&s, Var::from_vec(vec![1.0, 1.0, 2.0], Shape4::mat(1, 3)));
    assert_eq!(y.data(), &[9.5, 0.5]);
    let shape = Shape4::new(4, 2, 2, 2);
    let mut s = Store::new();
    let fc = Linear::new(&mut s, &mut rng, "fc", 8, 5, true);
    let x = rand_vec(&mut rng, shape.numel());
    let f2 = fc.clone();
    let sr = &s;
    check_input_grad(|v| fc.forward(sr, v), |v| f2.forward(sr, v), x.clone(), shape, 1e-2, 1e-3);
    check_param_grads(&mut s, |s, v| fc.forward(s, v), |s, v| fc.forward(s, v), x, shape, 1e-2, 1e-3);
}

#[test]
fn residual_fanout_accumulates_gradients() {
    // y = relu(x) + x: the gradient of x is 1 + [x > 0].
    let x = vec![-1.0, 2.0, -3.0, 4.0];
    let shape = Shape4::new(1, 1, 2, 2);
    let xv = Var::from_vec(x, shape);
    let h = xv.detach();
    let t = xv.traced();
    // Two uses of one tracked value: split the value into two handles sharing the tape.
    let (a, b) = t.fork();
    let y = add(relu(a), b, false);
    let mut grads = weighted_loss(y, &[1.0; 4]).backward();
    assert_eq!(h.grad(&mut grads), vec![1.0, 2.0, 1.0, 2.0]);
    // x + x (both operands one tensor) with the fused ReLU: 2 [2x > 0], weighted by r.
    for fuse in [false, true] {
        let xv = Var::from_vec(vec![-1.0, 2.0, -3.0, 4.0], shape);
        let h = xv.detach();
        let (a, b) = xv.traced().fork();
        let mut grads = weighted_loss(add(a, b, fuse), &[1.0, 0.5, 2.0, -1.0]).backward();
        let want = if fuse { vec![0.0, 1.0, 0.0, -2.0] } else { vec![2.0, 1.0, 4.0, -2.0] };
        assert_eq!(h.grad(&mut grads), want);
    }
}

/// Guided backprop at the op level: with upstream gradient `r` into a ReLU output `y`, the gradient
/// passed on is `r·[y > 0]` normally and `r·[y > 0]·[r > 0]` under `with_guided_relu` — for the plain
/// ReLU, the ReLU fused into the residual add (the one after each ResNet block) and the one fused into
/// batch norm.
#[test]
fn guided_relu_masks_negative_gradients_at_every_relu() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let shape = Shape4::new(2, 3, 2, 2);
    let (a, b) = (rand_vec(&mut rng, shape.numel()), rand_vec(&mut rng, shape.numel()));
    let r = rand_vec(&mut rng, shape.numel());
    let run = |guided: bool, which: usize| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let av = Var::from_vec(a.clone(), shape).traced();
        let bv = Var::from_vec(b.clone(), shape).traced();
        let (av, ak) = av.fork();
        let (bv, bk) = bv.fork();
        let (out, y) = match which {
            0 => {
                let o = relu(av);
                let y = o.to_vec();
                drop(bv);
                (o, y)
            }
            1 => {
                let o = add(av, bv, true);
                let y = o.to_vec();
                (o, y)
            }
            _ => {
                let mut st = Store::new();
                let bn = BatchNorm2d::new(&mut st, "bn", 3);
                drop(bv);
                let o = bn.forward(&st, av, false, true);
                let y = o.to_vec();
                (o, y)
            }
        };
        let loss = weighted_loss(out, &r);
        let mut g = if guided { with_guided_relu(|| loss.backward()) } else { loss.backward() };
        (ak.grad(&mut g), bk.grad(&mut g), y)
    };
    for which in 0..3 {
        let (ga, gb, y) = run(false, which);
        let (qa, qb, _) = run(true, which);
        // Eval-mode BN with fresh statistics: y = relu(x / sqrt(1 + eps)).
        let scale = if which == 2 { 1.0 / (1.0f32 + 1e-5).sqrt() } else { 1.0 };
        let mut guided_differs = false;
        for i in 0..r.len() {
            let plain = if y[i] > 0.0 { r[i] * scale } else { 0.0 };
            let guided = if y[i] > 0.0 && r[i] > 0.0 { r[i] * scale } else { 0.0 };
            assert!((ga[i] - plain).abs() < 1e-6, "op {which}: plain gradient {} vs {plain}", ga[i]);
            assert!((qa[i] - guided).abs() < 1e-6, "op {which}: guided gradient {} vs {guided}", qa[i]);
            if which == 1 {
                assert!((gb[i] - plain).abs() < 1e-6 && (qb[i] - guided).abs() < 1e-6, "residual branch");
            }
            guided_differs |= plain != guided;
        }
        assert!(guided_differs, "op {which}: the case must exercise a negative upstream gradient");
    }
    // Outside the closure the ReLU backward is plain again.
    let (ga, _, y) = run(false, 0);
    assert!(ga.iter().zip(&y).zip(&r).all(|((g, y), r)| *g == if *y > 0.0 { *r } else { 0.0 }));
}

/// Checks d(sum(f(inputs) * r))/d(input_j) against central differences for every input.
fn check_multi_grad(
    f: impl Fn(Vec<Var<Tracked>>) -> Var<Tracked>,
    g: impl Fn(Vec<Var>) -> Var,
    inputs: Vec<(Vec<f32>, Shape4)>,
    eps: f32,
    tol: f64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let plain = |xs: &[(Vec<f32>, Shape4)]| g(xs.iter().map(|(v, s)| Var::from_vec(v.clone(), *s)).collect());
    let r = rand_vec(&mut rng, plain(&inputs).shape.numel());
    let vars: Vec<Var> = inputs.iter().map(|(v, s)| Var::from_vec(v.clone(), *s)).collect();
    let handles: Vec<Var> = vars.iter().map(|v| v.detach()).collect();
    let mut grads: Grads = weighted_loss(f(vars.into_iter().map(|v| v.traced()).collect()), &r).backward();
    for (j, h) in handles.iter().enumerate() {
        let analytic = h.grad(&mut grads);
        for (i, a) in analytic.iter().enumerate() {
            let mut up = inputs.clone();
            up[j].0[i] += eps;
            let mut down = inputs.clone();
            down[j].0[i] -= eps;
            let fd = (weighted_value(&plain(&up), &r) - weighted_value(&plain(&down), &r)) / (2.0 * eps as f64);
            let a = *a as f64;
            assert!(
                (fd - a).abs() <= tol * (1.0 + fd.abs()),
                "input {j} [{i}]: analytic {a} vs finite difference {fd}"
            );
        }
    }
}

#[test]
fn fusion_ops_hand_computed() {
    let x = Var::from_vec(vec![1.0, 2.0, 3.0, 4.0], Shape4::new(1, 2, 1, 2));
    let y = Var::from_vec(vec![10.0, 20.0, 30.0, 40.0], Shape4::new(1, 2, 1, 2));
    // z0 = [0.5, 1], z1 = [0, 0.25] per pixel.
    let z = Var::from_vec(vec![0.5, 1.0, 0.0, 0.25], Shape4::new(1, 2, 1, 2));
    let m = attention_mix(x.detach(), y.detach(), z);
    assert_eq!(m.data(), &[0.5, 2.0 + 5.0, 1.5, 4.0 + 10.0]);
    let c = concat_channels(x, Var::from_vec(vec![7.0, 8.0], Shape4::new(1, 1, 1, 2)));
    assert_eq!((c.shape, c.data()), (Shape4::new(1, 3, 1, 2), &[1.0, 2.0, 3.0, 4.0, 7.0, 8.0][..]));
    let s = sigmoid(Var::from_vec(vec![0.0, 2f32.ln()], Shape4::mat(1, 2)));
    assert!((s.data()[0] - 0.5).abs() < 1e-7 && (s.data()[1] - 2.0 / 3.0).abs() < 1e-6);
}

#[test]
fn fusion_ops_gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let fs = Shape4::new(2, 3, 3, 2);
    let zs = Shape4::new(2, 2, 3, 2);
    let inputs = vec![
        (rand_vec(&mut rng, fs.numel()), fs),
        (rand_vec(&mut rng, fs.numel()), fs),
        (rand_vec(&mut rng, zs.numel()), zs),
    ];
    // The ABF pattern: mix x and y with sigmoid(concat-derived) attention.
    check_multi_grad(
        |v: Vec<Var<Tracked>>| {
            let mut it = v.into_iter();
            let (x, y, z) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            attention_mix(x, y, sigmoid(z))
        },
        |v: Vec<Var>| {
            let mut it = v.into_iter();
            let (x, y, z) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            attention_mix(x, y, sigmoid(z))
        },
        inputs,
        1e-2,
        1e-3,
    );
    let a = Shape4::new(2, 2, 2, 2);
    let b = Shape4::new(2, 3, 2, 2);
    check_multi_grad(
        |v: Vec<Var<Tracked>>| {
            let mut it = v.into_iter();
            concat_channels(it.next().unwrap(), it.next().unwrap())
        },
        |v: Vec<Var>| {
            let mut it = v.into_iter();
            concat_channels(it.next().unwrap(), it.next().unwrap())
        },
        vec![(rand_vec(&mut rng, a.numel()), a), (rand_vec(&mut rng, b.numel()), b)],
        1e-2,
        1e-3,
    );
}

/// Channel shuffle by hand (6 channels, 2 groups: `[0,3,1,4,2,5]`), slicing, and repeated indices
/// (gradients add) against finite differences.
#[test]
fn channel_selection_by_hand_and_finite_differences() {
    let x = Var::from_vec((0..12).map(|v| v as f32).collect(), Shape4::new(1, 6, 1, 2));
    let s = channel_shuffle(x, 2);
    assert_eq!(s.data(), &[0.0, 1.0, 6.0, 7.0, 2.0, 3.0, 8.0, 9.0, 4.0, 5.0, 10.0, 11.0][..]);
    let x = Var::from_vec((0..12).map(|v| v as f32).collect(), Shape4::new(2, 3, 1, 2));
    let s = slice_channels(x, 1, 3);
    assert_eq!((s.shape, s.data()), (Shape4::new(2, 2, 1, 2), &[2.0, 3.0, 4.0, 5.0, 8.0, 9.0, 10.0, 11.0][..]));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let a = Shape4::new(2, 4, 2, 3);
    check_multi_grad(
        |v: Vec<Var<Tracked>>| select_channels(v.into_iter().next().unwrap(), &[3, 0, 3, 1]),
        |v: Vec<Var>| select_channels(v.into_iter().next().unwrap(), &[3, 0, 3, 1]),
        vec![(rand_vec(&mut rng, a.numel()), a)],
        1e-2,
        1e-3,
    );
}
