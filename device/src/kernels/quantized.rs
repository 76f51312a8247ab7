//! int8 models' 1x1 convolutions in integer arithmetic, and their other quantize-dequantize
//! pairs in one vectorised pass.
//!
//! `smoothface-train quantize` (its default QDQ form) writes each convolution as a float one that
//! reads `DequantizeLinear(QuantizeLinear(x))` and `DequantizeLinear(int8 weights)`. Tract folds
//! the weights back to floats at load and runs the rest as written: the convolution in float, the
//! activations' quantization and dequantization as two scalar element-wise passes, and the PRelus
//! (which a quantize now separates from the next convolution) on their own; so the int8 model ran
//! at twice the float one's time. Here a 1x1 convolution with a quantized input runs as the QDQ
//! graph defines it, in integers:
//!
//! `y[p, o] = bias[o] + s_x * s_w[o] * sum_i w_q[o, i] * (x_q[p, i] - z)`
//!
//! with `x_q = clamp(round_half_even(x * (1 / s_x)) + z, 0, 255)` computed as the input is read
//! (tract's `QuantizeLinearU8`), the sum exact in 32-bit integers, the bias, the PRelu after the
//! convolution and the next quantize-dequantize pair (when only it reads the result) applied
//! before the tile is stored. The tile is the float kernel's shape (12 pixels by 32 output
//! channels) with AVX-512 VNNI's `vpdpbusd`: 64 u8 x i8 products an instruction where the float
//! tile's FMA does 16, the weights a quarter of the bytes. On aarch64 the same tile runs on the
//! dot-product instructions (`sdot`, 16 i8 x i8 products), the input offset by 128 into i8 and
//! the offset's sum folded into `zero_sums`. On x86-64 CPUs with AVX2 but not VNNI it runs on
//! `vpmaddwd` (16 i16 x i16 products, summed in pairs into 32-bit lanes), the input widened to
//! i16 as it is quantized and the weights as they are loaded, in the float AVX2 tile's shape (6
//! pixels by 16 channels): twice the float FMA's products an instruction, and exact. AVX2's
//! u8 x i8 `vpmaddubsw` does twice as many again but saturates its 16-bit pair sums, which u8
//! activations times 8-bit weights reach (onnxruntime quantizes weights to 7 bits for it); taking
//! the input's signs onto the weights avoids that, exactly, but ran 19-28% slower here than
//! `vpmaddwd` (it needs an absolute value, a sign and a second multiply for each product vector).
//!
//! [`FakeQuant`] replaces every other `DequantizeLinear(QuantizeLinear(x))` (the depthwise
//! convolutions' inputs) with one vectorised float pass of the same function.

use super::direct::PANEL;
use super::pointwise::one_by_one;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearU8};

/// Input channels per step of the VNNI and `sdot` kernels (the four bytes one 32-bit lane sums;
/// AVX2's `vpmaddwd` sums two): every form's input rows are padded to a multiple of it.
pub const GROUP: usize = 4;

/// A tensor's uint8 quantization as tract's `QuantizeLinearU8` and `DequantizeLinearF32` compute
/// it: `q = clamp(round_half_even(x * inverse_scale) + zero_point, 0, 255)` and back
/// `(q - zero_point) * scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantization {
    /// The quantize's multiplier (tract keeps `1 / scale`, rounded, not the scale itself).
    pub inverse_scale: f32,
    /// The dequantize's scale.
    pub scale: f32,
    /// The zero point, shared by both.
    pub zero_point: u8,
}

impl Quantization {
    /// The quantized value of `x`, by the definition (a NaN quantizes to the zero point).
    pub fn quantize(&self, x: f32) -> u8 {
        let z = f32::from(self.zero_point);
        let q = (x * self.inverse_scale).round_ties_even();
        // Clamped while a float, so that no value overflows the integer it becomes.
        if q.is_nan() {
            self.zero_point
        } else {
            (q.clamp(-z, 255.0 - z) + z) as u8
        }
    }

    /// `x` quantized and dequantized.
    pub fn fake(&self, x: f32) -> f32 {
        (i32::from(self.quantize(x)) - i32::from(self.zero_point)) as f32 * self.scale
    }
}

/// The int8 weights of a model's quantized convolutions, found by the float values tract folds
/// them into (`(q - 0) * scale`, per output channel): the ONNX graph has the integers, the typed
/// model only their dequantized floats.
#[derive(Debug, Clone, Default)]
pub struct Int8Weights {
    by_hash: HashMap<u64, Vec<QuantizedWeights>>,
}

/// One convolution's int8 weights.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedWeights {
    /// `[co, ...]`: the integers, zero point 0.
    pub values: Vec<i8>,
    /// `[co]`: each output channel's scale.
    pub scales: Vec<f32>,
}

impl QuantizedWeights {
    /// The floats tract's dequantization gives.
    pub fn dequantized(&self) -> Vec<f32> {
        let per = self.values.len() / self.scales.len().max(1);
        self.values
            .chunks(per.max(1))
            .zip(&self.scales)
            .flat_map(|(row, s)| row.iter().map(move |&q| f32::from(q) * s))
            .collect()
    }
}

fn hash_floats(values: &[f32]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for v in values {
        v.to_bits().hash(&mut hasher);
    }
    hasher.finish()
}

impl Int8Weights {
    /// Adds one convolution's weights (ignored unless `values` splits into `scales.len()` rows).
    pub fn insert(&mut self, weights: QuantizedWeights) {
        let co = weights.scales.len();
        if co == 0 || weights.values.is_empty() || !weights.values.len().is_multiple_of(co) {
            return;
        }
        let key = hash_floats(&weights.dequantized());
        self.by_hash.entry(key).or_default().push(weights);
    }

    /// The int8 weights that dequantize to exactly `floats`, if any.
    pub fn find(&self, floats: &[f32]) -> Option<&QuantizedWeights> {
        let candidates = self.by_hash.get(&hash_floats(floats))?;
        candidates.iter().find(|w| {
            let d = w.dequantized();
            d.len() == floats.len()
                && d.iter()
                    .zip(floats)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        })
    }

    /// How many convolutions' weights it holds.
    pub fn len(&self) -> usize {
        self.by_hash.values().map(Vec::len).sum()
    }

    /// Whether it holds none (a float model).
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The instruction sets the integer kernels have a form for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, BW) with VNNI: `vpdpbusd`, u8 x i8 into i32.
    Avx512Vnni,
    /// aarch64 NEON with the dot-product extension: `sdot`, i8 x i8 into i32.
    NeonDot,
    /// AVX2 and FMA: `vpmaddwd`, i16 x i16 pairs into i32 (the input quantized into i16, the
    /// weights sign-extended as they are loaded).
    Avx2,
}

impl Isa {
    /// Every form, fastest first: [`isa`] picks the first this CPU runs.
    pub const ALL: [Isa; 3] = [Isa::Avx512Vnni, Isa::NeonDot, Isa::Avx2];

    /// Whether this CPU runs the form.
    pub fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => super::available(),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Input channels one 32-bit lane sums per instruction: the packing's group of weights.
    pub fn group(self) -> usize {
        match self {
            Isa::Avx512Vnni | Isa::NeonDot => GROUP,
            Isa::Avx2 => 2,
        }
    }

    /// Bytes a quantized input value takes in the form's input rows ([`quantize_input`]).
    pub fn input_bytes(self) -> usize {
        match self {
            Isa::Avx512Vnni | Isa::NeonDot => 1,
            Isa::Avx2 => 2,
        }
    }
}

/// The form this CPU runs, if any: where none does, int8 models keep their float convolutions
/// (on dequantized weights: the same function, computed in float).
pub fn isa() -> Option<Isa> {
    Isa::ALL.into_iter().find(|isa| isa.runs_here())
}

/// The shape of one 1x1 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// Pixels (the product of every axis but the channels').
    pub pixels: usize,
    /// Input channels.
    pub ci: usize,
    /// Output channels.
    pub co: usize,
}

impl Shape {
    /// Input channels rounded up to [`GROUP`]: the row length of the quantized input.
    pub fn ci_padded(&self) -> usize {
        self.ci.div_ceil(GROUP) * GROUP
    }

    /// Panels of 16 output channels.
    pub fn panels(&self) -> usize {
        self.co.div_ceil(PANEL)
    }
}

/// A convolution's weights and per-channel constants packed for the kernels.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// `[panels, ci_padded / g, 16, g]` with `g` the form's [`Isa::group`] (4, or 2 for AVX2):
    /// for each panel of 16 output channels and each group of `g` input channels, each channel's
    /// `g` weights; zero past `ci` and `co`.
    pub weights: Vec<i8>,
    /// `[panels * 16]`: `z * sum_i w_q[o, i]`, subtracted from each sum (for `sdot`,
    /// `(z - 128) * sum_i w_q[o, i]`: it reads the input offset by 128 into i8).
    pub zero_sums: Vec<i32>,
    /// `[panels * 16]`: `s_x * s_w[o]`.
    pub multipliers: Vec<f32>,
    /// `[panels * 16]`.
    pub bias: Vec<f32>,
    /// `[panels * 16]`: each slope minus one of the PRelu after the convolution, if any.
    pub prelu: Option<Vec<f32>>,
}

/// Packs `[co, ci]` int8 weights for `isa`, with the input's quantization, the weights' scales,
/// the bias and the PRelu's slopes minus one (`[co]` each).
pub fn pack(
    isa: Isa,
    shape: &Shape,
    weights: &QuantizedWeights,
    input: &Quantization,
    bias: &[f32],
    prelu: Option<&[f32]>,
) -> Packed {
    let (ci, co, group) = (shape.ci, shape.co, isa.group());
    let groups = shape.ci_padded() / group;
    let lanes = shape.panels() * PANEL;
    let mut packed = vec![0i8; lanes * groups * group];
    let mut zero_sums = vec![0i32; lanes];
    let offset = match isa {
        Isa::Avx512Vnni | Isa::Avx2 => i32::from(input.zero_point),
        // sdot multiplies i8 by i8: the kernel reads x_q - 128, so the sum is short by 128 w.
        Isa::NeonDot => i32::from(input.zero_point) - 128,
    };
    for (o, (row, sum)) in weights
        .values
        .chunks_exact(ci)
        .zip(zero_sums.iter_mut())
        .enumerate()
        .take(co)
    {
        for (i, &w) in row.iter().enumerate() {
            let (panel, lane) = (o / PANEL, o % PANEL);
            packed[((panel * groups + i / group) * PANEL + lane) * group + i % group] = w;
        }
        *sum = offset * row.iter().map(|&w| i32::from(w)).sum::<i32>();
    }
    let padded = |values: &[f32]| {
        let mut out = vec![0f32; lanes];
        out[..values.len()].copy_from_slice(values);
        out
    };
    let multipliers: Vec<f32> = weights.scales.iter().map(|s| input.scale * s).collect();
    Packed {
        weights: packed,
        zero_sums,
        multipliers: padded(&multipliers),
        bias: padded(bias),
        prelu: prelu.map(padded),
    }
}

/// Quantizes `[pixels, ci]` floats into `[pixels, ci_padded]` values of
/// [`Isa::input_bytes`] each (the padding zero), in the form `isa` reads: u8 for VNNI,
/// `u8 - 128` as i8 for `sdot`, the u8 value as a little-endian i16 for AVX2.
pub fn quantize_input(isa: Isa, shape: &Shape, q: &Quantization, x: &[f32], out: &mut [u8]) {
    let (ci, row) = (shape.ci, shape.ci_padded() * isa.input_bytes());
    assert!(x.len() == shape.pixels * ci && out.len() == shape.pixels * row);
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::NeonDot && isa.runs_here() {
        for (values, dst) in x.chunks_exact(ci).zip(out.chunks_exact_mut(row)) {
            // SAFETY: the CPU runs the form (checked above); `dst` holds at least
            // `values.len()` values of the form's width.
            unsafe {
                match isa {
                    Isa::Avx2 => avx2::quantize(q, values, dst),
                    _ => avx512::quantize(q, values, dst),
                }
            }
        }
        return;
    }
    // The byte forms: sdot reads the bytes offset by 128.
    let flip = match isa {
        Isa::Avx512Vnni => 0,
        Isa::NeonDot => 0x80,
        Isa::Avx2 => {
            for (values, dst) in x.chunks_exact(ci).zip(out.chunks_exact_mut(row)) {
                for (v, d) in values.iter().zip(dst.chunks_exact_mut(2)) {
                    d.copy_from_slice(&i16::from(q.quantize(*v)).to_le_bytes());
                }
                dst[2 * ci..].fill(0);
            }
            return;
        }
    };
    for (values, dst) in x.chunks_exact(ci).zip(out.chunks_exact_mut(row)) {
        for (v, d) in values.iter().zip(dst.iter_mut()) {
            *d = q.quantize(*v) ^ flip;
        }
        dst[ci..].fill(flip);
    }
}

/// Convolves quantized `[pixels, ci_padded]` input values `xq` ([`quantize_input`]) into
/// `[pixels, co]` floats `y` with weights packed for `isa` (which the CPU must run), each value
/// then fake-quantized by `output` if given.
pub fn run(
    isa: Isa,
    shape: &Shape,
    w: &Packed,
    xq: &[u8],
    output: Option<&Quantization>,
    y: &mut [f32],
) {
    let lanes = shape.panels() * PANEL;
    assert!(xq.len() == shape.pixels * shape.ci_padded() * isa.input_bytes());
    assert!(y.len() == shape.pixels * shape.co);
    assert!(w.weights.len() == lanes * shape.ci_padded());
    assert!(w.zero_sums.len() == lanes && w.multipliers.len() == lanes && w.bias.len() == lanes);
    assert!(w.prelu.as_ref().is_none_or(|p| p.len() == lanes));
    assert!(isa.runs_here(), "this CPU does not run {isa:?}");
    // SAFETY: the CPU runs the form and the slices hold what the shape says (checked above).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => avx512::run(shape, w, xq, output, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::run(shape, w, xq, output, y),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDot => dot::run(shape, w, xq, output, y),
            #[allow(unreachable_patterns)]
            _ => unreachable!("checked by runs_here"),
        }
    }
}

thread_local! {
    /// Each thread's quantized input of the convolution it is running: one buffer, reused, where
    /// a fresh one per convolution cost its allocation and zeroing (4.6% of an int8 embedding).
    static QUANTIZED_INPUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A quantized 1x1 convolution over a channels-last tensor, reading floats and writing floats:
/// see the module's documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedPointwise {
    isa: Isa,
    shape: Shape,
    input: Quantization,
    output: Option<Quantization>,
    output_shape: TVec<usize>,
    packed: Arc<Packed>,
}

impl Eq for QuantizedPointwise {}

impl QuantizedPointwise {
    /// Whether the op fake-quantizes its output (it took over the quantize-dequantize pair after
    /// it).
    pub fn quantizes_output(&self) -> bool {
        self.output.is_some()
    }

    /// Whether the op computes the PRelu after the convolution.
    pub fn has_prelu(&self) -> bool {
        self.packed.prelu.is_some()
    }
}

/// The quantization of `DequantizeLinear(QuantizeLinear(x))` at `dq` (a u8 pair with one zero
/// point) and the outlet of `x`.
fn quantize_pair(model: &TypedModel, dq: usize) -> Option<(Quantization, OutletId)> {
    let dq_node = model.node(dq);
    let dequantize = dq_node.op_as::<DequantizeLinearF32>()?;
    let q_node = model.node(dq_node.inputs.first()?.node);
    let quantize = q_node
        .op_as::<ElementWiseOp>()?
        .0
        .downcast_ref::<QuantizeLinearU8>()?;
    let x = *q_node.inputs.first()?;
    let floats = model.outlet_fact(x).ok()?.datum_type == f32::datum_type();
    (floats && dequantize.zero_point == i32::from(quantize.zero_point)).then_some((
        Quantization {
            inverse_scale: quantize.scale,
            scale: dequantize.scale,
            zero_point: quantize.zero_point,
        },
        x,
    ))
}

/// The quantize-dequantize pair that alone reads `y`, and the dequantize's outlet.
fn following_pair(model: &TypedModel, y: OutletId) -> Option<(Quantization, OutletId)> {
    let [q] = model.outlet_successors(y) else {
        return None;
    };
    let [dq] = model.outlet_successors(OutletId::new(q.node, 0)) else {
        return None;
    };
    let (quantization, x) = quantize_pair(model, dq.node)?;
    (x == y).then_some((quantization, OutletId::new(dq.node, 0)))
}

/// The fused op for the einsum at `id` when it is a 1x1 convolution reading a quantized input
/// with weights in `int8`, with the bias, PRelu and quantize-dequantize pair after it where
/// there are: the op, the float outlet it reads and the outlet it replaces.
pub(super) fn fusable(
    model: &TypedModel,
    id: usize,
    int8: &Int8Weights,
) -> TractResult<Option<(QuantizedPointwise, OutletId, OutletId)>> {
    let Some(isa) = isa() else {
        return Ok(None);
    };
    let Some(conv) = one_by_one(model, id)? else {
        return Ok(None);
    };
    let Some((input, x)) = quantize_pair(model, model.node(id).inputs[0].node) else {
        return Ok(None);
    };
    let Some(weights) = int8.find(super::floats(&conv.weights)?) else {
        return Ok(None);
    };
    let mut replaced = conv.output;
    let prelu = super::prelu::following_prelu(model, replaced, conv.co)?;
    if let Some((_, out)) = &prelu {
        replaced = *out;
    }
    let output = following_pair(model, replaced);
    if let Some((_, out)) = &output {
        replaced = *out;
    }
    let shape = Shape {
        pixels: conv.pixels,
        ci: conv.ci,
        co: conv.co,
    };
    let slopes = prelu.as_ref().map(|(s, _)| super::floats(s)).transpose()?;
    let packed = pack(isa, &shape, weights, &input, &conv.bias, slopes);
    let op = QuantizedPointwise {
        isa,
        shape,
        input,
        output: output.map(|(q, _)| q),
        output_shape: conv.output_shape,
        packed: Arc::new(packed),
    };
    Ok(Some((op, x, replaced)))
}

impl Op for QuantizedPointwise {
    fn name(&self) -> StaticName {
        "SmoothfaceInt8Pointwise".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let s = &self.shape;
        Ok(vec![format!(
            "{} pixels, {} -> {} channels, {:?}{}{}",
            s.pixels,
            s.ci,
            s.co,
            self.isa,
            if self.has_prelu() { " + PRelu" } else { "" },
            if self.quantizes_output() {
                " + quantize-dequantize"
            } else {
                ""
            }
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizedPointwise {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = super::floats(&inputs[0])?;
        let s = &self.shape;
        ensure!(
            x.len() == s.pixels * s.ci,
            "int8 1x1 convolution input of the wrong size"
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        QUANTIZED_INPUT.with_borrow_mut(|xq| -> TractResult<()> {
            // Every byte is written by the quantization (the padding too): the buffer only
            // grows, zero-filled once per thread to the largest input (resizing it to each
            // input's length zero-filled it again after every smaller one).
            let len = s.pixels * s.ci_padded() * self.isa.input_bytes();
            if xq.len() < len {
                xq.resize(len, 0);
            }
            let xq = &mut xq[..len];
            quantize_input(self.isa, s, &self.input, x, xq);
            let mut view = output.try_as_plain_ram_mut()?;
            run(
                self.isa,
                s,
                &self.packed,
                xq,
                self.output.as_ref(),
                view.as_slice_mut::<f32>()?,
            );
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for QuantizedPointwise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1);
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    as_op!();
}

/// `DequantizeLinear(QuantizeLinear(x))` over floats in one pass: `(q(x) - z) * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeQuant {
    quantization: Quantization,
}

impl Eq for FakeQuant {}

/// Fake-quantizes `x` into `y`, vectorised where the CPU has AVX2 (with AVX-512 when it has it).
pub fn fake_quantize(q: &Quantization, x: &[f32], y: &mut [f32]) {
    assert!(x.len() == y.len());
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = super::direct::isas().next() {
        // SAFETY: the CPU runs the form (`isas` lists only those); x and y have the same length
        // (checked above).
        unsafe {
            match isa {
                super::direct::Isa::Avx512 => avx512::fake_quantize(q, x, y),
                super::direct::Isa::Avx2 => avx2::fake_quantize(q, x, y),
            }
        }
        return;
    }
    for (a, b) in x.iter().zip(y.iter_mut()) {
        *b = q.fake(*a);
    }
}

/// The fake-quantize op for the dequantize at `id` when it dequantizes a quantize of floats:
/// the op, the float outlet it reads and the outlet it replaces.
pub(super) fn fake_quant_fusable(
    model: &TypedModel,
    id: usize,
) -> TractResult<Option<(FakeQuant, OutletId, OutletId)>> {
    Ok(quantize_pair(model, id)
        .map(|(quantization, x)| (FakeQuant { quantization }, x, OutletId::new(id, 0))))
}

impl Op for FakeQuant {
    fn name(&self) -> StaticName {
        "SmoothfaceFakeQuant".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let q = &self.quantization;
        Ok(vec![format!(
            "scale {} zero point {}",
            q.scale, q.zero_point
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for FakeQuant {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = super::floats(&inputs[0])?;
        let mut output = unsafe { Tensor::uninitialized::<f32>(inputs[0].shape())? };
        {
            let mut view = output.try_as_plain_ram_mut()?;
            fake_quantize(&self.quantization, x, view.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for FakeQuant {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1);
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(target_arch = "x86_64")]
/// The AVX2 forms: fake quantization, quantization into i16 and the `vpmaddwd` kernel.
mod avx2 {
    use super::{Packed, Quantization, Shape};
    use crate::kernels::direct::PANEL;
    use std::arch::x86_64::*;

    /// Pixels per tile: 6 x 2 accumulators, 2 weight vectors, a broadcast and a product fill
    /// the 16 vector registers.
    const ROWS: usize = 6;

    /// `q(x) - z` clamped and rounded in floats: `[-z, 255 - z]`, NaN to 0.
    #[inline(always)]
    unsafe fn centred(q: &Quantization, v: __m256) -> __m256 {
        let z = f32::from(q.zero_point);
        let r = _mm256_round_ps(
            _mm256_mul_ps(v, _mm256_set1_ps(q.inverse_scale)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let c = _mm256_min_ps(
            _mm256_max_ps(r, _mm256_set1_ps(-z)),
            _mm256_set1_ps(255.0 - z),
        );
        // NaN (unordered with itself) becomes 0, the zero point's value, as in the definition.
        _mm256_and_ps(c, _mm256_cmp_ps(r, r, _CMP_ORD_Q))
    }

    /// [`super::fake_quantize`], 8 floats a step.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fake_quantize(q: &Quantization, x: &[f32], y: &mut [f32]) {
        let scale = _mm256_set1_ps(q.scale);
        let whole = x.len() / 8 * 8;
        for i in (0..whole).step_by(8) {
            let c = centred(q, _mm256_loadu_ps(x.as_ptr().add(i)));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_mul_ps(c, scale));
        }
        for (a, b) in x[whole..].iter().zip(&mut y[whole..]) {
            *b = q.fake(*a);
        }
    }

    /// Quantizes one row of floats into little-endian i16 values (two bytes each), `dst`'s
    /// tail past `x` zero.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize(q: &Quantization, x: &[f32], dst: &mut [u8]) {
        let z = _mm256_set1_epi32(i32::from(q.zero_point));
        let whole = x.len() / 8 * 8;
        for i in (0..whole).step_by(8) {
            let c = centred(q, _mm256_loadu_ps(x.as_ptr().add(i)));
            let ints = _mm256_add_epi32(_mm256_cvtps_epi32(c), z);
            // 0 to 255: the pack to i16 never saturates.
            let shorts = _mm_packs_epi32(
                _mm256_castsi256_si128(ints),
                _mm256_extracti128_si256::<1>(ints),
            );
            _mm_storeu_si128(dst.as_mut_ptr().add(2 * i) as *mut __m128i, shorts);
        }
        for (v, d) in x[whole..].iter().zip(dst[2 * whole..].chunks_exact_mut(2)) {
            d.copy_from_slice(&i16::from(q.quantize(*v)).to_le_bytes());
        }
        dst[2 * x.len()..].fill(0);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(
        s: &Shape,
        w: &Packed,
        xq: &[u8],
        output: Option<&Quantization>,
        y: &mut [f32],
    ) {
        let row = s.ci_padded();
        let mut p = 0;
        // Pixels outer, panels inner: the tile's input rows stay in L1 across panels.
        while p < s.pixels {
            let pixels = (s.pixels - p).min(ROWS);
            for panel in 0..s.panels() {
                let tile = Tile {
                    s,
                    x: xq.as_ptr().add(2 * p * row),
                    weights: w.weights.as_ptr().add(panel * row * PANEL),
                    lane: panel * PANEL,
                    w,
                    output,
                };
                let out = y.as_mut_ptr().add(p * s.co + panel * PANEL);
                let width = (s.co - panel * PANEL).min(PANEL);
                crate::kernels::six_rows!(tile, pixels, out, width);
            }
            p += pixels;
        }
    }

    /// Up to 6 consecutive pixels by one panel of 16 output channels.
    struct Tile<'a> {
        s: &'a Shape,
        /// The first pixel's quantized input row (i16 values).
        x: *const u8,
        /// The panel's weights, in pairs of input channels.
        weights: *const i8,
        /// The panel's first output channel.
        lane: usize,
        w: &'a Packed,
        output: Option<&'a Quantization>,
    }

    impl Tile<'_> {
        /// `R` pixels into `out` (pixels `co` apart), `width` (at most 16) channels.
        #[inline(always)]
        unsafe fn run<const R: usize>(&self, out: *mut f32, width: usize) {
            let s = self.s;
            let row = s.ci_padded();
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            for pair in 0..row / 2 {
                // 16 channels' two weights each, sign-extended to i16: `[o][i]` pairs, which
                // `vpmaddwd` multiplies by the two input values and sums into lane `o`.
                let weights = self.weights.add(pair * 2 * PANEL);
                let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(weights as *const __m128i));
                let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(weights.add(16) as *const __m128i));
                for (r, a) in acc.iter_mut().enumerate() {
                    let two = (self.x.add(2 * (r * row + 2 * pair)) as *const i32).read_unaligned();
                    let xv = _mm256_set1_epi32(two);
                    a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(xv, w0));
                    a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(xv, w1));
                }
            }
            let zero = _mm256_setzero_ps();
            for (r, a) in acc.iter().enumerate() {
                let mut values = [zero; 2];
                for (v, (lane, value)) in a.iter().zip(values.iter_mut()).enumerate() {
                    let o = self.lane + 8 * v;
                    let sums = _mm256_loadu_si256(self.w.zero_sums.as_ptr().add(o) as *const _);
                    let mut f = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(*lane, sums)),
                        _mm256_loadu_ps(self.w.multipliers.as_ptr().add(o)),
                        _mm256_loadu_ps(self.w.bias.as_ptr().add(o)),
                    );
                    if let Some(prelu) = &self.w.prelu {
                        let slope = _mm256_loadu_ps(prelu.as_ptr().add(o));
                        f = _mm256_fmadd_ps(_mm256_min_ps(f, zero), slope, f);
                    }
                    if let Some(q) = self.output {
                        f = _mm256_mul_ps(centred(q, f), _mm256_set1_ps(q.scale));
                    }
                    *value = f;
                }
                let dst = out.add(r * s.co);
                if width == PANEL {
                    _mm256_storeu_ps(dst, values[0]);
                    _mm256_storeu_ps(dst.add(8), values[1]);
                } else {
                    let mut spill = [0f32; PANEL];
                    _mm256_storeu_ps(spill.as_mut_ptr(), values[0]);
                    _mm256_storeu_ps(spill.as_mut_ptr().add(8), values[1]);
                    std::ptr::copy_nonoverlapping(spill.as_ptr(), dst, width);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// The AVX-512 forms: quantization and fake quantization (F, BW) and the VNNI kernel.
mod avx512 {
    use super::{Packed, Quantization, Shape, GROUP};
    use crate::kernels::direct::PANEL;
    use std::arch::x86_64::*;

    /// Pixels per tile: 12 x 2 accumulators, 2 weight vectors and a broadcast fill 27 of the 32
    /// vector registers.
    const ROWS: usize = 12;

    /// `q(x) - z` clamped and rounded in floats: `[-z, 255 - z]`, NaN to 0.
    #[inline(always)]
    unsafe fn centred(q: &Quantization, v: __m512) -> __m512 {
        let z = f32::from(q.zero_point);
        let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(v, _mm512_set1_ps(q.inverse_scale)),
        );
        let c = _mm512_min_ps(
            _mm512_max_ps(r, _mm512_set1_ps(-z)),
            _mm512_set1_ps(255.0 - z),
        );
        // NaN (unordered with itself) becomes 0, the zero point.
        _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r), c)
    }

    /// Quantizes one row of floats into bytes, `dst`'s tail past `x` zero.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize(q: &Quantization, x: &[f32], dst: &mut [u8]) {
        let z = _mm512_set1_epi32(i32::from(q.zero_point));
        let mut i = 0;
        while i < x.len() {
            let n = (x.len() - i).min(16);
            let mask: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
            let c = _mm512_add_epi32(_mm512_cvtps_epi32(centred(q, v)), z);
            _mm512_mask_cvtepi32_storeu_epi8(dst.as_mut_ptr().add(i) as *mut i8, mask, c);
            i += n;
        }
        dst[x.len()..].fill(0);
    }

    /// [`super::fake_quantize`], 16 floats a step.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fake_quantize(q: &Quantization, x: &[f32], y: &mut [f32]) {
        let scale = _mm512_set1_ps(q.scale);
        let mut i = 0;
        while i < x.len() {
            let n = (x.len() - i).min(16);
            let mask: __mmask16 = if n == 16 { !0 } else { (1u16 << n) - 1 };
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(i));
            let out = _mm512_mul_ps(centred(q, v), scale);
            _mm512_mask_storeu_ps(y.as_mut_ptr().add(i), mask, out);
            i += n;
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn run(
        s: &Shape,
        w: &Packed,
        xq: &[u8],
        output: Option<&Quantization>,
        y: &mut [f32],
    ) {
        let panels = s.panels();
        let stride = s.ci_padded() * PANEL;
        let mut p = 0;
        while p < s.pixels {
            let pixels = (s.pixels - p).min(ROWS);
            let mut panel = 0;
            while panel < panels {
                let pair = if panel + 1 < panels { 2 } else { 1 };
                let tile = Tile {
                    s,
                    x: xq.as_ptr().add(p * s.ci_padded()),
                    weights: w.weights.as_ptr().add(panel * stride),
                    stride,
                    lane: panel * PANEL,
                    w,
                    output,
                };
                let out = y.as_mut_ptr().add(p * s.co + panel * PANEL);
                let width = (s.co - panel * PANEL).min(pair * PANEL);
                match (pair, pixels) {
                    (2, 12) => tile.run::<12, 2>(out, width),
                    (2, r) => tile.run_short::<2>(r, out, width),
                    (_, 12) => tile.run::<12, 1>(out, width),
                    (_, r) => tile.run_short::<1>(r, out, width),
                }
                panel += pair;
            }
            p += pixels;
        }
    }

    /// Up to 12 consecutive pixels by `P` panels of 16 output channels.
    struct Tile<'a> {
        s: &'a Shape,
        /// The first pixel's quantized input row.
        x: *const u8,
        /// The first panel's weights.
        weights: *const i8,
        /// Bytes from one panel's weights to the next's.
        stride: usize,
        /// The first panel's first output channel.
        lane: usize,
        w: &'a Packed,
        output: Option<&'a Quantization>,
    }

    impl Tile<'_> {
        #[inline(always)]
        unsafe fn run_short<const P: usize>(&self, pixels: usize, out: *mut f32, width: usize) {
            crate::kernels::short_rows!(self, P, pixels, out, width)
        }

        /// `R` pixels into `out` (pixels `co` apart), `width` (at most `16 P`) channels.
        #[inline(always)]
        unsafe fn run<const R: usize, const P: usize>(&self, out: *mut f32, width: usize) {
            let s = self.s;
            let row = s.ci_padded();
            let mut acc = [[_mm512_setzero_si512(); P]; R];
            for g in 0..row / GROUP {
                let mut wv = [_mm512_setzero_si512(); P];
                for (v, lane) in wv.iter_mut().enumerate() {
                    *lane = _mm512_loadu_si512(
                        self.weights.add(v * self.stride + g * PANEL * GROUP) as *const _,
                    );
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    let four = (self.x.add(r * row + g * GROUP) as *const i32).read_unaligned();
                    let xv = _mm512_set1_epi32(four);
                    for v in 0..P {
                        a[v] = _mm512_dpbusd_epi32(a[v], xv, wv[v]);
                    }
                }
            }
            let zero = _mm512_setzero_ps();
            for (r, a) in acc.iter().enumerate() {
                let dst = out.add(r * s.co);
                for (v, lane) in a.iter().enumerate() {
                    let sums = _mm512_loadu_si512(
                        self.w.zero_sums.as_ptr().add(self.lane + v * PANEL) as *const _,
                    );
                    let exact = _mm512_sub_epi32(*lane, sums);
                    let mut f = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(exact),
                        _mm512_loadu_ps(self.w.multipliers.as_ptr().add(self.lane + v * PANEL)),
                        _mm512_loadu_ps(self.w.bias.as_ptr().add(self.lane + v * PANEL)),
                    );
                    if let Some(prelu) = &self.w.prelu {
                        let slope = _mm512_loadu_ps(prelu.as_ptr().add(self.lane + v * PANEL));
                        f = _mm512_fmadd_ps(_mm512_min_ps(f, zero), slope, f);
                    }
                    if let Some(q) = self.output {
                        f = _mm512_mul_ps(centred(q, f), _mm512_set1_ps(q.scale));
                    }
                    let left = width.saturating_sub(v * PANEL).min(PANEL);
                    if left == PANEL {
                        _mm512_storeu_ps(dst.add(v * PANEL), f);
                    } else if left > 0 {
                        let mask: __mmask16 = (1u16 << left) - 1;
                        _mm512_mask_storeu_ps(dst.add(v * PANEL), mask, f);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod dot {
    use super::{Packed, Quantization, Shape, GROUP};
    use crate::kernels::direct::PANEL;
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// Pixels per tile: 8 pixels x 4 vectors (16 channels) = 32 accumulators would take every
    /// register, so 6 x 4 = 24, with 4 weight vectors and the inputs' 16 bytes.
    const ROWS: usize = 6;

    /// `acc += sdot(w, x's 4 bytes at lane L)`: each i32 lane of `acc` gains the dot product of
    /// its 4 weights with the 4 input bytes.
    macro_rules! sdot_lane {
        ($acc:expr, $w:expr, $x:expr, $lane:literal) => {
            asm!(
                concat!("sdot {a:v}.4s, {w:v}.16b, {x:v}.4b[", $lane, "]"),
                a = inout(vreg) $acc,
                w = in(vreg) $w,
                x = in(vreg_low16) $x,
                options(pure, nomem, nostack),
            )
        };
    }

    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn run(
        s: &Shape,
        w: &Packed,
        xq: &[u8],
        output: Option<&Quantization>,
        y: &mut [f32],
    ) {
        let row = s.ci_padded();
        let stride = row * PANEL;
        for p0 in (0..s.pixels).step_by(ROWS) {
            let pixels = (s.pixels - p0).min(ROWS);
            for panel in 0..s.panels() {
                let weights = w.weights.as_ptr().add(panel * stride);
                let mut acc = [[vdupq_n_s32(0); 4]; ROWS];
                for g in 0..row / GROUP {
                    let mut wv = [vdupq_n_s8(0); 4];
                    for (v, lane) in wv.iter_mut().enumerate() {
                        *lane = vld1q_s8(weights.add((g * PANEL + v * 4) * GROUP));
                    }
                    for (r, a) in acc.iter_mut().enumerate().take(pixels) {
                        let four = (xq.as_ptr().add((p0 + r) * row + g * GROUP) as *const i32)
                            .read_unaligned();
                        let xv = vreinterpretq_s8_s32(vdupq_n_s32(four));
                        for v in 0..4 {
                            sdot_lane!(a[v], wv[v], xv, "0");
                        }
                    }
                }
                let lane0 = panel * PANEL;
                let width = (s.co - lane0).min(PANEL);
                for (r, a) in acc.iter().enumerate().take(pixels) {
                    let mut values = [0f32; PANEL];
                    for v in 0..4 {
                        let mut ints = [0i32; 4];
                        vst1q_s32(ints.as_mut_ptr(), a[v]);
                        for (k, &i) in ints.iter().enumerate() {
                            let o = lane0 + v * 4 + k;
                            let mut f =
                                ((i - w.zero_sums[o]) as f32).mul_add(w.multipliers[o], w.bias[o]);
                            if let Some(prelu) = &w.prelu {
                                f = f.min(0.0).mul_add(prelu[o], f);
                            }
                            if let Some(q) = output {
                                f = q.fake(f);
                            }
                            values[v * 4 + k] = f;
                        }
                    }
                    y[(p0 + r) * s.co + lane0..][..width].copy_from_slice(&values[..width]);
                }
            }
        }
    }
}
