//! The device's kernels against brute-force loops written from the definitions, over shapes that
//! reach every tail of their tiling (channel counts off the vector width, pixel counts off the
//! tile height, padding on every side, strides, kernels as large as the image).

use smoothface_device::kernels::quantized::{self, Quantization, QuantizedWeights, Shape};
use smoothface_device::kernels::{self, depthwise, direct, nibble, pointwise, softmax};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::EvalOp;

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn prelu(v: f32, slope_minus_one: f32) -> f32 {
    if v < 0.0 {
        v * (1.0 + slope_minus_one)
    } else {
        v
    }
}

fn skip_without_kernels() -> bool {
    if !kernels::available() {
        eprintln!("skipped: this CPU has no AVX2/FMA, so the device's kernels never run here");
        return true;
    }
    false
}

/// `y[oy, ox, c] = prelu(bias[c] + sum over taps inside the image of prelu_in(x) * w)`, plus,
/// paired, `prelu_in(x[c ^ 1]) * partner_w` at each tap.
fn depthwise_reference(g: &depthwise::Geometry, w: &depthwise::Weights, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; g.oh * g.ow * g.c];
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for c in 0..g.c {
                let mut acc = w.bias[c];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.stride_h + ky) as isize - g.pad_top as isize;
                        let ix = (ox * g.stride_w + kx) as isize - g.pad_left as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let read = |c: usize| {
                            let v = x[(iy as usize * g.w + ix as usize) * g.c + c];
                            w.input_prelu.map_or(v, |p| prelu(v, p[c]))
                        };
                        let tap = (ky * g.kw + kx) * g.c + c;
                        acc += read(c) * w.taps[tap];
                        if let Some(partner) = w.partner_taps {
                            acc += read(c ^ 1) * partner[tap];
                        }
                    }
                }
                if let Some(p) = w.prelu {
                    acc = prelu(acc, p[c]);
                }
                y[(oy * g.ow + ox) * g.c + c] = acc;
            }
        }
    }
    y
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn depthwise_kernel_matches_the_definition() {
    if skip_without_kernels() {
        return;
    }
    // (h, w, c, kernel, stride, pad top/left, pad bottom/right)
    let cases = [
        (56, 56, 64, 3, 1, 1, 1),  // MobileFaceNet's first depthwise
        (56, 56, 128, 3, 1, 1, 1), // w600k_mbf's grouped one (paired), and AVX-512's 64 + 64
        (14, 14, 256, 3, 2, 1, 1), // stride 2
        (7, 7, 512, 7, 1, 0, 0),   // the global depthwise: one output pixel
        (9, 6, 40, 3, 1, 1, 1),    // 32 + 8 channels (AVX-512: 16 + 16 + 8 masked)
        (5, 5, 100, 3, 1, 1, 1),   // AVX-512: 64 + 16 + 16 + 4 masked
        (5, 8, 13, 3, 2, 0, 2),    // 8 + 5 channels, asymmetric padding
        (6, 5, 14, 3, 2, 1, 0),    // 8 + 6 channels: a paired tail, one channel at a time
        (3, 3, 2, 3, 1, 1, 1),     // one pair
        (4, 4, 3, 5, 1, 2, 2),     // channels below a vector; kernel wider than the image
        (1, 1, 1, 1, 1, 0, 0),
    ];
    for (seed, &(h, w, c, k, stride, pad, pad_end)) in cases.iter().enumerate() {
        let seed = seed as u64 * 10;
        let (oh, ow) = (
            (h + pad + pad_end - k) / stride + 1,
            (w + pad + pad_end - k) / stride + 1,
        );
        let g = depthwise::Geometry {
            batch: 1,
            h,
            w,
            c,
            kh: k,
            kw: k,
            stride_h: stride,
            stride_w: stride,
            pad_top: pad,
            pad_left: pad,
            oh,
            ow,
        };
        let x = values(h * w * c, seed + 1);
        let (taps, bias) = (values(k * k * c, seed + 2), values(c, seed + 3));
        let (slopes_in, slopes_out) = (values(c, seed + 4), values(c, seed + 5));
        let partner = values(k * k * c, seed + 6);
        // Grouped by two channels too, where the count is even.
        let partners = [None, Some(&partner[..])];
        let partners = &partners[..if c.is_multiple_of(2) { 2 } else { 1 }];
        let prelus = [(None, None), (Some(&slopes_in[..]), Some(&slopes_out[..]))];
        for ((input_prelu, prelu), &partner_taps) in prelus
            .into_iter()
            .flat_map(|p| partners.iter().map(move |q| (p, q)))
        {
            let weights = depthwise::Weights {
                taps: &taps,
                partner_taps,
                bias: &bias,
                input_prelu,
                prelu,
            };
            // In every form this CPU runs (AVX-512 and AVX2 where it has both).
            for isa in direct::isas() {
                let mut y = vec![f32::NAN; oh * ow * c];
                depthwise::run_with(isa, &g, &weights, &x, &mut y);
                let diff = max_abs_diff(&y, &depthwise_reference(&g, &weights, &x));
                let paired = partner_taps.is_some();
                assert!(
                    diff < 1e-5,
                    "{isa:?} {h}x{w}x{c} k{k} s{stride} paired {paired}: off by {diff}"
                );
            }
        }
    }
}

#[test]
fn pointwise_op_matches_the_definition() {
    if skip_without_kernels() {
        return;
    }
    // (pixels, ci, co): tiles of 6 pixels by 16 channels, and every tail of both.
    let cases = [
        (3136, 64, 128),
        (49, 512, 128),
        (13, 17, 33),
        (7, 3, 5),
        (1, 1, 1),
        (6, 8, 16),
    ];
    for (seed, &(pixels, ci, co)) in cases.iter().enumerate() {
        let seed = seed as u64 * 10 + 100;
        let (x, w, bias) = (
            values(pixels * ci, seed),
            values(co * ci, seed + 1),
            values(co, seed + 2),
        );
        let op = pointwise::FusedPointwise::new(&w, &bias, pixels, &[pixels, co]).unwrap();
        let input = Tensor::from_shape(&[pixels, ci], &x).unwrap();
        let out = op
            .eval_out_of_plan(tvec!(input.into_tvalue()))
            .unwrap()
            .unwrap();
        let y = out[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(y.shape(), &[pixels, co]);
        let mut expected = vec![0f32; pixels * co];
        for p in 0..pixels {
            for o in 0..co {
                let dot: f32 = (0..ci).map(|i| x[p * ci + i] * w[o * ci + i]).sum();
                expected[p * co + o] = bias[o] + dot;
            }
        }
        let diff = max_abs_diff(y.as_slice().unwrap(), &expected);
        assert!(diff < 1e-4, "{pixels}x{ci}->{co}: off by {diff}");
    }
}

/// `y[n, oy, ox, o] = prelu(bias[o] + sum over ky, kx, i of x[n, iy, ix, i] w[o, i, ky, kx])`
/// with `iy = oy * stride - pad_top + ky` (and `ix` alike), zero outside the image.
fn direct_reference(
    g: &direct::Geometry,
    w: &[f32],
    bias: &[f32],
    slope: Option<&[f32]>,
    x: &[f32],
) -> Vec<f32> {
    let (oh, ow) = (g.oh(), g.ow());
    let mut y = vec![0f32; g.batch * oh * ow * g.co];
    for n in 0..g.batch {
        for oy in 0..oh {
            for ox in 0..ow {
                for o in 0..g.co {
                    let mut acc = bias[o];
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.stride[0] + ky) as isize - g.pad[0] as isize;
                            let ix = (ox * g.stride[1] + kx) as isize - g.pad[1] as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let (iy, ix) = (iy as usize, ix as usize);
                            for i in 0..g.ci {
                                let v = x[((n * g.h + iy) * g.w + ix) * g.ci + i];
                                acc += v * w[((o * g.ci + i) * g.kh + ky) * g.kw + kx];
                            }
                        }
                    }
                    if let Some(s) = slope {
                        acc = prelu(acc, s[o]);
                    }
                    y[((n * oh + oy) * ow + ox) * g.co + o] = acc;
                }
            }
        }
    }
    y
}

/// MTCNN's convolutions, a MobileFaceNet's first (strided, padded) and every tail, in every form
/// this CPU runs (AVX2, and AVX-512 where it has it): output rows off the 6- and 12-pixel tiles,
/// channel counts off the 16-channel panel and the 32-channel pair (10, 28, 5, 33, 48), one input
/// channel, kernels as large as the image, batches, strides and uneven padding.
#[test]
fn direct_convolution_matches_the_definition() {
    if skip_without_kernels() {
        return;
    }
    // (batch, h, w, ci, co, kh, kw, stride, padding top, left, bottom, right)
    let cases = [
        (1, 150, 150, 3, 10, 3, 3, [1, 1], [0; 4]),
        (3, 11, 11, 28, 48, 3, 3, [1, 1], [0; 4]),
        (2, 4, 4, 48, 64, 2, 2, [1, 1], [0; 4]),
        (1, 5, 9, 1, 5, 5, 1, [1, 1], [0; 4]),
        (2, 3, 3, 7, 33, 3, 3, [1, 1], [0; 4]),
        (1, 1, 13, 4, 16, 1, 2, [1, 1], [0; 4]),
        (1, 1, 25, 9, 80, 1, 1, [1, 1], [0; 4]),
        // w600k_mbf's first: 112x112x3, 3x3, stride 2, padded 1 on every side, 128 channels.
        (1, 112, 112, 3, 128, 3, 3, [2, 2], [1; 4]),
        (2, 9, 10, 5, 20, 3, 2, [2, 3], [1, 0, 2, 1]),
        (1, 2, 2, 3, 7, 3, 3, [1, 1], [1; 4]),
    ];
    for (case, &(batch, h, w, ci, co, kh, kw, stride, pad)) in cases.iter().enumerate() {
        let g = direct::Geometry {
            batch,
            h,
            w,
            ci,
            co,
            kh,
            kw,
            stride,
            pad,
        };
        let seed = case as u64 * 10 + 400;
        let x = values(batch * h * w * ci, seed);
        let weights = values(co * ci * kh * kw, seed + 1);
        let bias = values(co, seed + 2);
        let slope = values(co, seed + 3);
        let (panels, padded_bias) = direct::pack(&g, &weights, &bias);
        let mut padded_slope = vec![0f32; padded_bias.len()];
        padded_slope[..co].copy_from_slice(&slope);
        for (isa, with_prelu) in direct::isas().flat_map(|i| [(i, false), (i, true)]) {
            let packed = direct::Packed {
                panels: &panels,
                bias: &padded_bias,
                prelu: with_prelu.then_some(padded_slope.as_slice()),
            };
            let mut y = vec![f32::NAN; batch * g.oh() * g.ow() * co];
            direct::run_with(isa, &g, &packed, &x, &mut y);
            let expected = direct_reference(
                &g,
                &weights,
                &bias,
                with_prelu.then_some(slope.as_slice()),
                &x,
            );
            let diff = max_abs_diff(&y, &expected);
            assert!(
                diff < 1e-4,
                "{isa:?} {g:?} PRelu {with_prelu}: off by {diff}"
            );
        }
    }
}

/// Rows of 1, 2 and 5 values, some far apart (no overflow: the row's largest is subtracted),
/// against `exp(x) / sum exp(x)` in f64.
#[test]
fn softmax_matches_the_definition() {
    for row in [1usize, 2, 5] {
        let mut x = values(7 * row, row as u64 + 500);
        x[0] = 80.0;
        x[row] = -80.0;
        let expected: Vec<f32> = x
            .chunks_exact(row)
            .flat_map(|r| {
                let sum: f64 = r.iter().map(|&v| (v as f64).exp()).sum();
                r.iter().map(move |&v| ((v as f64).exp() / sum) as f32)
            })
            .collect();
        softmax::run(&mut x, row);
        let diff = max_abs_diff(&x, &expected);
        assert!(diff < 1e-6, "rows of {row}: off by {diff}");
    }
}

/// The compact search's scan against `sum over d of code * weight`, with the codes packed two to
/// a byte by the kernel's own layout and the weights at their extremes (-128, 127) so that any
/// saturation of its 16-bit sums would show: dimensions from one to past two blocks, with tails.
#[test]
fn nibble_dots_match_the_definition() {
    for (case, dims) in [1usize, 31, 64, 65, 100, 130, 512].into_iter().enumerate() {
        let rows = 9;
        let padded = nibble::padded(dims);
        let v = values(rows * dims + padded, case as u64 + 300);
        let codes: Vec<Vec<u8>> = (0..rows)
            .map(|r| {
                (0..dims)
                    .map(|d| ((v[r * dims + d] + 1.0) * 8.0).min(15.0) as u8)
                    .collect()
            })
            .collect();
        let mut weights: Vec<i8> = v[rows * dims..]
            .iter()
            .map(|x| (x * 128.0).clamp(-128.0, 127.0) as i8)
            .collect();
        weights[dims..].iter_mut().for_each(|w| *w = 0);
        // The worst case for a 16-bit pair sum: the largest codes times the largest weights.
        extreme_weights(&mut weights[..dims.min(8)]);
        let mut codes = codes;
        codes[0].iter_mut().for_each(|c| *c = 15);
        let mut packed = vec![0u8; rows * padded / 2];
        for (r, c) in codes.iter().enumerate() {
            nibble::pack(c, &mut packed[r * padded / 2..][..padded / 2]);
        }
        let mut out = vec![0i32; rows];
        nibble::dots(&packed, &weights, &mut out);
        for (r, c) in codes.iter().enumerate() {
            let expect: i32 = (0..dims)
                .map(|d| i32::from(c[d]) * i32::from(weights[d]))
                .sum();
            assert_eq!(out[r], expect, "{dims} dimensions, row {r}");
        }
    }
}

/// -128 and 127 in turn.
fn extreme_weights(weights: &mut [i8]) {
    for (i, w) in weights.iter_mut().enumerate() {
        *w = if i % 2 == 0 { -128 } else { 127 };
    }
}

/// tract's `QuantizeLinearU8` as its source writes it: round half to even, add the zero point,
/// saturate to u8.
fn quantize_reference(q: &Quantization, x: f32) -> u8 {
    ((x * q.inverse_scale).round_ties_even() as i32 + i32::from(q.zero_point)).clamp(0, 255) as u8
}

/// A quantization of floats in about [-2.6, 6.2]: an odd zero point, a step that is not a power
/// of two.
const ACTIVATIONS: Quantization = Quantization {
    inverse_scale: 1.0 / 0.0345,
    scale: 0.0345,
    zero_point: 75,
};

/// Floats the quantization must round exactly: ties between two levels on both sides of the zero
/// point, values past both saturation points, zeros, and ordinary values.
fn quantization_inputs(n: usize, seed: u64) -> Vec<f32> {
    let q = ACTIVATIONS;
    values(n, seed)
        .iter()
        .enumerate()
        .map(|(i, &v)| match i % 7 {
            // k + 0.5 steps: ties (within the float's rounding of the multiplication).
            0 => ((v * 40.0).round() + 0.5) / q.inverse_scale,
            1 => v * 50.0,
            2 => 0.0,
            3 => -0.0,
            _ => v * 4.0 + 1.5,
        })
        .collect()
}

#[test]
fn int8_input_quantization_matches_tracts_definition() {
    // Every form's values, in vectors where this CPU runs the form and in plain Rust elsewhere.
    for isa in quantized::Isa::ALL {
        for &(pixels, ci) in &[(1, 1), (3, 5), (7, 16), (5, 17), (2, 64), (9, 130)] {
            let shape = Shape { pixels, ci, co: 1 };
            let x = quantization_inputs(pixels * ci, (pixels * 1000 + ci) as u64);
            let width = isa.input_bytes();
            let mut out = vec![0xAB; pixels * shape.ci_padded() * width];
            quantized::quantize_input(isa, &shape, &ACTIVATIONS, &x, &mut out);
            for p in 0..pixels {
                for i in 0..shape.ci_padded() {
                    let at = (p * shape.ci_padded() + i) * width;
                    // sdot reads the bytes offset by 128; AVX2 reads little-endian i16.
                    let got = match isa {
                        quantized::Isa::Avx512Vnni => i32::from(out[at]),
                        quantized::Isa::NeonDot => i32::from(out[at] ^ 0x80),
                        quantized::Isa::Avx2 => {
                            i32::from(i16::from_le_bytes([out[at], out[at + 1]]))
                        }
                    };
                    let want = if i < ci {
                        i32::from(quantize_reference(&ACTIVATIONS, x[p * ci + i]))
                    } else {
                        0
                    };
                    assert_eq!(got, want, "{isa:?} {pixels}x{ci}, pixel {p} channel {i}");
                }
            }
        }
    }
    // A NaN quantizes to the zero point (tract: the NaN rounds to an integer 0).
    assert_eq!(ACTIVATIONS.quantize(f32::NAN), 75);
    assert_eq!(ACTIVATIONS.quantize(f32::INFINITY), 255);
    assert_eq!(ACTIVATIONS.quantize(f32::NEG_INFINITY), 0);
}

#[test]
fn fake_quantization_matches_quantize_then_dequantize() {
    // Lengths with every tail of the 8- and 16-float steps.
    for n in [1, 7, 8, 15, 16, 17, 100, 1003] {
        let mut x = quantization_inputs(n, n as u64);
        x[n / 2] = f32::NAN;
        let mut y = vec![0f32; n];
        quantized::fake_quantize(&ACTIVATIONS, &x, &mut y);
        for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
            let level = if a.is_nan() {
                0
            } else {
                i32::from(quantize_reference(&ACTIVATIONS, a)) - 75
            };
            assert_eq!(
                b,
                level as f32 * ACTIVATIONS.scale,
                "{n} floats, float {i} = {a}"
            );
        }
    }
}

/// Deterministic int8 weights over the whole range, -127 and 127 among them.
fn int8_weights(co: usize, ci: usize, seed: u64) -> QuantizedWeights {
    let v = values(co * ci, seed);
    let values = v
        .iter()
        .enumerate()
        .map(|(i, &f)| match i % 11 {
            0 => 127,
            1 => -127,
            _ => (f * 127.0).round() as i8,
        })
        .collect();
    let scales = values_abs(co, seed + 7)
        .iter()
        .map(|s| 0.002 + s * 0.01)
        .collect();
    QuantizedWeights { values, scales }
}

fn values_abs(n: usize, seed: u64) -> Vec<f32> {
    values(n, seed).iter().map(|v| v.abs()).collect()
}

#[test]
fn int8_pointwise_matches_the_definition() {
    // Every form this CPU runs (a VNNI CPU runs the AVX2 one too).
    let isas: Vec<_> = quantized::Isa::ALL
        .into_iter()
        .filter(|isa| isa.runs_here())
        .collect();
    if isas.is_empty() {
        eprintln!(
            "skipped: this CPU has neither AVX2 nor the Arm dot product, so int8 models' \
             convolutions run in float here"
        );
    }
    for isa in isas {
        int8_pointwise_form_matches_the_definition(isa);
    }
}

fn int8_pointwise_form_matches_the_definition(isa: quantized::Isa) {
    let q = ACTIVATIONS;
    // (pixels, ci, co): the 12-pixel tiles and 32-channel pairs (6 and 16 on Arm and in AVX2)
    // and every tail, input channels off the 4-byte groups, MobileFaceNet's shapes.
    let cases = [
        (1, 1, 1),
        (11, 9, 24),
        (3, 130, 17),
        (8, 2, 16),
        (13, 17, 33),
        (12, 4, 16),
        (25, 64, 48),
        (7, 3, 5),
        (196, 128, 256),
        (49, 512, 128),
        (1, 512, 512),
    ];
    for (seed, &(pixels, ci, co)) in cases.iter().enumerate() {
        for (prelu, output) in [(false, false), (true, false), (true, true), (false, true)] {
            let seed = seed as u64 * 10 + 500;
            let shape = Shape { pixels, ci, co };
            let x = quantization_inputs(pixels * ci, seed);
            let w = int8_weights(co, ci, seed + 1);
            let bias = values(co, seed + 2);
            let slopes: Vec<f32> = values(co, seed + 3).iter().map(|s| s * 0.5 - 0.8).collect();
            let packed = quantized::pack(isa, &shape, &w, &q, &bias, prelu.then_some(&slopes[..]));
            let mut xq = vec![0u8; pixels * shape.ci_padded() * isa.input_bytes()];
            quantized::quantize_input(isa, &shape, &q, &x, &mut xq);
            let mut y = vec![f32::NAN; pixels * co];
            quantized::run(isa, &shape, &packed, &xq, output.then_some(&q), &mut y);
            for p in 0..pixels {
                for o in 0..co {
                    // The definition, in exact integers and f64.
                    let sum: i64 = (0..ci)
                        .map(|i| {
                            let xq = i64::from(quantize_reference(&q, x[p * ci + i]));
                            i64::from(w.values[o * ci + i]) * (xq - 75)
                        })
                        .sum();
                    let mut want = f64::from(bias[o])
                        + f64::from(q.scale) * f64::from(w.scales[o]) * sum as f64;
                    if prelu && want < 0.0 {
                        want *= 1.0 + f64::from(slopes[o]);
                    }
                    let got = f64::from(y[p * co + o]);
                    let case = format!(
                        "{isa:?} {pixels}x{ci}->{co} prelu {prelu} quantized {output}: pixel {p} channel {o}"
                    );
                    if !output {
                        let tolerance = 1e-5 * (want.abs() + 1.0);
                        assert!(
                            (got - want).abs() <= tolerance,
                            "{case}: {got} against {want}"
                        );
                        continue;
                    }
                    // Quantized: the level of `want`, or where `want` lies within float rounding
                    // of a tie between two levels, either of them.
                    let t = want * f64::from(q.inverse_scale);
                    let levels: Vec<f64> = if (t - t.floor() - 0.5).abs() < 1e-3 {
                        vec![t.floor(), t.ceil()]
                    } else {
                        vec![t.round()]
                    };
                    let ok = levels.iter().any(|l| {
                        let l = l.clamp(-75.0, 180.0);
                        (got - l * f64::from(q.scale)).abs() <= 1e-6
                    });
                    assert!(ok, "{case}: {got}, want a level of {want}");
                }
            }
        }
    }
}

#[test]
fn int8_weights_are_found_by_their_dequantized_floats() {
    let mut found = quantized::Int8Weights::default();
    let (a, b) = (int8_weights(16, 8, 1), int8_weights(16, 8, 2));
    found.insert(a.clone());
    found.insert(b.clone());
    assert_eq!(found.len(), 2);
    assert_eq!(found.find(&a.dequantized()), Some(&a));
    assert_eq!(found.find(&b.dequantized()), Some(&b));
    // One float off by one unit in the last place is another model's weights.
    let mut near = a.dequantized();
    near[5] = f32::from_bits(near[5].to_bits() + 1);
    assert_eq!(found.find(&near), None);
    // The float of weight (o, i) is w[o, i] * scale[o].
    assert_eq!(
        a.dequantized()[8 * 3 + 2],
        f32::from(a.values[8 * 3 + 2]) * a.scales[3]
    );
}
