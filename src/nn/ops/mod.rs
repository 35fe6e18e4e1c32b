//! Differentiable ops written on dfdx's public tape API (`Tape::add_backward_op`), multi-threaded
//! with rayon and GEMM-based where it pays. Each op hands its input gradients on through
//! `Saved::give` (a freshly computed buffer), `give_copy` or `grad_buf` (in place), see `nn::var`.
#[cfg(target_arch = "x86_64")]
pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod amx_conv;
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub mod amx_wgrad;
mod batchnorm;
pub(crate) mod blas;
pub(crate) mod bn_grad;
mod conv;
pub mod cpu;
#[doc(hidden)]
pub mod deferred;
#[doc(hidden)]
pub mod direct;
mod dropout;
mod elementwise;
mod fusion;
#[doc(hidden)]
#[cfg(target_arch = "x86_64")]
mod isa;
mod linear;
mod pointwise_s2;
mod pool;
mod prefetch;
mod threads;
pub mod tight;
mod tight_kernel;
#[doc(hidden)]
pub mod tight_s2;
#[doc(hidden)]
pub mod wgrad_blocked;

pub use batchnorm::{batch_norm, eval_affine, BnCfg, RunningStats};
pub use conv::{conv2d, conv2d_folded, out_size, ConvCfg};
pub use cpu::simd_level;
pub use dropout::{dropout, relu6, seed_dropout, without_dropout};
pub(crate) use elementwise::with_flag;
pub use elementwise::{
    add, grad_probe, grad_probe_cut, relu, reshape, scale, with_frozen_params, with_guided_relu, GradProbe,
};
pub use fusion::{attention_mix, channel_shuffle, concat_channels, select_channels, sigmoid, slice_channels};
pub use linear::linear;
pub use pool::{adaptive_avg_pool2d, avg_pool2d, global_avg_pool, max_pool2d, upsample_nearest};
pub use threads::on_pool;

/// Whether this thread's 3x3 stride-1 convolutions run in bf16 on AMX tiles
/// ([`amx::bf16_active`]; never off x86-64).
pub fn bf16_active() -> bool {
    #[cfg(target_arch = "x86_64")]
    return amx::bf16_active();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(test)]
mod tests;
#[cfg(all(test, target_arch = "x86_64"))]
mod tests_amx;
#[cfg(test)]
mod tests_deferred;
#[cfg(test)]
mod tests_folded;
#[cfg(test)]
mod tests_grad_flow;
#[cfg(test)]
mod tests_heads;
#[cfg(test)]
mod tests_pool;
#[cfg(test)]
mod tests_tight;
#[cfg(test)]
mod tests_tight_s2;
#[cfg(test)]
mod tests_wgrad_blocked;
