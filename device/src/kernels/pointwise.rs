//! Channels-last 1x1 convolutions (`…HWI,OI->…HWO` matrix products) with their bias, in one pass
//! and without packing the activations.
//!
//! Tract (0.23) makes the larger of the two output dimensions its kernel's rows: here the pixels,
//! so with channels-last outputs each tile is stored one float at a time, and it packs the
//! activations before every product (MobileFaceNet: 6.1 ms of matrix products and 0.5 ms of
//! packing, where onnxruntime's 1x1 convolutions take about 4.8). This kernel reads the
//! activations where they are, a row of input channels per pixel, and keeps a tile of 6 pixels by
//! 16 output channels in twelve vector registers: each step broadcasts one input value per pixel
//! against 16 weights packed when the plan is made, and the tile starts from the bias and is
//! stored as whole vectors.

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;

/// Output channels per panel of packed weights: two 8-float vectors.
const PANEL: usize = 16;

/// A float 1x1 convolution over a channels-last tensor: `y[p, o] = bias[o] + sum_i x[p, i] w[o, i]`
/// for every pixel `p` (all axes but the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedPointwise {
    /// Pixels: the product of all input axes but the last.
    pixels: usize,
    /// Input channels.
    ci: usize,
    /// Output channels.
    co: usize,
    output_shape: TVec<usize>,
    /// `[co / 16 rounded up, ci, 16]`: for each panel of 16 output channels, their weights for
    /// each input channel, zero past `co`.
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
        let panels = co.div_ceil(PANEL);
        let mut packed = vec![0f32; panels * ci * PANEL];
        for (o, row) in w.chunks_exact(ci).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                packed[((o / PANEL) * ci + i) * PANEL + o % PANEL] = v;
            }
        }
        let mut padded_bias = vec![0f32; panels * PANEL];
        padded_bias[..co].copy_from_slice(bias);
        Ok(FusedPointwise {
            pixels,
            ci,
            co,
            output_shape: output_shape.into(),
            panels: tensor1(&packed)
                .into_shape(&[panels, ci, PANEL])?
                .into_arc_tensor(),
            bias: tensor1(&padded_bias).into_arc_tensor(),
        })
    }
}

/// The fused op for the einsum at `id` (and the bias Add after it, when there is one), the outlet
/// it reads and the outlet it replaces; `None` when the node is not a 1x1 convolution the kernel
/// runs.
pub(super) fn fusable(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(FusedPointwise, OutletId, OutletId)>> {
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
    let pixels = shape[..shape.len() - 1].iter().product();
    let w = w.cast_to::<f32>()?;
    let product = OutletId::new(id, 0);
    let (bias, replaced) = match following_bias(model, product, co)? {
        Some((bias, add)) => (bias, add),
        None => (vec![0.0; co], product),
    };
    let op = FusedPointwise::new(super::floats(&w)?, &bias, pixels, out_shape)?;
    Ok(Some((op, node.inputs[0], replaced)))
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
        Ok(vec![format!(
            "{} pixels, {} -> {} channels",
            self.pixels, self.ci, self.co
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
        ensure!(
            x.len() == self.pixels * self.ci,
            "1x1 convolution input of the wrong size"
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let weights = Packed {
                panels: super::floats(&self.panels)?,
                bias: super::floats(&self.bias)?,
                ci: self.ci,
                co: self.co,
            };
            run(&weights, x, view.as_slice_mut::<f32>()?);
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

/// Packed weights, borrowed for one run.
pub struct Packed<'a> {
    /// `[co / 16 rounded up, ci, 16]`.
    pub panels: &'a [f32],
    /// `[co rounded up to 16]`.
    pub bias: &'a [f32],
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
}

/// `y[p, o] = bias[o] + sum_i x[p, i] w[o, i]` for every pixel of `x` (`[pixels, ci]`) into `y`
/// (`[pixels, co]`). Panics if the slices disagree with the weights' shape (the kernel reads
/// through raw pointers, so it checks first).
pub fn run(w: &Packed, x: &[f32], y: &mut [f32]) {
    let panels = w.co.div_ceil(PANEL);
    assert!(w.ci > 0 && x.len().is_multiple_of(w.ci));
    assert!(y.len() == x.len() / w.ci * w.co);
    assert!(w.panels.len() == panels * w.ci * PANEL && w.bias.len() == panels * PANEL);
    assert!(
        super::available(),
        "the 1x1 convolution kernel needs AVX2 and FMA"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features are present and the slices hold what the shapes say (checked above).
    unsafe {
        avx2::run(w, x, y)
    }
}

fn tensor1(values: &[f32]) -> Tensor {
    Tensor::from(tract_ndarray::Array1::from(values.to_vec()))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Packed, PANEL};
    use std::arch::x86_64::*;

    /// Pixels per tile: 6 x 2 accumulators, 2 weight vectors and a broadcast fill 15 of the 16
    /// vector registers.
    const ROWS: usize = 6;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(w: &Packed, x: &[f32], y: &mut [f32]) {
        let pixels = x.len() / w.ci;
        let mut p = 0;
        // Pixels outer, panels inner: a tile's input rows stay in L1 across all panels, and the
        // packed weights (at most a few hundred KiB) in L2.
        while p < pixels {
            let rows = (pixels - p).min(ROWS);
            for panel in 0..w.co.div_ceil(PANEL) {
                let tile = Tile {
                    x: x.as_ptr().add(p * w.ci),
                    ci: w.ci,
                    weights: w.panels.as_ptr().add(panel * w.ci * PANEL),
                    bias: w.bias.as_ptr().add(panel * PANEL),
                };
                let out = y.as_mut_ptr().add(p * w.co + panel * PANEL);
                let width = (w.co - panel * PANEL).min(PANEL);
                match rows {
                    6 => tile.run::<6>(out, w.co, width),
                    5 => tile.run::<5>(out, w.co, width),
                    4 => tile.run::<4>(out, w.co, width),
                    3 => tile.run::<3>(out, w.co, width),
                    2 => tile.run::<2>(out, w.co, width),
                    _ => tile.run::<1>(out, w.co, width),
                }
            }
            p += rows;
        }
    }

    /// Up to 6 pixels by one panel of 16 output channels.
    struct Tile {
        x: *const f32,
        ci: usize,
        weights: *const f32,
        bias: *const f32,
    }

    impl Tile {
        /// `R` pixels into `out` (rows `co` apart), `width` (at most 16) channels of the panel.
        #[inline(always)]
        unsafe fn run<const R: usize>(&self, out: *mut f32, co: usize, width: usize) {
            let bias = [
                _mm256_loadu_ps(self.bias),
                _mm256_loadu_ps(self.bias.add(8)),
            ];
            let mut acc = [bias; R];
            for i in 0..self.ci {
                let w0 = _mm256_loadu_ps(self.weights.add(i * PANEL));
                let w1 = _mm256_loadu_ps(self.weights.add(i * PANEL + 8));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_broadcast_ss(&*self.x.add(r * self.ci + i));
                    a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                    a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let row = out.add(r * co);
                if width == PANEL {
                    _mm256_storeu_ps(row, a[0]);
                    _mm256_storeu_ps(row.add(8), a[1]);
                } else {
                    let mut spill = [0f32; PANEL];
                    _mm256_storeu_ps(spill.as_mut_ptr(), a[0]);
                    _mm256_storeu_ps(spill.as_mut_ptr().add(8), a[1]);
                    std::ptr::copy_nonoverlapping(spill.as_ptr(), row, width);
                }
            }
        }
    }
}
