//! Channels-last depthwise convolutions, with the PRelus before and after them, in one pass;
//! and grouped convolutions of two channels a group (arcface_torch's wider MobileFaceNet, `mbf`,
//! has one after its first layer: 128 channels in 64 groups).
//!
//! Tract (0.23) runs a channels-last depthwise convolution through a generic per-zone loop: on
//! MobileFaceNet 1.3 ms for the 17 on x86-64 where onnxruntime takes about 0.6 (`smoothface bench
//! --profile`), and each PRelu around it is another trip through memory. This kernel keeps 32 channels of one
//! output pixel in four vector registers across all taps: it starts from the bias, applies the
//! input's PRelu to each value it loads (MobileFaceNet's expansions end in a PRelu that feeds the
//! depthwise convolution alone) and the output's PRelu before the single store.
//!
//! A group of two channels is a depthwise convolution plus a second one over the input with each
//! pair of channels swapped: output channel `c` reads channels `c` and `c ^ 1`. Tract runs such a
//! convolution as one small matrix product a group (64 of them, 2 outputs from 18 values each);
//! here the swap is one in-register shuffle of the vector already loaded, and the tap's second
//! weight vector one more FMA.

use super::direct::Isa;
use super::prelu::following_prelu;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat};

/// The shape of one depthwise convolution over a channels-last image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Images in the batch (the product of the axes before height).
    pub batch: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels, in and out.
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero rows above the image.
    pub pad_top: usize,
    /// Zero columns left of the image.
    pub pad_left: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

/// A float depthwise convolution over a channels-last (`…HWC`) tensor, its bias, and optionally
/// a PRelu on its input and one on its output (`y + (a - 1) * min(y, 0)`, the form the device's
/// ONNX rewrite gives PRelu).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedDepthwise {
    geometry: Geometry,
    output_shape: TVec<usize>,
    /// `[kh, kw, c]`: each tap's weights for all channels, contiguous.
    taps: Arc<Tensor>,
    /// `[kh, kw, c]` in a convolution of two channels a group: the weight each output channel
    /// gives its partner input channel (`c ^ 1`).
    partner_taps: Option<Arc<Tensor>>,
    /// `[c]`.
    bias: Arc<Tensor>,
    /// `[c]`: each channel's slope minus one, of the PRelu applied to the input as it is read.
    input_prelu: Option<Arc<Tensor>>,
    /// `[c]`: each channel's slope minus one, of the PRelu applied to the output.
    prelu: Option<Arc<Tensor>>,
}

/// Whether `conv` is a float depthwise convolution: one group per channel (more than one), as
/// many outputs as inputs.
pub fn is_depthwise(conv: &Conv) -> bool {
    let spec = &conv.pool_spec;
    conv.q_params.is_none()
        && conv.group > 1
        && conv.group == spec.input_channels
        && spec.output_channels == spec.input_channels
}

/// Whether `conv` is a float grouped convolution of two input and two output channels a group.
pub fn is_paired(conv: &Conv) -> bool {
    let spec = &conv.pool_spec;
    conv.q_params.is_none()
        && conv.group > 1
        && conv.group * 2 == spec.input_channels
        && spec.output_channels == spec.input_channels
}

/// The fused op for the convolution at `id`, the outlet it reads (the input of the PRelu before
/// the convolution when there is one that feeds it alone, else the convolution's input) and the
/// outlet it replaces (the PRelu's output when one follows, else the convolution's own); `None`
/// when the node is not a convolution the kernel runs.
pub(super) fn fusable(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(FusedDepthwise, OutletId, OutletId)>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
    let c = spec.input_channels;
    let paired = is_paired(conv);
    let depthwise = (is_depthwise(conv) || paired)
        && conv.kernel_fmt == KernelFormat::OIHW
        && spec.data_format.c_is_last()
        && spec.rank() == 2
        && spec.dilations().iter().all(|&d| d == 1);
    let facts = model.node_input_facts(id)?;
    let [x, kernel, bias] = facts.as_slice() else {
        return Ok(None);
    };
    let (Some(kernel), Some(bias)) = (&kernel.konst, &bias.konst) else {
        return Ok(None);
    };
    let Some(shape) = x.shape.as_concrete() else {
        return Ok(None);
    };
    if !depthwise || x.datum_type != f32::datum_type() || shape.len() < 3 {
        return Ok(None);
    }
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    let rank = shape.len();
    let (h, w) = (shape[rank - 3], shape[rank - 2]);
    let padding = spec.computed_padding(&[h, w]);
    let geometry = Geometry {
        batch: shape[..rank - 3].iter().product(),
        h,
        w,
        c,
        kh,
        kw,
        stride_h: spec.stride(0),
        stride_w: spec.stride(1),
        pad_top: padding[0].pad_before,
        pad_left: padding[1].pad_before,
        oh: padding[0].convoluted,
        ow: padding[1].convoluted,
    };
    // OIHW [c, 1, kh, kw] -> [kh, kw, c]; paired, OIHW [c, 2, kh, kw]: output channel o's input
    // o % 2 of its group is channel o itself, input 1 - o % 2 its partner.
    let kernel = kernel.cast_to::<f32>()?;
    let kernel = kernel.to_plain_array_view::<f32>()?;
    let inputs = if paired { 2 } else { 1 };
    if kernel.len() != c * inputs * kh * kw {
        return Ok(None);
    }
    let kernel = kernel.to_shape((c, inputs, kh * kw))?;
    let taps_of = |input: &dyn Fn(usize) -> usize| -> TractResult<Tensor> {
        let taps =
            tract_ndarray::Array2::from_shape_fn((kh * kw, c), |(t, o)| kernel[(o, input(o), t)]);
        Tensor::from(taps).into_shape(&[kh, kw, c])
    };
    let taps = taps_of(&|o| if paired { o % 2 } else { 0 })?;
    let partner_taps = paired.then(|| taps_of(&|o| 1 - o % 2)).transpose()?;
    let bias = if bias.len() == 1 {
        Tensor::from(tract_ndarray::Array1::from_elem(
            c,
            bias.cast_to_scalar::<f32>()?,
        ))
    } else if bias.len() == c {
        bias.cast_to::<f32>()?.into_owned().into_shape(&[c])?
    } else {
        return Ok(None);
    };
    let mut output_shape: TVec<usize> = shape.into();
    output_shape[rank - 3] = geometry.oh;
    output_shape[rank - 2] = geometry.ow;
    let conv_out = OutletId::new(id, 0);
    let prelu = following_prelu(model, conv_out, c)?;
    let input_prelu = preceding_prelu(model, node.inputs[0], id, c)?;
    let op = FusedDepthwise {
        geometry,
        output_shape,
        taps: taps.into_arc_tensor(),
        partner_taps: partner_taps.map(Tensor::into_arc_tensor),
        bias: bias.into_arc_tensor(),
        input_prelu: input_prelu.as_ref().map(|(slope, _)| slope.clone()),
        prelu: prelu.as_ref().map(|(slope, _)| slope.clone()),
    };
    let input = input_prelu.map(|(_, y)| y).unwrap_or(node.inputs[0]);
    Ok(Some((
        op,
        input,
        prelu.map(|(_, out)| out).unwrap_or(conv_out),
    )))
}

/// The PRelu whose output `x` feeds the node `conv` alone: its slope as `[c]` and its input.
fn preceding_prelu(
    model: &TypedModel,
    x: OutletId,
    conv: usize,
    c: usize,
) -> TractResult<Option<(Arc<Tensor>, OutletId)>> {
    if !matches!(model.outlet_successors(x), [one] if one.node == conv) {
        return Ok(None);
    }
    for &y in &model.node(x.node).inputs {
        if let Some((slope, out)) = following_prelu(model, y, c)? {
            if out == x {
                return Ok(Some((slope, y)));
            }
        }
    }
    Ok(None)
}

impl FusedDepthwise {
    /// How many PRelus the op computes: 0, 1 or 2.
    pub fn prelus(&self) -> usize {
        usize::from(self.prelu.is_some()) + usize::from(self.input_prelu.is_some())
    }

    /// Whether the op is a grouped convolution of two channels a group.
    pub fn is_paired(&self) -> bool {
        self.partner_taps.is_some()
    }
}

impl Op for FusedDepthwise {
    fn name(&self) -> StaticName {
        "SmoothfaceDepthwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!(
            "{}{}x{}x{} kernel {}x{} stride {}x{}{}{}",
            if self.input_prelu.is_some() {
                "PRelu + "
            } else {
                ""
            },
            g.h,
            g.w,
            g.c,
            g.kh,
            g.kw,
            g.stride_h,
            g.stride_w,
            if self.is_paired() {
                ", groups of 2"
            } else {
                ""
            },
            if self.prelu.is_some() { " + PRelu" } else { "" }
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FusedDepthwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = self.geometry;
        let input = super::floats(&inputs[0])?;
        ensure!(
            input.len() == g.batch * g.h * g.w * g.c,
            "depthwise input of the wrong size"
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let out = view.as_slice_mut::<f32>()?;
            let weights = Weights {
                taps: super::floats(&self.taps)?,
                partner_taps: self
                    .partner_taps
                    .as_deref()
                    .map(super::floats)
                    .transpose()?,
                bias: super::floats(&self.bias)?,
                input_prelu: self.input_prelu.as_deref().map(super::floats).transpose()?,
                prelu: self.prelu.as_deref().map(super::floats).transpose()?,
            };
            let (in_image, out_image) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
            for (x, y) in input
                .chunks_exact(in_image)
                .zip(out.chunks_exact_mut(out_image))
            {
                run(&g, &weights, x, y);
            }
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FusedDepthwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1);
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}

/// A convolution's weights, borrowed for one run.
pub struct Weights<'a> {
    /// `[kh, kw, c]`.
    pub taps: &'a [f32],
    /// `[kh, kw, c]`, in a convolution of two channels a group: the weight of each output
    /// channel `c`'s partner input channel `c ^ 1`; `None` for a depthwise convolution.
    pub partner_taps: Option<&'a [f32]>,
    /// `[c]`.
    pub bias: &'a [f32],
    /// `[c]`, each slope minus one of the PRelu on the input; `None` for none.
    pub input_prelu: Option<&'a [f32]>,
    /// `[c]`, each slope minus one of the PRelu on the output; `None` for none.
    pub prelu: Option<&'a [f32]>,
}

/// Convolves one `[h, w, c]` image `x` into `[oh, ow, c]` `y` with the fastest form this CPU runs
/// ([`super::direct::isas`]). Panics if a slice is shorter than the geometry says (the kernel
/// reads through raw pointers, so it checks first) or the CPU runs no form.
pub fn run(g: &Geometry, weights: &Weights, x: &[f32], y: &mut [f32]) {
    let isa = super::direct::isas()
        .next()
        .expect("the depthwise kernel needs AVX2 and FMA");
    run_with(isa, g, weights, x, y)
}

/// [`run`] in one form, which the CPU must run (for tests of every form).
pub fn run_with(isa: Isa, g: &Geometry, weights: &Weights, x: &[f32], y: &mut [f32]) {
    assert!(x.len() >= g.h * g.w * g.c && y.len() >= g.oh * g.ow * g.c);
    assert!(weights.taps.len() >= g.kh * g.kw * g.c && weights.bias.len() >= g.c);
    // Pairs of channels stay whole within every vector the kernel loads (its blocks start at
    // multiples of 8 channels), so an even count is all the paired form needs.
    assert!(weights
        .partner_taps
        .is_none_or(|p| p.len() >= g.kh * g.kw * g.c && g.c.is_multiple_of(2)));
    assert!(weights.prelu.is_none_or(|p| p.len() >= g.c));
    assert!(weights.input_prelu.is_none_or(|p| p.len() >= g.c));
    assert!(isa.runs_here(), "this CPU does not run {isa:?}");
    // Padding can leave an output pixel with no tap inside the image: the loops below then add
    // nothing to its bias, which is what zero padding gives.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the features are present (checked above) and every slice is as long as the
    // geometry the kernel indexes with (checked above).
    unsafe {
        match isa {
            Isa::Avx2 => avx2::run(g, weights, x, y),
            Isa::Avx512 => avx512::run(g, weights, x, y),
        }
    }
}

/// The window of output pixel `(oy, ox)`: its top-left input position and the taps that land
/// inside the image, rows `ky0..ky1` and columns `kx0..kx1`.
#[cfg(target_arch = "x86_64")]
fn window(g: &Geometry, oy: usize, ox: usize) -> ((isize, usize, usize), (isize, usize, usize)) {
    let top = (oy * g.stride_h) as isize - g.pad_top as isize;
    let ky0 = (-top).max(0) as usize;
    let ky1 = (g.h as isize - top).clamp(0, g.kh as isize) as usize;
    let left = (ox * g.stride_w) as isize - g.pad_left as isize;
    let kx0 = (-left).max(0) as usize;
    let kx1 = (g.w as isize - left).clamp(0, g.kw as isize) as usize;
    ((top, ky0, ky1), (left, kx0, kx1))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Geometry, Weights};
    use std::arch::x86_64::*;

    /// 32 channels (four registers) at a time, then 8, then one by one.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(g: &Geometry, weights: &Weights, x: &[f32], y: &mut [f32]) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (rows, cols) = super::window(g, oy, ox);
                let pixel = Pixel {
                    g,
                    weights,
                    x: x.as_ptr(),
                    rows,
                    cols,
                };
                let out = y.as_mut_ptr().add((oy * g.ow + ox) * g.c);
                let mut c0 = 0;
                while c0 + 32 <= g.c {
                    pixel.block::<4>(c0, out);
                    c0 += 32;
                }
                while c0 + 8 <= g.c {
                    pixel.block::<1>(c0, out);
                    c0 += 8;
                }
                for c in c0..g.c {
                    pixel.channel(c, out);
                }
            }
        }
    }

    /// One output pixel: where its window sits and which taps fall inside the image.
    struct Pixel<'a> {
        g: &'a Geometry,
        weights: &'a Weights<'a>,
        x: *const f32,
        rows: (isize, usize, usize),
        cols: (isize, usize, usize),
    }

    impl Pixel<'_> {
        /// Channels `c0..c0 + 8 * V` of this pixel into `out`.
        #[inline(always)]
        unsafe fn block<const V: usize>(&self, c0: usize, out: *mut f32) {
            let (g, w) = (self.g, self.weights);
            let mut acc = [_mm256_setzero_ps(); V];
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm256_loadu_ps(w.bias.as_ptr().add(c0 + 8 * v));
            }
            let zero = _mm256_setzero_ps();
            let mut in_slope = [zero; V];
            if let Some(prelu) = w.input_prelu {
                for (v, s) in in_slope.iter_mut().enumerate() {
                    *s = _mm256_loadu_ps(prelu.as_ptr().add(c0 + 8 * v));
                }
            }
            for ky in self.rows.1..self.rows.2 {
                let iy = (self.rows.0 + ky as isize) as usize;
                for kx in self.cols.1..self.cols.2 {
                    let ix = (self.cols.0 + kx as isize) as usize;
                    let src = self.x.add((iy * g.w + ix) * g.c + c0);
                    let tap = (ky * g.kw + kx) * g.c + c0;
                    let (own, partner) = (w.taps.as_ptr().add(tap), w.partner_taps);
                    for (v, a) in acc.iter_mut().enumerate() {
                        let mut xv = _mm256_loadu_ps(src.add(8 * v));
                        if w.input_prelu.is_some() {
                            xv = _mm256_fmadd_ps(_mm256_min_ps(xv, zero), in_slope[v], xv);
                        }
                        *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(own.add(8 * v)), *a);
                        if let Some(partner) = partner {
                            // Lanes 0 1 2 3 -> 1 0 3 2 in each half: each channel's partner.
                            let swapped = _mm256_permute_ps::<0b1011_0001>(xv);
                            let pw = _mm256_loadu_ps(partner.as_ptr().add(tap + 8 * v));
                            *a = _mm256_fmadd_ps(swapped, pw, *a);
                        }
                    }
                }
            }
            if let Some(prelu) = w.prelu {
                for (v, a) in acc.iter_mut().enumerate() {
                    let slope = _mm256_loadu_ps(prelu.as_ptr().add(c0 + 8 * v));
                    *a = _mm256_fmadd_ps(_mm256_min_ps(*a, zero), slope, *a);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.add(c0 + 8 * v), *a);
            }
        }

        /// Channel `c` alone (channel counts that are not a multiple of 8).
        #[inline(always)]
        unsafe fn channel(&self, c: usize, out: *mut f32) {
            let (g, w) = (self.g, self.weights);
            let mut acc = w.bias[c];
            for ky in self.rows.1..self.rows.2 {
                let iy = (self.rows.0 + ky as isize) as usize;
                for kx in self.cols.1..self.cols.2 {
                    let ix = (self.cols.0 + kx as isize) as usize;
                    let pixel = self.x.add((iy * g.w + ix) * g.c);
                    let tap = (ky * g.kw + kx) * g.c;
                    let read = |c: usize| {
                        let v = *pixel.add(c);
                        w.input_prelu.map_or(v, |p| v.min(0.0).mul_add(p[c], v))
                    };
                    acc = read(c).mul_add(w.taps[tap + c], acc);
                    if let Some(partner) = w.partner_taps {
                        acc = read(c ^ 1).mul_add(partner[tap + c], acc);
                    }
                }
            }
            if let Some(prelu) = w.prelu {
                acc = acc.min(0.0).mul_add(prelu[c], acc);
            }
            *out.add(c) = acc;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Geometry, Weights};
    use std::arch::x86_64::*;

    /// 64 channels (four registers) at a time, then 16, then the last up to 15 masked: twice the
    /// AVX2 form's floats per load and FMA, the loads (input and tap, two per FMA) being what
    /// bounds it.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(g: &Geometry, weights: &Weights, x: &[f32], y: &mut [f32]) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let (rows, cols) = super::window(g, oy, ox);
                let pixel = Pixel {
                    g,
                    weights,
                    x: x.as_ptr(),
                    rows,
                    cols,
                };
                let out = y.as_mut_ptr().add((oy * g.ow + ox) * g.c);
                let mut c0 = 0;
                while c0 + 64 <= g.c {
                    pixel.block::<4>(c0, !0, out);
                    c0 += 64;
                }
                while c0 < g.c {
                    let left = (g.c - c0).min(16);
                    let mask: __mmask16 = if left == 16 { !0 } else { (1u16 << left) - 1 };
                    pixel.block::<1>(c0, mask, out);
                    c0 += left;
                }
            }
        }
    }

    /// The lanes of vector `v` of a block of `V`: `mask` for the last, all for the others.
    #[inline(always)]
    fn lanes<const V: usize>(v: usize, mask: __mmask16) -> __mmask16 {
        if v + 1 == V {
            mask
        } else {
            !0
        }
    }

    /// Vector `v` of the block at `p`, zero outside its lanes.
    #[inline(always)]
    unsafe fn load<const V: usize>(p: *const f32, v: usize, mask: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(lanes::<V>(v, mask), p.add(16 * v))
    }

    /// One output pixel: where its window sits and which taps fall inside the image.
    struct Pixel<'a> {
        g: &'a Geometry,
        weights: &'a Weights<'a>,
        x: *const f32,
        rows: (isize, usize, usize),
        cols: (isize, usize, usize),
    }

    impl Pixel<'_> {
        /// Channels `c0..c0 + 16 * V` of this pixel into `out`, the last vector's lanes limited
        /// to `mask` (whole vectors when `V` > 1).
        #[inline(always)]
        unsafe fn block<const V: usize>(&self, c0: usize, mask: __mmask16, out: *mut f32) {
            let (g, w) = (self.g, self.weights);
            let mut acc = [_mm512_setzero_ps(); V];
            for (v, a) in acc.iter_mut().enumerate() {
                *a = load::<V>(w.bias.as_ptr().add(c0), v, mask);
            }
            let zero = _mm512_setzero_ps();
            let mut in_slope = [zero; V];
            if let Some(prelu) = w.input_prelu {
                for (v, s) in in_slope.iter_mut().enumerate() {
                    *s = load::<V>(prelu.as_ptr().add(c0), v, mask);
                }
            }
            for ky in self.rows.1..self.rows.2 {
                let iy = (self.rows.0 + ky as isize) as usize;
                for kx in self.cols.1..self.cols.2 {
                    let ix = (self.cols.0 + kx as isize) as usize;
                    let src = self.x.add((iy * g.w + ix) * g.c + c0);
                    let tap = (ky * g.kw + kx) * g.c + c0;
                    let (own, partner) = (w.taps.as_ptr().add(tap), w.partner_taps);
                    for (v, a) in acc.iter_mut().enumerate() {
                        let mut xv = load::<V>(src, v, mask);
                        if w.input_prelu.is_some() {
                            xv = _mm512_fmadd_ps(_mm512_min_ps(xv, zero), in_slope[v], xv);
                        }
                        *a = _mm512_fmadd_ps(xv, load::<V>(own, v, mask), *a);
                        if let Some(partner) = partner {
                            // Lanes 0 1 2 3 -> 1 0 3 2 in each quarter: each channel's partner
                            // (the mask keeps whole pairs: the channel count is even).
                            let swapped = _mm512_permute_ps::<0b1011_0001>(xv);
                            let pw = load::<V>(partner.as_ptr().add(tap), v, mask);
                            *a = _mm512_fmadd_ps(swapped, pw, *a);
                        }
                    }
                }
            }
            if let Some(prelu) = w.prelu {
                for (v, a) in acc.iter_mut().enumerate() {
                    let slope = load::<V>(prelu.as_ptr().add(c0), v, mask);
                    *a = _mm512_fmadd_ps(_mm512_min_ps(*a, zero), slope, *a);
                }
            }
            for (v, a) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(out.add(c0 + 16 * v), lanes::<V>(v, mask), *a);
            }
        }
    }
}
