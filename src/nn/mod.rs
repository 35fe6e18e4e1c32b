//! The numeric core: kdscope's thin layer over dfdx (values, ops, parameters, optimiser step).
pub mod ops;
pub mod params;
pub mod profile;
pub mod var;

pub use params::{
    conv_bn, with_folded_batch_norm, without_init, BatchNorm2d, Conv2d, Init, Linear, PId, Param, Sgd, Store,
};
pub use var::{dev, Dev, Grads, Shape4, Tracked, Var};
