//! Parameter storage, layer types and the SGD step: the part of the thin dfdx layer that models see.
//!
//! A [`Store`] owns every trainable tensor of a model (as flat dfdx tensors, named as in PyTorch's
//! `state_dict`) and every batch-norm's running statistics. Layers ([`Conv2d`], [`BatchNorm2d`],
//! [`Linear`]) hold indices into it, so checkpoints, parameter counts and the optimiser walk one list.
use std::sync::Mutex;

use dfdx::prelude::{Tape, TensorFromVec};
use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::ops::{self, BnCfg, ConvCfg, RunningStats};
use super::var::{dev, Dev, Flat, Var};

/// A trainable tensor.
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub(crate) t: Flat,
}

impl Param {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Current values (a copy, see [`crate::nn::var::values`]).
    pub fn values(&self) -> Vec<f32> {
        crate::nn::var::values(&self.t)
    }
}

/// The dfdx tensor behind a parameter (to look up its gradient in a [`super::Grads`]).
pub fn tensor_of(p: &Param) -> &Flat {
    &p.t
}

/// Running statistics of one batch-norm layer, with its name prefix (`layer1.0.bn1`).
pub struct BnBuffers {
    pub prefix: String,
    pub stats: Mutex<RunningStats>,
}

/// Index of a parameter in a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PId(pub usize);

/// A named tensor that is saved with checkpoints but not trained (e.g. CRD's memory banks).
pub struct Buffer {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// All parameters and buffers of a model.
#[derive(Default)]
pub struct Store {
    pub params: Vec<Param>,
    pub bns: Vec<BnBuffers>,
    /// Untrained state saved with checkpoints (the optimiser never touches it).
    pub buffers: Vec<Buffer>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter with the given values.
    pub fn add(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> PId {
        let name = name.into();
        assert_eq!(shape.iter().product::<usize>(), values.len(), "parameter {name}: shape/value mismatch");
        assert!(self.find(&name).is_none(), "duplicate parameter name {name}");
        let len = values.len();
        let t = dev().tensor_from_vec(values, (len,));
        self.params.push(Param { name, shape, t });
        PId(self.params.len() - 1)
    }

    /// Adds an untrained buffer; returns its index in `buffers`.
    pub fn add_buffer(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> usize {
        let name = name.into();
        assert_eq!(shape.iter().product::<usize>(), values.len(), "buffer {name}: shape/value mismatch");
        self.buffers.push(Buffer { name, shape, values });
        self.buffers.len() - 1
    }

    pub fn get(&self, id: PId) -> &Param {
        &self.params[id.0]
    }

    pub fn find(&self, name: &str) -> Option<PId> {
        self.params.iter().position(|p| p.name == name).map(PId)
    }

    /// Replaces a parameter's values (shape must match).
    pub fn set(&mut self, id: PId, values: Vec<f32>) {
        let p = &mut self.params[id.0];
        assert_eq!(values.len(), p.numel(), "parameter {}: {} values for shape {:?}", p.name, values.len(), p.shape);
        // In place: gradients and optimiser state are keyed by the tensor's id.
        p.t.copy_from(&values);
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params.iter().map(Param::numel).sum()
    }

    /// Flat copy of all parameter values, in order (for comparisons and determinism checks).
    pub fn flat_values(&self) -> Vec<f32> {
        self.params.iter().flat_map(|p| p.values()).collect()
    }
}

thread_local! {
    pub(crate) static SKIP_INIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with parameter initialisers returning zeros instead of drawing (for models built only to
/// be loaded from a checkpoint, whose every value is then replaced: the draws were most of the time a
/// load took).
pub fn without_init<T>(f: impl FnOnce() -> T) -> T {
    ops::with_flag(&SKIP_INIT, f)
}

fn skip_init() -> bool {
    SKIP_INIT.with(|s| s.get())
}

/// Kaiming-normal values for a tensor with `fan` (`std = sqrt(2 / fan)`).
pub fn kaiming_normal(rng: &mut impl Rng, n: usize, fan: usize) -> Vec<f32> {
    if skip_init() {
        return vec![0.0; n];
    }
    let d = Normal::new(0.0f32, (2.0 / fan as f32).sqrt()).expect("valid std");
    (0..n).map(|_| d.sample(rng)).collect()
}

/// PyTorch's default `nn.Linear`/`nn.Conv2d` init: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
pub fn uniform_fan_in(rng: &mut impl Rng, n: usize, fan_in: usize) -> Vec<f32> {
    if skip_init() {
        return vec![0.0; n];
    }
    let b = 1.0 / (fan_in as f32).sqrt();
    (0..n).map(|_| rng.gen_range(-b..b)).collect()
}

/// How a layer's weights are drawn: data handed to the constructor (as burn's `Initializer` in a layer
/// config), so no model overwrites what a constructor drew.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// `N(0, 2/fan_out)`, `fan_out = out·k²/groups`, zero bias: RepDistiller's CIFAR ResNets, WRNs, VGGs.
    KaimingFanOut,
    /// `U(±1/√fan_in)` for weight and bias: PyTorch's default for `nn.Conv2d` and `nn.Linear`.
    UniformFanIn,
    /// `N(0, std²)`, zero bias.
    Normal(f32),
}

impl Init {
    /// `n` weight values of a layer with the given fans.
    fn weights(self, rng: &mut impl Rng, n: usize, fan_in: usize, fan_out: usize) -> Vec<f32> {
        match self {
            Init::KaimingFanOut => kaiming_normal(rng, n, fan_out),
            Init::UniformFanIn => uniform_fan_in(rng, n, fan_in),
            Init::Normal(_) if skip_init() => vec![0.0; n],
            Init::Normal(std) => {
                let d = Normal::new(0.0f32, std).expect("valid std");
                (0..n).map(|_| d.sample(rng)).collect()
            }
        }
    }

    /// `n` bias values.
    fn bias(self, rng: &mut impl Rng, n: usize, fan_in: usize) -> Vec<f32> {
        match self {
            Init::UniformFanIn => uniform_fan_in(rng, n, fan_in),
            Init::KaimingFanOut | Init::Normal(_) => vec![0.0; n],
        }
    }
}

/// 2-D convolution layer (weight `[out, in/groups, k, k]`, optional bias).
#[derive(Clone, Debug)]
pub struct Conv2d {
    pub weight: PId,
    pub bias: Option<PId>,
    pub shape: [usize; 4],
    pub cfg: ConvCfg,
}

impl Conv2d {
    /// Creates a conv named `name` (`name.weight`, `name.bias`), Kaiming-normal (fan-out) init as
    /// RepDistiller's CIFAR models.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        s: &mut Store,
        rng: &mut impl Rng,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        cfg: ConvCfg,
        bias: bool,
    ) -> Self {
        Self::with_init(s, rng, name, (cin, cout), k, cfg, bias, Init::KaimingFanOut)
    }

    /// A conv with `io = (in, out)` channels initialised by `init`.
    #[allow(clippy::too_many_arguments)]
    pub fn with_init(
        s: &mut Store,
        rng: &mut impl Rng,
        name: &str,
        io: (usize, usize),
        k: usize,
        cfg: ConvCfg,
        bias: bool,
        init: Init,
    ) -> Self {
        let (cin, cout) = io;
        let shape = [cout, cin / cfg.groups, k, k];
        let n = shape.iter().product();
        let fan_in = cin / cfg.groups * k * k;
        let weight =
            s.add(format!("{name}.weight"), shape.to_vec(), init.weights(rng, n, fan_in, cout * k * k / cfg.groups));
        let bias = bias.then(|| s.add(format!("{name}.bias"), vec![cout], init.bias(rng, cout, fan_in)));
        Self { weight, bias, shape, cfg }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>) -> Var<T> {
        let w = s.get(self.weight);
        let b = self.bias.map(|b| (&s.get(b).t, s.get(b).values()));
        ops::conv2d(x, &w.t, w.values(), self.shape, b, self.cfg)
    }
}

/// Batch normalisation layer (`name.weight`, `name.bias`, running statistics).
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    pub gamma: PId,
    pub beta: PId,
    pub stats: usize,
    pub cfg: BnCfg,
}

impl BatchNorm2d {
    pub fn new(s: &mut Store, name: &str, c: usize) -> Self {
        let gamma = s.add(format!("{name}.weight"), vec![c], vec![1.0; c]);
        let beta = s.add(format!("{name}.bias"), vec![c], vec![0.0; c]);
        s.bns.push(BnBuffers { prefix: name.to_string(), stats: Mutex::new(RunningStats::new(c)) });
        Self { gamma, beta, stats: s.bns.len() - 1, cfg: BnCfg::default() }
    }

    /// Batch norm, fused with a ReLU when `relu`.
    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>, train: bool, relu: bool) -> Var<T> {
        self.forward_add(s, x, None, train, relu)
    }

    /// `relu?(self(x) + res)`: the batch norm, a residual added and a ReLU in one op.
    pub fn forward_add<T: Tape<f32, Dev>>(
        &self,
        s: &Store,
        x: Var<T>,
        res: Option<Var<T>>,
        train: bool,
        relu: bool,
    ) -> Var<T> {
        let (g, b) = (s.get(self.gamma), s.get(self.beta));
        let mut stats = s.bns[self.stats].stats.lock().expect("batch-norm statistics lock");
        ops::batch_norm(x, res, &g.t, g.values(), &b.t, b.values(), &mut stats, train, BnCfg { relu, ..self.cfg })
    }

    /// `self(conv(x))`, fused with a ReLU when `relu`. In evaluation without a tape inside
    /// [`with_folded_batch_norm`] (logits-only inference: predictions, a KD teacher, `Model::logits`)
    /// the batch norm is folded into the convolution: weights scaled by
    /// `gamma / sqrt(running_var + eps)` per output channel, bias `beta - mean * scale` (plus the
    /// conv's own bias, scaled), the ReLU applied in the convolution's output pass. One op and one
    /// pass over the output instead of two; the values agree to f32 rounding.
    pub fn forward_conv<T: Tape<f32, Dev>>(
        &self,
        s: &Store,
        conv: &Conv2d,
        x: Var<T>,
        train: bool,
        relu: bool,
    ) -> Var<T> {
        self.forward_conv_add(s, conv, x, None, train, relu)
    }

    /// `relu?(self(conv(x)) + res)`, a ResNet block's last convolution, batch norm, shortcut add and
    /// ReLU; folded as [`Self::forward_conv`] is, the add and ReLU then in the convolution's output
    /// pass.
    pub fn forward_conv_add<T: Tape<f32, Dev>>(
        &self,
        s: &Store,
        conv: &Conv2d,
        x: Var<T>,
        res: Option<Var<T>>,
        train: bool,
        relu: bool,
    ) -> Var<T> {
        if train || T::OWNS_TAPE || !FOLD_BN.with(|f| f.get()) {
            return self.forward_add(s, conv.forward(s, x), res, train, relu);
        }
        let (gamma, beta) = (s.get(self.gamma).values(), s.get(self.beta).values());
        let stats = s.bns[self.stats].stats.lock().expect("batch-norm statistics lock");
        let (scale, mut shift) = ops::eval_affine(&gamma, &beta, &stats, self.cfg.eps);
        drop(stats); // not held through the convolution
        if let Some(cb) = conv.bias {
            shift.iter_mut().zip(s.get(cb).values()).zip(&scale).for_each(|((t, b), k)| *t += b * k);
        }
        let mut w = s.get(conv.weight).values();
        let per_out = w.len() / scale.len();
        w.chunks_mut(per_out).zip(&scale).for_each(|(row, k)| row.iter_mut().for_each(|v| *v *= k));
        ops::conv2d_folded(x, res, &w, conv.shape, &shift, conv.cfg, relu)
    }
}

thread_local! {
    pub(crate) static FOLD_BN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with [`BatchNorm2d::forward_conv`] folding batch norms into their convolutions in
/// untaped evaluation (`Model::forward_with` does this for logits-only forwards). Folded values
/// differ from the two-op path by f32 rounding, so forwards whose intermediate values are compared
/// with a recorded forward's (features, explanations) run outside it.
pub fn with_folded_batch_norm<R>(f: impl FnOnce() -> R) -> R {
    ops::with_flag(&FOLD_BN, f)
}

/// Fully connected layer (`name.weight` `[out, in]`, `name.bias`), PyTorch default init.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: PId,
    pub bias: Option<PId>,
    pub out: usize,
}

impl Linear {
    pub fn new(s: &mut Store, rng: &mut impl Rng, name: &str, cin: usize, cout: usize, bias: bool) -> Self {
        Self::with_init(s, rng, name, (cin, cout), bias, Init::UniformFanIn)
    }

    /// A fully connected layer with `io = (in, out)` features initialised by `init`.
    pub fn with_init(
        s: &mut Store,
        rng: &mut impl Rng,
        name: &str,
        io: (usize, usize),
        bias: bool,
        init: Init,
    ) -> Self {
        let (cin, cout) = io;
        let weight = s.add(format!("{name}.weight"), vec![cout, cin], init.weights(rng, cin * cout, cin, cout));
        let bias = bias.then(|| s.add(format!("{name}.bias"), vec![cout], init.bias(rng, cout, cin)));
        Self { weight, bias, out: cout }
    }

    pub fn forward<T: Tape<f32, Dev>>(&self, s: &Store, x: Var<T>) -> Var<T> {
        let w = s.get(self.weight);
        let b = self.bias.map(|b| (&s.get(b).t, s.get(b).values()));
        ops::linear(x, &w.t, w.values(), self.out, b)
    }
}

/// A conv (no bias, PyTorch's default init) followed by batch norm, named `{name}.conv{n}` and
/// `{name}.bn{n}` (the ShuffleNets' layer naming; `conv{n}` / `bn{n}` for an empty `name`).
pub fn conv_bn(
    s: &mut Store,
    rng: &mut impl Rng,
    name: &str,
    n: usize,
    io: (usize, usize),
    k: usize,
    cfg: ConvCfg,
) -> (Conv2d, BatchNorm2d) {
    let prefix = if name.is_empty() { String::new() } else { format!("{name}.") };
    let conv = Conv2d::with_init(s, rng, &format!("{prefix}conv{n}"), io, k, cfg, false, Init::UniformFanIn);
    (conv, BatchNorm2d::new(s, &format!("{prefix}bn{n}"), io.1))
}

/// SGD (momentum / Nesterov, L2 weight decay) using dfdx's SGD kernel, which follows PyTorch.
pub struct Sgd {
    pub cfg: dfdx::prelude::SgdConfig,
    velocity: super::var::Grads,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        use dfdx::prelude::{Momentum, SgdConfig, WeightDecay};
        let momentum = (momentum > 0.0).then_some(if nesterov {
            Momentum::Nesterov(momentum)
        } else {
            Momentum::Classic(momentum)
        });
        let weight_decay = (weight_decay > 0.0).then_some(WeightDecay::L2(weight_decay));
        Self { cfg: SgdConfig { lr, momentum, weight_decay }, velocity: dfdx::prelude::Gradients::leaky() }
    }

    /// Momentum buffer of parameter `p` (zeros before the first step).
    pub fn velocity(&mut self, p: &Param) -> Vec<f32> {
        self.velocity.get_or_alloc_mut(&p.t).map(|v| v.to_vec()).unwrap_or_else(|_| vec![0.0; p.numel()])
    }

    /// Restores the momentum buffer of parameter `p`.
    pub fn set_velocity(&mut self, p: &Param, values: &[f32]) -> anyhow::Result<()> {
        let v = self.velocity.get_or_alloc_mut(&p.t).map_err(|e| anyhow::anyhow!("velocity of {}: {e}", p.name))?;
        anyhow::ensure!(
            v.len() == values.len(),
            "velocity of {}: {} values for {} parameters",
            p.name,
            values.len(),
            v.len()
        );
        v.copy_from_slice(values);
        Ok(())
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// One update of every parameter of `store` from `grads`. A parameter that received no
    /// gradient is updated with a zero gradient (weight decay and momentum still act), which differs
    /// from PyTorch only for parameters that did not take part in the forward pass.
    pub fn step(&mut self, store: &mut Store, grads: &mut super::var::Grads) -> anyhow::Result<()> {
        for p in store.params.iter_mut() {
            let g = grads.get_or_alloc_mut(&p.t).map_err(|e| anyhow::anyhow!("gradient of {}: {e}", p.name))?;
            let v = self.velocity.get_or_alloc_mut(&p.t).map_err(|e| anyhow::anyhow!("velocity of {}: {e}", p.name))?;
            self.cfg.try_update(&mut p.t, v, g).map_err(|e| anyhow::anyhow!("SGD update of {}: {e}", p.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::var::Shape4;
    use rand::SeedableRng;

    /// Without a tape, evaluation folds the batch norm into the convolution; with a tape it runs
    /// the two ops. Both give the same values, for the direct 3x3 kernel, a stride-2 3x3, a 1x1 with
    /// its own bias and a depthwise 3x3, with and without the ReLU and a residual added (a ResNet
    /// block's end; at 8x8 in the tight kernel's output pass), on running statistics, scales and
    /// shifts far from the identity.
    #[test]
    fn folded_conv_bn_matches_conv_then_bn() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let cases = [
            (5, 6, 3, ConvCfg::new(1, 1), false),
            (5, 6, 3, ConvCfg::new(2, 1), false),
            (5, 6, 1, ConvCfg::new(1, 0), true),
            (6, 6, 3, ConvCfg::new(1, 1).groups(6), false),
        ];
        for (cin, cout, k, cfg, bias) in cases {
            let mut s = Store::new();
            let conv = Conv2d::new(&mut s, &mut rng, "c", cin, cout, k, cfg, bias);
            let bn = BatchNorm2d::new(&mut s, "bn", cout);
            let vals = |a: f32, b: f32| (0..cout).map(|i| a + b * ((i * 7 % 5) as f32 - 2.0)).collect::<Vec<f32>>();
            s.set(bn.gamma, vals(1.3, -0.4));
            s.set(bn.beta, vals(-0.2, 0.3));
            {
                let mut st = s.bns[bn.stats].stats.lock().unwrap();
                st.mean = vals(0.5, 0.6);
                st.var = vals(2.0, 0.7);
            }
            // 8x8: the tight kernel's planes (AVX-512), with the residual in its output pass.
            for (shape, with_res) in [((9, 7), false), ((9, 7), true), ((8, 8), true)] {
                let shape = Shape4::new(3, cin, shape.0, shape.1);
                let x: Vec<f32> = (0..shape.numel()).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                let side = |n| ops::out_size(n, k, cfg.stride, cfg.pad);
                let oshape = Shape4::new(3, cout, side(shape.h), side(shape.w));
                let res: Vec<f32> = (0..oshape.numel()).map(|i| ((i * 29 % 31) as f32 - 15.0) / 6.0).collect();
                let res = || with_res.then(|| Var::from_vec(res.clone(), oshape));
                for relu in [false, true] {
                    let run = |x: Var<_>, r| bn.forward_conv_add(&s, &conv, x, r, false, relu);
                    let folded = with_folded_batch_norm(|| run(Var::from_vec(x.clone(), shape), res()));
                    let unfolded = run(Var::from_vec(x.clone(), shape), res());
                    let xt = Var::from_vec(x.clone(), shape).traced();
                    let plain = bn.forward_conv_add(&s, &conv, xt, res().map(Var::traced), false, relu);
                    assert_eq!(folded.shape, plain.shape);
                    assert_eq!(unfolded.data(), plain.data(), "outside with_folded_batch_norm: the two ops");
                    assert_ne!(folded.data(), plain.data(), "folded: rounded differently somewhere");
                    let scale = plain.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    assert!(scale > 1.0, "a non-trivial output");
                    let zeros = plain.data().iter().filter(|v| **v == 0.0).count();
                    assert_eq!(relu, zeros > 0, "the ReLU clips some outputs, and only with relu");
                    for (a, b) in folded.data().iter().zip(plain.data()) {
                        assert!((a - b).abs() <= 2e-6 * scale, "k{k} {cfg:?} relu {relu} {shape}: folded {a} vs {b}");
                    }
                }
            }
        }
    }
}
