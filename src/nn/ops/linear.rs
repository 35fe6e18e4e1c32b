//! Fully connected layer `y = x Wᵀ + b` with PyTorch's `[out, in]` weight layout.
use dfdx::prelude::Tape;

use super::blas::{sgemm, threads, Mat};
use crate::nn::var::{accumulate, finish, Dev, Flat, Grads, Shape4, Var};

/// `x` is read as the matrix `(n, c*h*w)`; the result is the matrix `(n, out)`.
pub fn linear<T: Tape<f32, Dev>>(
    x: Var<T>,
    w: &Flat,
    w_data: Vec<f32>,
    out_features: usize,
    bias: Option<(&Flat, Vec<f32>)>,
) -> Var<T> {
    let (xs, tape, s, needs) = x.split();
    let (n, k, o) = (s.n, s.per_sample(), out_features);
    assert_eq!(
        w_data.len(),
        o * k,
        "linear: weight [{o}, {}] does not fit input with {k} features",
        w_data.len() / o.max(1)
    );
    let mut out = vec![0.0f32; n * o];
    if let Some((_, b)) = &bias {
        for row in out.chunks_mut(o) {
            row.copy_from_slice(b);
        }
    }
    let th = threads();
    sgemm(n, o, k, Mat::rm(xs.data(), k), Mat::rm_t(&w_data, k), &mut out, o, bias.is_some(), th);
    let wt = w.clone();
    let bt = bias.map(|(b, _)| b.clone());
    finish(out, Shape4::mat(n, o), tape, move |grads: &mut Grads, gout, _| {
        if needs {
            let mut dx = xs.grad_buf(grads)?;
            sgemm(n, k, o, Mat::rm(&gout, o), Mat::rm(&w_data, k), &mut dx, k, true, th);
        }
        if super::elementwise::params_frozen() {
            return Ok(());
        }
        let mut dw = vec![0.0f32; o * k];
        sgemm(o, k, n, Mat::rm_t(&gout, o), Mat::rm(xs.data(), k), &mut dw, k, false, th);
        accumulate(grads, &wt, &dw)?;
        if let Some(bt) = bt {
            let mut db = vec![0.0f32; o];
            for row in gout.chunks(o) {
                for (d, g) in db.iter_mut().zip(row) {
                    *d += g;
                }
            }
            accumulate(grads, &bt, &db)?;
        }
        Ok(())
    })
}
