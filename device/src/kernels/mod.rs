//! The device's own kernels for the operators that make up nearly all of its models' time and
//! that tract (0.23) runs slower than onnxruntime on x86-64: for MobileFaceNet, depthwise
//! convolutions (and `w600k_mbf`'s grouped one, two channels a group), the 1x1 convolutions
//! between them and the first convolution (3x3, stride 2, from the image's 3 channels); for
//! MTCNN, its small dense convolutions (3x3 and 2x2, 3 to 64 channels) and its softmax; all
//! channels-last, with the biases and PRelus around them fused in. Each is a tract op ([`depthwise::FusedDepthwise`],
//! [`pointwise::FusedPointwise`], [`direct::FusedConv`], [`softmax::RowSoftmax`]) that [`fuse`]
//! puts in place of the nodes it computes, so the rest of the graph still runs in tract.
//!
//! They run on x86-64 CPUs with AVX2 and FMA, checked at run time ([`available`]), the
//! convolution tile and the depthwise kernel in AVX-512 where the CPU has it ([`direct::Isa`]): a
//! build for the x86-64 baseline stays correct on older CPUs, where tract's own kernels run. On
//! aarch64 tract's NEON kernels run; these have no NEON form, and boards' speeds cannot be
//! measured here.
//!
//! [`quantized`] runs int8 (QDQ) models' 1x1 convolutions in integers, where the CPU has AVX-512
//! VNNI, AVX2 or, on aarch64, the dot-product instructions, with their PRelu and the next
//! quantize-dequantize pair fused, and every other quantize-dequantize pair as one pass.
//!
//! [`prelu`] finds the PRelu after a convolution that a kernel takes into its pass.
//!
//! [`nibble`] is the compact search's scan (4-bit codes against 8-bit weights), not a tract op:
//! AVX2 where the CPU has it, plain Rust elsewhere.

/// `$tile.run::<R, $p>($out, $width)` with `R` the constant equal to `$pixels`, 1 to 11: the
/// row tails of the AVX-512 tiles of 12 pixels (the dense and int8 kernels).
#[cfg(target_arch = "x86_64")]
macro_rules! short_rows {
    ($tile:expr, $p:ident, $pixels:expr, $out:expr, $width:expr) => {
        match $pixels {
            11 => $tile.run::<11, $p>($out, $width),
            10 => $tile.run::<10, $p>($out, $width),
            9 => $tile.run::<9, $p>($out, $width),
            8 => $tile.run::<8, $p>($out, $width),
            7 => $tile.run::<7, $p>($out, $width),
            6 => $tile.run::<6, $p>($out, $width),
            5 => $tile.run::<5, $p>($out, $width),
            4 => $tile.run::<4, $p>($out, $width),
            3 => $tile.run::<3, $p>($out, $width),
            2 => $tile.run::<2, $p>($out, $width),
            _ => $tile.run::<1, $p>($out, $width),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use short_rows;

/// `$tile.run::<R>($out, $width)` with `R` the constant equal to `$pixels`, 1 to 6: the AVX2
/// tiles of 6 pixels and their tails (the dense and int8 kernels).
#[cfg(target_arch = "x86_64")]
macro_rules! six_rows {
    ($tile:expr, $pixels:expr, $out:expr, $width:expr) => {
        match $pixels {
            6 => $tile.run::<6>($out, $width),
            5 => $tile.run::<5>($out, $width),
            4 => $tile.run::<4>($out, $width),
            3 => $tile.run::<3>($out, $width),
            2 => $tile.run::<2>($out, $width),
            _ => $tile.run::<1>($out, $width),
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(crate) use six_rows;

pub mod depthwise;
pub mod direct;
pub mod nibble;
pub mod pointwise;
pub mod prelu;
pub mod quantized;
pub mod softmax;

use tract_onnx::prelude::*;

/// Whether this CPU runs the device's kernels: x86-64 with AVX2 and FMA.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// What [`fuse`] replaced in a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fused {
    /// Depthwise convolutions (and grouped ones of two channels a group) now run by
    /// [`depthwise::FusedDepthwise`].
    pub depthwise: usize,
    /// 1x1 convolutions now run by [`pointwise::FusedPointwise`].
    pub pointwise: usize,
    /// Channels-last dense convolutions (MTCNN's, a MobileFaceNet's first) now run by
    /// [`direct::FusedConv`].
    pub direct: usize,
    /// PRelus computed inside a fused convolution (on its input or its output).
    pub prelus: usize,
    /// Softmaxes over a short last axis now run by [`softmax::RowSoftmax`].
    pub softmaxes: usize,
    /// int8 models' 1x1 convolutions now run in integers by [`quantized::QuantizedPointwise`].
    pub int8_pointwise: usize,
    /// Quantize-dequantize pairs now one pass ([`quantized::FakeQuant`]) or computed inside an
    /// int8 convolution.
    pub fake_quants: usize,
}

/// Puts the device's kernels in place of every channels-last depthwise convolution, 1x1
/// convolution and dense convolution of `model` they can run, and of every softmax
/// over a short last axis, where [`available`]. Before them, on every CPU: in int8 models (whose
/// weights `int8` holds) the 1x1 convolutions with quantized inputs, in integers where
/// [`quantized::isa`] has a form, then every other quantize-dequantize pair. Runs on a
/// decluttered model whose convolutions [`crate::onnx::channels_last`] has moved.
pub fn fuse(model: &mut TypedModel, int8: &quantized::Int8Weights) -> TractResult<Fused> {
    let mut fused = Fused::default();
    if !int8.is_empty() {
        replace_each(model, |model, id| {
            let found = quantized::fusable(model, id, int8)?;
            if let Some((op, _, _)) = &found {
                fused.int8_pointwise += 1;
                fused.prelus += usize::from(op.has_prelu());
                fused.fake_quants += usize::from(op.quantizes_output());
            }
            Ok(found)
        })?;
    }
    replace_each(model, |model, id| {
        let found = quantized::fake_quant_fusable(model, id)?;
        fused.fake_quants += usize::from(found.is_some());
        Ok(found)
    })?;
    if !available() {
        return Ok(fused);
    }
    replace_each(model, |model, id| {
        let found = pointwise::fusable(model, id)?;
        fused.pointwise += usize::from(found.is_some());
        Ok(found)
    })?;
    replace_each(model, |model, id| {
        let found = depthwise::fusable(model, id)?;
        if let Some((op, _, _)) = &found {
            fused.depthwise += 1;
            fused.prelus += op.prelus();
        }
        Ok(found)
    })?;
    replace_each(model, |model, id| {
        let found = direct::fusable(model, id)?;
        if let Some((op, _, _)) = &found {
            fused.direct += 1;
            fused.prelus += usize::from(op.has_prelu());
        }
        Ok(found)
    })?;
    replace_each(model, |model, id| {
        let found = softmax::fusable(model, id)?;
        fused.softmaxes += usize::from(found.is_some());
        Ok(found)
    })?;
    Ok(fused)
}

/// The floats of a plain f32 tensor (the kernels' weights).
fn floats(tensor: &Tensor) -> TractResult<&[f32]> {
    tensor.try_as_plain_ram()?.as_slice::<f32>()
}

/// A replacement: the op, the outlet it reads, and the outlet whose consumers it takes over.
type Replacement<Op> = (Op, OutletId, OutletId);

/// Applies `find` to each node in evaluation order and wires each replacement it returns.
fn replace_each<Op: TypedOp + Clone>(
    model: &mut TypedModel,
    mut find: impl FnMut(&TypedModel, usize) -> TractResult<Option<Replacement<Op>>>,
) -> TractResult<()> {
    // A replacement leaves the old nodes behind until the model is compacted, which renumbers
    // them: so the search starts over after each one.
    'search: loop {
        for id in model.eval_order()? {
            let Some((op, input, replaced)) = find(model, id)? else {
                continue;
            };
            let mut patch = TypedModelPatch::new("device kernel");
            let tap = patch.tap_model(model, input)?;
            let name = model.node(id).name.clone();
            let out = patch.wire_node(name, op, &[tap])?[0];
            patch.shunt_outside(model, replaced, out)?;
            patch.apply(model)?;
            *model = std::mem::take(model).into_compact()?;
            continue 'search;
        }
        return Ok(());
    }
}
