//! Channels-last dense convolutions (MTCNN's 3x3 and 2x2 ones, 3 to 64 input channels, and a
//! MobileFaceNet's first, 3x3 with stride 2 from the image's 3 channels), with their bias and the
//! PRelu after them, in one pass.
//!
//! Tract (0.23) runs these channels-first through im2col and a matrix product, then the PRelu as
//! separate element-wise passes; on R-Net (a batch of 32 crops) the convolutions' products are
//! 2.2 ms of its 7.7, the im2col copies 0.9 and the PRelus 3.0, the latter on a generic
//! broadcasting path because the slope `[1, C, 1, 1]` does not match a batch of more than one
//! (`smoothface bench --detect-only` shows the stages). This kernel reads the image where it
//! is: an output pixel is the sum over the kernel's taps of a 1x1 convolution of the input
//! pixel under the tap, so it keeps a tile of up to 6 pixels of one output row by 16 output
//! channels in twelve vector registers and, for each tap and input channel, broadcasts one input
//! value per pixel against 16 weights packed when the plan is made. The tile starts from the
//! bias and gets its PRelu before it is stored.
//!
//! A padded convolution reads a zero-bordered copy of its input (for a 112x112 face, 39,000
//! floats); a strided one steps its tile's pixels `stride` input pixels apart. A MobileFaceNet's
//! first convolution (3 input channels, 27 values a pixel) is where tract's im2col and matrix
//! product do worst: the copy is as large as the output and the product's inner dimension short.

use super::prelu::following_prelu;
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec};

/// Output channels per panel of packed weights: two 8-float vectors.
pub const PANEL: usize = 16;

/// The shape of one convolution over channels-last images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Images in the batch (the product of the axes before height).
    pub batch: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
    /// Kernel height (at most `h`).
    pub kh: usize,
    /// Kernel width (at most `w`).
    pub kw: usize,
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero rows above and columns left of the image, zero rows below and columns right of it.
    pub pad: [usize; 4],
}

impl Geometry {
    /// An unpadded convolution with stride 1 (MTCNN's, and a 1x1 one's).
    pub fn unpadded(
        batch: usize,
        h: usize,
        w: usize,
        ci: usize,
        co: usize,
        kh: usize,
        kw: usize,
    ) -> Geometry {
        Geometry {
            batch,
            h,
            w,
            ci,
            co,
            kh,
            kw,
            stride: [1, 1],
            pad: [0; 4],
        }
    }

    /// Input height with its zero rows.
    fn padded_h(&self) -> usize {
        self.pad[0] + self.h + self.pad[2]
    }

    /// Input width with its zero columns.
    fn padded_w(&self) -> usize {
        self.pad[1] + self.w + self.pad[3]
    }

    /// Output height.
    pub fn oh(&self) -> usize {
        (self.padded_h() - self.kh) / self.stride[0] + 1
    }

    /// Output width.
    pub fn ow(&self) -> usize {
        (self.padded_w() - self.kw) / self.stride[1] + 1
    }

    /// The same convolution over its input with the zero border in place: no padding.
    fn over_padded_input(&self) -> Geometry {
        Geometry {
            h: self.padded_h(),
            w: self.padded_w(),
            pad: [0; 4],
            ..*self
        }
    }
}

/// A float convolution of one group over a channels-last (`…HWC`) tensor, with its bias and optionally the PRelu after it (`y + (a - 1) * min(y, 0)`, the form the
/// device's ONNX rewrite gives PRelu).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FusedConv {
    geometry: Geometry,
    output_shape: TVec<usize>,
    /// `[co / 16 rounded up, kh, kw, ci, 16]`, zero past `co`.
    panels: Arc<Tensor>,
    /// `[co rounded up to 16]`, zero past `co`.
    bias: Arc<Tensor>,
    /// `[co rounded up to 16]`: each channel's slope minus one, of the PRelu on the output.
    prelu: Option<Arc<Tensor>>,
}

/// Whether the kernel runs `conv` once its input is channels-last: float, one group, 2-D, no
/// dilation.
pub fn runs(conv: &Conv) -> bool {
    let spec = &conv.pool_spec;
    conv.q_params.is_none()
        && conv.group == 1
        && conv.kernel_fmt == KernelFormat::OIHW
        && spec.rank() == 2
        && (0..2).all(|axis| spec.dilation(axis) == 1)
}

/// Whether `conv` is one of a detector's (MTCNN's) convolutions, all of which the kernel runs
/// channels-last with their max-pools ([`crate::onnx::channels_last`]): [`runs`], unpadded,
/// stride 1. Networks of padded convolutions (IResNet) keep tract's channels-first layout, the
/// one its kernels are tuned for.
pub fn runs_unpadded(conv: &Conv) -> bool {
    let spec = &conv.pool_spec;
    runs(conv) && spec.padding == PaddingSpec::Valid && (0..2).all(|axis| spec.stride(axis) == 1)
}

/// Packs `[co, ci, kh, kw]` weights (OIHW) and `[co]` biases into the kernel's panels.
pub fn pack(g: &Geometry, oihw: &[f32], bias: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let panels = g.co.div_ceil(PANEL);
    let taps = g.kh * g.kw * g.ci;
    let mut packed = vec![0f32; panels * taps * PANEL];
    for o in 0..g.co {
        for i in 0..g.ci {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let tap = (ky * g.kw + kx) * g.ci + i;
                    packed[((o / PANEL) * taps + tap) * PANEL + o % PANEL] =
                        oihw[((o * g.ci + i) * g.kh + ky) * g.kw + kx];
                }
            }
        }
    }
    (packed, padded(bias, panels))
}

/// `values` followed by zeros up to `panels` panels.
fn padded(values: &[f32], panels: usize) -> Vec<f32> {
    let mut out = vec![0f32; panels * PANEL];
    out[..values.len()].copy_from_slice(values);
    out
}

/// The fused op for the convolution at `id`, the outlet it reads and the outlet it replaces (the
/// PRelu's output when one follows, else the convolution's own); `None` when the node is not a
/// convolution the kernel runs.
pub(super) fn fusable(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(FusedConv, OutletId, OutletId)>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    let spec = &conv.pool_spec;
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
    if !runs(conv)
        || !spec.data_format.c_is_last()
        || x.datum_type != f32::datum_type()
        || shape.len() < 3
    {
        return Ok(None);
    }
    let rank = shape.len();
    let (h, w) = (shape[rank - 3], shape[rank - 2]);
    let padding = spec.computed_padding(&[h, w]);
    let geometry = Geometry {
        batch: shape[..rank - 3].iter().product(),
        h,
        w,
        ci: spec.input_channels,
        co: spec.output_channels,
        kh: spec.kernel_shape[0],
        kw: spec.kernel_shape[1],
        stride: [spec.stride(0), spec.stride(1)],
        pad: [
            padding[0].pad_before,
            padding[1].pad_before,
            padding[0].pad_after,
            padding[1].pad_after,
        ],
    };
    let g = geometry;
    if g.kh > g.padded_h()
        || g.kw > g.padded_w()
        || g.oh() != padding[0].convoluted
        || g.ow() != padding[1].convoluted
        || shape[rank - 1] != g.ci
        || kernel.len() != g.co * g.ci * g.kh * g.kw
    {
        return Ok(None);
    }
    let bias = if bias.len() == 1 {
        vec![bias.cast_to_scalar::<f32>()?; g.co]
    } else if bias.len() == g.co {
        let bias = bias.cast_to::<f32>()?;
        super::floats(&bias)?.to_vec()
    } else {
        return Ok(None);
    };
    let kernel = kernel.cast_to::<f32>()?;
    let (panels, bias) = pack(&g, super::floats(&kernel)?, &bias);
    let mut output_shape: TVec<usize> = shape.into();
    output_shape[rank - 3] = g.oh();
    output_shape[rank - 2] = g.ow();
    output_shape[rank - 1] = g.co;
    let conv_out = OutletId::new(id, 0);
    let prelu = following_prelu(model, conv_out, g.co)?;
    let panel_count = g.co.div_ceil(PANEL);
    let op = FusedConv {
        geometry,
        output_shape,
        panels: tensor1(&panels)
            .into_shape(&[panel_count, g.kh, g.kw, g.ci, PANEL])?
            .into_arc_tensor(),
        bias: tensor1(&bias).into_arc_tensor(),
        prelu: prelu
            .as_ref()
            .map(|(slope, _)| super::floats(slope).map(|s| tensor1(&padded(s, panel_count))))
            .transpose()?
            .map(Tensor::into_arc_tensor),
    };
    Ok(Some((
        op,
        node.inputs[0],
        prelu.map(|(_, out)| out).unwrap_or(conv_out),
    )))
}

/// A 1-D tensor of `values`.
pub(super) fn tensor1(values: &[f32]) -> Tensor {
    Tensor::from(tract_ndarray::Array1::from(values.to_vec()))
}

impl FusedConv {
    /// Whether the op computes the PRelu after the convolution.
    pub fn has_prelu(&self) -> bool {
        self.prelu.is_some()
    }
}

impl Op for FusedConv {
    fn name(&self) -> StaticName {
        "SmoothfaceConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let g = &self.geometry;
        Ok(vec![format!(
            "{}x{}x{} kernel {}x{} stride {}x{} padding {:?} -> {} channels{}",
            g.h,
            g.w,
            g.ci,
            g.kh,
            g.kw,
            g.stride[0],
            g.stride[1],
            g.pad,
            g.co,
            if self.prelu.is_some() { " + PRelu" } else { "" }
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FusedConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = self.geometry;
        let input = super::floats(&inputs[0])?;
        ensure!(
            input.len() == g.batch * g.h * g.w * g.ci,
            "convolution input of the wrong size"
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            let weights = Packed {
                panels: super::floats(&self.panels)?,
                bias: super::floats(&self.bias)?,
                prelu: self.prelu.as_deref().map(super::floats).transpose()?,
            };
            run(&g, &weights, input, view.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FusedConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1);
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}

/// Packed weights ([`pack`]), borrowed for one run.
pub struct Packed<'a> {
    /// `[co / 16 rounded up, kh, kw, ci, 16]`.
    pub panels: &'a [f32],
    /// `[co rounded up to 16]`.
    pub bias: &'a [f32],
    /// `[co rounded up to 16]`, each slope minus one of the PRelu on the output; `None` for none.
    pub prelu: Option<&'a [f32]>,
}

/// The instruction sets the kernel has a form for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 and FMA: tiles of 6 pixels by 16 channels in 12 of the 16 vector registers.
    Avx2,
    /// AVX-512: tiles of 12 pixels by 32 channels in 24 of the 32 vector registers, twice the
    /// floats an instruction and four times the tile (the whole of the CPU's FMA width where it
    /// executes 512-bit FMAs at full rate).
    Avx512,
}

impl Isa {
    /// Whether this CPU runs the form (every form needs [`super::available`]'s AVX2 and FMA).
    pub fn runs_here(self) -> bool {
        match self {
            Isa::Avx2 => super::available(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => super::available() && is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 => false,
        }
    }
}

/// The forms this CPU runs, fastest first (none where [`super::available`] is false).
pub fn isas() -> impl Iterator<Item = Isa> {
    [Isa::Avx512, Isa::Avx2]
        .into_iter()
        .filter(|isa| isa.runs_here())
}

/// Convolves `g.batch` `[h, w, ci]` images `x` into `[oh, ow, co]` images `y` with the fastest
/// form this CPU runs. Panics if a slice disagrees with the geometry (the kernel reads through
/// raw pointers, so it checks first) or the CPU runs no form.
pub fn run(g: &Geometry, w: &Packed, x: &[f32], y: &mut [f32]) {
    let isa = isas()
        .next()
        .expect("the convolution kernel needs AVX2 and FMA");
    run_with(isa, g, w, x, y)
}

/// [`run`] in one form, which the CPU must run (for tests of every form).
pub fn run_with(isa: Isa, g: &Geometry, w: &Packed, x: &[f32], y: &mut [f32]) {
    if g.pad != [0; 4] {
        assert!(x.len() == g.batch * g.h * g.w * g.ci);
        let padded = g.over_padded_input();
        return run_with(isa, &padded, w, &zero_bordered(g, x), y);
    }
    let panels = g.co.div_ceil(PANEL);
    assert!(g.kh >= 1 && g.kw >= 1 && g.kh <= g.h && g.kw <= g.w && g.ci > 0);
    assert!(g.stride[0] >= 1 && g.stride[1] >= 1);
    assert!(x.len() == g.batch * g.h * g.w * g.ci);
    assert!(y.len() == g.batch * g.oh() * g.ow() * g.co);
    assert!(w.panels.len() == panels * g.kh * g.kw * g.ci * PANEL);
    assert!(w.bias.len() == panels * PANEL);
    assert!(w.prelu.is_none_or(|p| p.len() == panels * PANEL));
    assert!(isa.runs_here(), "this CPU does not run {isa:?}");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU runs the form (checked above) and the slices hold what the geometry says
    // (checked above).
    unsafe {
        match isa {
            Isa::Avx2 => avx2::run(g, w, x, y),
            Isa::Avx512 => avx512::run(g, w, x, y),
        }
    }
}

/// `g.batch` `[h, w, ci]` images `x` inside `g.pad`'s zero border.
fn zero_bordered(g: &Geometry, x: &[f32]) -> Vec<f32> {
    let (ph, pw) = (g.padded_h(), g.padded_w());
    let mut padded = vec![0f32; g.batch * ph * pw * g.ci];
    let row = g.w * g.ci;
    for (n, image) in x.chunks_exact(g.h * row).enumerate() {
        for (y, src) in image.chunks_exact(row).enumerate() {
            let start = ((n * ph + g.pad[0] + y) * pw + g.pad[1]) * g.ci;
            padded[start..start + row].copy_from_slice(src);
        }
    }
    padded
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Geometry, Packed, PANEL};
    use std::arch::x86_64::*;

    /// Pixels per tile: 6 x 2 accumulators, 2 weight vectors and a broadcast fill 15 of the 16
    /// vector registers.
    const ROWS: usize = 6;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(g: &Geometry, w: &Packed, x: &[f32], y: &mut [f32]) {
        let (oh, ow) = (g.oh(), g.ow());
        let taps = g.kh * g.kw * g.ci;
        let (in_image, out_image) = (g.h * g.w * g.ci, oh * ow * g.co);
        for n in 0..g.batch {
            let (x, y) = (
                x.as_ptr().add(n * in_image),
                y.as_mut_ptr().add(n * out_image),
            );
            for oy in 0..oh {
                let mut ox = 0;
                // Pixels outer, panels inner: the tile's input rows stay in L1 across panels.
                while ox < ow {
                    let pixels = (ow - ox).min(ROWS);
                    for panel in 0..g.co.div_ceil(PANEL) {
                        let tile = Tile {
                            g,
                            x: x.add((oy * g.stride[0] * g.w + ox * g.stride[1]) * g.ci),
                            weights: w.panels.as_ptr().add(panel * taps * PANEL),
                            bias: w.bias.as_ptr().add(panel * PANEL),
                            prelu: w.prelu.map(|p| p.as_ptr().add(panel * PANEL)),
                        };
                        let out = y.add((oy * ow + ox) * g.co + panel * PANEL);
                        let width = (g.co - panel * PANEL).min(PANEL);
                        crate::kernels::six_rows!(tile, pixels, out, width);
                    }
                    ox += pixels;
                }
            }
        }
    }

    /// Up to 6 consecutive output pixels of a row (`g.stride[1]` input pixels apart) by one panel of 16 output channels.
    struct Tile<'a> {
        g: &'a Geometry,
        /// The input pixel under the first output pixel's top-left tap.
        x: *const f32,
        weights: *const f32,
        bias: *const f32,
        prelu: Option<*const f32>,
    }

    impl Tile<'_> {
        /// `R` pixels into `out` (pixels `co` apart), `width` (at most 16) channels of the panel.
        #[inline(always)]
        unsafe fn run<const R: usize>(&self, out: *mut f32, width: usize) {
            let g = self.g;
            let bias = [
                _mm256_loadu_ps(self.bias),
                _mm256_loadu_ps(self.bias.add(8)),
            ];
            let mut acc = [bias; R];
            let mut weights = self.weights;
            // Floats from one output pixel's input window to the next's.
            let step = g.stride[1] * g.ci;
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let src = self.x.add((ky * g.w + kx) * g.ci);
                    for i in 0..g.ci {
                        let w0 = _mm256_loadu_ps(weights);
                        let w1 = _mm256_loadu_ps(weights.add(8));
                        weights = weights.add(PANEL);
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv = _mm256_broadcast_ss(&*src.add(r * step + i));
                            a[0] = _mm256_fmadd_ps(xv, w0, a[0]);
                            a[1] = _mm256_fmadd_ps(xv, w1, a[1]);
                        }
                    }
                }
            }
            if let Some(prelu) = self.prelu {
                let zero = _mm256_setzero_ps();
                let slope = [_mm256_loadu_ps(prelu), _mm256_loadu_ps(prelu.add(8))];
                for a in acc.iter_mut() {
                    for v in 0..2 {
                        a[v] = _mm256_fmadd_ps(_mm256_min_ps(a[v], zero), slope[v], a[v]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let row = out.add(r * g.co);
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Geometry, Packed, PANEL};
    use std::arch::x86_64::*;

    /// Pixels per tile: 12 x 2 accumulators, 2 weight vectors and a broadcast fill 27 of the 32
    /// vector registers.
    const ROWS: usize = 12;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn run(g: &Geometry, w: &Packed, x: &[f32], y: &mut [f32]) {
        let (oh, ow) = (g.oh(), g.ow());
        let taps = g.kh * g.kw * g.ci;
        let panels = g.co.div_ceil(PANEL);
        let (in_image, out_image) = (g.h * g.w * g.ci, oh * ow * g.co);
        for n in 0..g.batch {
            let (x, y) = (
                x.as_ptr().add(n * in_image),
                y.as_mut_ptr().add(n * out_image),
            );
            for oy in 0..oh {
                let mut ox = 0;
                while ox < ow {
                    let pixels = (ow - ox).min(ROWS);
                    // Two panels a tile, then the odd one alone.
                    let mut panel = 0;
                    while panel < panels {
                        let pair = if panel + 1 < panels { 2 } else { 1 };
                        let tile = Tile {
                            g,
                            x: x.add((oy * g.stride[0] * g.w + ox * g.stride[1]) * g.ci),
                            weights: w.panels.as_ptr().add(panel * taps * PANEL),
                            panel_stride: taps * PANEL,
                            bias: w.bias.as_ptr().add(panel * PANEL),
                            prelu: w.prelu.map(|p| p.as_ptr().add(panel * PANEL)),
                        };
                        let out = y.add((oy * ow + ox) * g.co + panel * PANEL);
                        let width = (g.co - panel * PANEL).min(pair * PANEL);
                        match (pair, pixels) {
                            (2, 12) => tile.run::<12, 2>(out, width),
                            (2, p) => tile.run_short::<2>(p, out, width),
                            (_, 12) => tile.run::<12, 1>(out, width),
                            (_, p) => tile.run_short::<1>(p, out, width),
                        }
                        panel += pair;
                    }
                    ox += pixels;
                }
            }
        }
    }

    /// Up to 12 consecutive output pixels of a row (`g.stride[1]` input pixels apart) by `P` panels of 16 output channels.
    struct Tile<'a> {
        g: &'a Geometry,
        /// The input pixel under the first output pixel's top-left tap.
        x: *const f32,
        weights: *const f32,
        /// Floats from one panel's weights to the next's.
        panel_stride: usize,
        bias: *const f32,
        prelu: Option<*const f32>,
    }

    impl Tile<'_> {
        /// Fewer than 12 pixels: the row's tail.
        #[inline(always)]
        unsafe fn run_short<const P: usize>(&self, pixels: usize, out: *mut f32, width: usize) {
            crate::kernels::short_rows!(self, P, pixels, out, width)
        }

        /// `R` pixels into `out` (pixels `co` apart), `width` (at most `16 P`) channels.
        #[inline(always)]
        unsafe fn run<const R: usize, const P: usize>(&self, out: *mut f32, width: usize) {
            let g = self.g;
            let mut acc = [[_mm512_setzero_ps(); P]; R];
            for a in acc.iter_mut() {
                for (v, lane) in a.iter_mut().enumerate() {
                    *lane = _mm512_loadu_ps(self.bias.add(v * PANEL));
                }
            }
            let mut step = 0;
            // Floats from one output pixel's input window to the next's.
            let pixel_step = g.stride[1] * g.ci;
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let src = self.x.add((ky * g.w + kx) * g.ci);
                    for i in 0..g.ci {
                        let mut wv = [_mm512_setzero_ps(); P];
                        for (v, lane) in wv.iter_mut().enumerate() {
                            *lane = _mm512_loadu_ps(
                                self.weights.add(v * self.panel_stride + step * PANEL),
                            );
                        }
                        step += 1;
                        for (r, a) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*src.add(r * pixel_step + i));
                            for v in 0..P {
                                a[v] = _mm512_fmadd_ps(xv, wv[v], a[v]);
                            }
                        }
                    }
                }
            }
            if let Some(prelu) = self.prelu {
                let zero = _mm512_setzero_ps();
                let mut slope = [zero; P];
                for (v, s) in slope.iter_mut().enumerate() {
                    *s = _mm512_loadu_ps(prelu.add(v * PANEL));
                }
                for a in acc.iter_mut() {
                    for v in 0..P {
                        a[v] = _mm512_fmadd_ps(_mm512_min_ps(a[v], zero), slope[v], a[v]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let row = out.add(r * g.co);
                for (v, lane) in a.iter().enumerate() {
                    let left = width.saturating_sub(v * PANEL).min(PANEL);
                    if left == PANEL {
                        _mm512_storeu_ps(row.add(v * PANEL), *lane);
                    } else if left > 0 {
                        let mask: __mmask16 = (1u16 << left) - 1;
                        _mm512_mask_storeu_ps(row.add(v * PANEL), mask, *lane);
                    }
                }
            }
        }
    }
}
