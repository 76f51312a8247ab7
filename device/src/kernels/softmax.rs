//! Softmax over a short last axis (MTCNN's two classes, face and not), row by row.
//!
//! Tract (0.23) runs a softmax over the last axis of P-Net's `[1, W, H, 2]` map through its
//! generic reduction: 0.39 ms of P-Net's 1.26 on a 150x150 level, more than its two 1x1
//! convolutions and its max-pool together. A row of two floats needs no vector code: the max,
//! two exponentials and a division, in one pass over the map.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

/// Rows at most this long are the op's: MTCNN's have 2 classes.
const MAX_ROW: usize = 16;

/// A float softmax over the last axis, of at most `MAX_ROW` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSoftmax {
    shape: TVec<usize>,
}

/// The op for the softmax at `id`, its input and the outlet it replaces; `None` when the node is
/// not a float softmax over a short last axis of a concrete shape.
pub(super) fn fusable(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(RowSoftmax, OutletId, OutletId)>> {
    let node = model.node(id);
    let Some(softmax) = node.op_as::<Softmax>() else {
        return Ok(None);
    };
    let x = model.outlet_fact(node.inputs[0])?;
    let Some(shape) = x.shape.as_concrete() else {
        return Ok(None);
    };
    let last = shape.len().checked_sub(1);
    let fits = softmax.kind == SoftmaxKind::Softmax
        && softmax.quant_output_dt.is_none()
        && x.datum_type == f32::datum_type()
        && last.is_some_and(|last| softmax.axes.as_slice() == [last])
        && shape.last().is_some_and(|&n| (1..=MAX_ROW).contains(&n));
    Ok(fits.then(|| {
        (
            RowSoftmax {
                shape: shape.into(),
            },
            node.inputs[0],
            OutletId::new(id, 0),
        )
    }))
}

/// `y = exp(x - max x) / sum exp(x - max x)` for each row of `x`, in place.
pub fn run(rows: &mut [f32], row: usize) {
    assert!(row > 0 && rows.len().is_multiple_of(row));
    for r in rows.chunks_exact_mut(row) {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in r.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        for v in r.iter_mut() {
            *v /= sum;
        }
    }
}

impl Op for RowSoftmax {
    fn name(&self) -> StaticName {
        "SmoothfaceSoftmax".into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for RowSoftmax {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, mut inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        // Taken, not cloned: computed in place unless another op still holds the input.
        let mut y = inputs.remove(0).into_tensor();
        ensure!(
            y.shape() == &*self.shape,
            "softmax input of the wrong shape"
        );
        {
            let mut view = y.try_as_plain_ram_mut()?;
            let row = *self.shape.last().expect("a last axis");
            run(view.as_slice_mut::<f32>()?, row);
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for RowSoftmax {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1);
        Ok(tvec!(f32::fact(&*self.shape)))
    }

    as_op!();
}
