//! Channels-last 1x1 convolutions (`…HWI,OI->…HWO` matrix products) with their bias, in one pass
//! and without packing the activations.
//!
//! Tract (0.23) makes the larger of the two output dimensions its kernel's rows: here the pixels,
//! so with channels-last outputs each tile is stored one float at a time, and it packs the
//! activations before every product (MobileFaceNet: 6.1 ms of matrix products and 0.5 ms of
//! packing, where onnxruntime's 1x1 convolutions take about 4.8). This op reads the activations
//! where they are, a row of input channels per pixel, through the dense convolution's kernel
//! ([`super::direct`]) with a 1x1 window: a tile of 6 pixels by 16 output channels in twelve
//! vector registers, each step broadcasting one input value per pixel against 16 weights packed
//! when the plan is made, the tile starting from the bias and stored as whole vectors.

use super::direct::{self, tensor1, PANEL};
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;

/// A float 1x1 convolution over a channels-last tensor: `y[p, o] = bias[o] + sum_i x[p, i] w[o, i]`
/// for every pixel `p` (all axes but the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedPointwise {
    /// The dense kernel's geometry for it: a 1x1 window over one row of all the pixels (the
    /// product of all input axes but the last).
    geometry: direct::Geometry,
    output_shape: TVec<usize>,
    /// `[co / 16 rounded up, ci, 16]`: for each panel of 16 output channels, their weights for
    /// each input channel, zero past `co` ([`direct::pack`] for a 1x1 window).
    panels: Arc<Tensor>,
    /// `[co rounded up to 16]`, zero past `co`.
    bias: Arc<Tensor>,
}

impl FusedPointwise {
    /// The op for weights `w` (`[co, ci]`) and `bias` (`[co]`) over `pixels` pixels, its output
    /// shaped `output_shape`.
    pub fn new(
        w: &[f32],
        bias: &[f32],
        pixels: usize,
        output_shape: &[usize],
    ) -> TractResult<FusedPointwise> {
        let co = bias.len();
        ensure!(
            co > 0 && w.len().is_multiple_of(co),
            "weights are not [co, ci]"
        );
        let ci = w.len() / co;
        // `[co, ci]` weights are OIHW ones with a 1x1 window.
        let geometry = direct::Geometry::unpadded(1, 1, pixels, ci, co, 1, 1);
        let (packed, padded_bias) = direct::pack(&geometry, w, bias);
        Ok(FusedPointwise {
            geometry,
            output_shape: output_shape.into(),
            panels: tensor1(&packed)
                .into_shape(&[co.div_ceil(PANEL), ci, PANEL])?
                .into_arc_tensor(),
            bias: tensor1(&padded_bias).into_arc_tensor(),
        })
    }
}

/// A channels-last 1x1 convolution as tract's declutter leaves it: an einsum over `[…pixels, ci]`
/// floats with constant `[co, ci]` weights, and the bias Add after it when there is one.
pub(super) struct OneByOne {
    /// The product of all input axes but the last.
    pub pixels: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// The einsum's output shape.
    pub output_shape: TVec<usize>,
    /// `[co, ci]` floats.
    pub weights: Arc<Tensor>,
    /// `[co]`: the bias Add's, or zeros.
    pub bias: Vec<f32>,
    /// The outlet the convolution's result leaves by: the bias Add's, or the einsum's.
    pub output: OutletId,
}

/// The 1x1 convolution computed by the einsum at `id`, if it is one.
pub(super) fn one_by_one(model: &TypedModel, id: usize) -> TractResult<Option<OneByOne>> {
    let node = model.node(id);
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    let facts = model.node_input_facts(id)?;
    let [x, w] = facts.as_slice() else {
        return Ok(None);
    };
    let output = &node.outputs[0].fact;
    let (Some(shape), Some(out_shape), Some(w)) = (
        x.shape.as_concrete(),
        output.shape.as_concrete(),
        w.konst.as_ref(),
    ) else {
        return Ok(None);
    };
    if x.datum_type != f32::datum_type()
        || w.rank() != 2
        || !pixels_by_channels(einsum, shape, out_shape)
    {
        return Ok(None);
    }
    let (co, ci) = (w.shape()[0], w.shape()[1]);
    if shape.last() != Some(&ci) || out_shape.last() != Some(&co) {
        return Ok(None);
    }
    let product = OutletId::new(id, 0);
    let (bias, output) = match following_bias(model, product, co)? {
        Some((bias, add)) => (bias, add),
        None => (vec![0.0; co], product),
    };
    Ok(Some(OneByOne {
        pixels: shape[..shape.len() - 1].iter().product(),
        ci,
        co,
        output_shape: out_shape.into(),
        // Shared, not copied, when already floats: the search for fusable nodes visits each
        // einsum again after every replacement.
        weights: if w.datum_type() == f32::datum_type() {
            w.clone()
        } else {
            w.cast_to::<f32>()?.into_owned().into_arc_tensor()
        },
        bias,
        output,
    }))
}

/// The fused op for the einsum at `id` (and the bias Add after it, when there is one), the outlet
/// it reads and the outlet it replaces; `None` when the node is not a 1x1 convolution the kernel
/// runs.
pub(super) fn fusable(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(FusedPointwise, OutletId, OutletId)>> {
    let Some(conv) = one_by_one(model, id)? else {
        return Ok(None);
    };
    let op = FusedPointwise::new(
        super::floats(&conv.weights)?,
        &conv.bias,
        conv.pixels,
        &conv.output_shape,
    )?;
    Ok(Some((op, model.node(id).inputs[0], conv.output)))
}

/// Whether `einsum` maps `x[…pixels, i]` and `w[o, i]` to `y[…pixels, o]`, its pixel axes in
/// the same order (axes of size 1 may come or go).
fn pixels_by_channels(einsum: &EinSum, x_shape: &[usize], y_shape: &[usize]) -> bool {
    let (Some(x_last), Some(y_last)) = (x_shape.len().checked_sub(1), y_shape.len().checked_sub(1))
    else {
        return false;
    };
    let mut pixel_axes = vec![];
    let (mut contracted, mut out_channels) = (false, false);
    for axis in einsum.axes.iter_all_axes() {
        let (x, w, y) = (&axis.inputs[0], &axis.inputs[1], &axis.outputs[0]);
        match (x.as_slice(), w.as_slice(), y.as_slice()) {
            ([i], [1], []) if *i == x_last => contracted = true,
            ([], [0], [o]) if *o == y_last => out_channels = true,
            ([i], [], [o]) if *i != x_last && *o != y_last => pixel_axes.push((*i, *o)),
            ([i], [], []) if x_shape[*i] == 1 => {}
            ([], [], [o]) if y_shape[*o] == 1 => {}
            _ => return false,
        }
    }
    pixel_axes.sort();
    contracted && out_channels && pixel_axes.windows(2).all(|p| p[0].1 < p[1].1)
}

/// The bias `Add(y, b)` that alone consumes `y`, with a constant `b` of `co` values along the last
/// axis (or one value): `b` as `[co]` and the Add's outlet.
fn following_bias(
    model: &TypedModel,
    y: OutletId,
    co: usize,
) -> TractResult<Option<(Vec<f32>, OutletId)>> {
    let [next] = model.outlet_successors(y) else {
        return Ok(None);
    };
    let add = model.node(next.node);
    if !add.op_as::<TypedBinOp>().is_some_and(|op| op.0.is::<Add>()) {
        return Ok(None);
    }
    let other = add.inputs[1 - next.slot];
    let Some(b) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    let add_fact = model.outlet_fact(OutletId::new(add.id, 0))?;
    if add_fact.shape != model.outlet_fact(y)?.shape {
        return Ok(None);
    }
    let b = b.cast_to::<f32>()?;
    let bias = if b.len() == co && b.shape().last() == Some(&co) {
        super::floats(&b)?.to_vec()
    } else if b.len() == 1 {
        vec![b.cast_to_scalar::<f32>()?; co]
    } else {
        return Ok(None);
    };
    Ok(Some((bias, OutletId::new(add.id, 0))))
}

impl Op for FusedPointwise {
    fn name(&self) -> StaticName {
        "SmoothfacePointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!(
            "{} pixels, {} -> {} channels",
            g.w, g.ci, g.co
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FusedPointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = super::floats(&inputs[0])?;
        let g = &self.geometry;
        ensure!(
            x.len() == g.w * g.ci,
            "1x1 convolution input of the wrong size"
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let weights = direct::Packed {
                panels: super::floats(&self.panels)?,
                bias: super::floats(&self.bias)?,
                prelu: None,
            };
            direct::run(g, &weights, x, view.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FusedPointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1);
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}
