//! The PRelu a fusing kernel takes into its own output pass: found in the graph after a
//! convolution (the direct, depthwise and int8 kernels all look for it).

use std::sync::Arc;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::math::{Add, Min, Mul};

/// The PRelu `Add(y, Mul(Min(y, 0), s))` fed by `y` alone, with a per-channel (or single) constant
/// `s` over `c` channels last: `s` as `[c]`, and the Add's outlet.
pub fn following_prelu(
    model: &TypedModel,
    y: OutletId,
    c: usize,
) -> TractResult<Option<(Arc<Tensor>, OutletId)>> {
    let sole_successor = |outlet: OutletId| -> Option<&TypedNode> {
        match model.outlet_successors(outlet) {
            [one] => Some(model.node(one.node)),
            _ => None,
        }
    };
    let other_input = |node: &TypedNode, this: OutletId| -> Option<OutletId> {
        match node.inputs.as_slice() {
            [a, b] if *a == this => Some(*b),
            [a, b] if *b == this => Some(*a),
            _ => None,
        }
    };
    let is_bin = |node: &TypedNode, check: fn(&TypedBinOp) -> bool| {
        node.op_as::<TypedBinOp>().is_some_and(check)
    };
    let successors = model.outlet_successors(y);
    let [first, second] = successors else {
        return Ok(None);
    };
    let (min, add) = match (model.node(first.node), model.node(second.node)) {
        (a, b) if is_bin(a, |op| op.0.is::<Min>()) => (a, b),
        (a, b) => (b, a),
    };
    if !is_bin(min, |op| op.0.is::<Min>()) || !is_bin(add, |op| op.0.is::<Add>()) {
        return Ok(None);
    }
    let zero = other_input(min, y).and_then(|o| model.outlet_fact(o).ok()?.konst.clone());
    let zero_ok =
        zero.is_some_and(|z| z.len() == 1 && z.cast_to_scalar::<f32>().is_ok_and(|v| v == 0.0));
    let min_out = OutletId::new(min.id, 0);
    let Some(mul) = sole_successor(min_out).filter(|n| is_bin(n, |op| op.0.is::<Mul>())) else {
        return Ok(None);
    };
    let mul_out = OutletId::new(mul.id, 0);
    let slope = other_input(mul, min_out).and_then(|o| model.outlet_fact(o).ok()?.konst.clone());
    let Some(slope) = slope else {
        return Ok(None);
    };
    // The slope broadcasts over the channels (last) axis only.
    let per_channel = slope.shape().last() == Some(&c) && slope.len() == c;
    let add_takes = other_input(add, mul_out) == Some(y);
    if !zero_ok || !(per_channel || slope.len() == 1) || !add_takes {
        return Ok(None);
    }
    let slope = slope.cast_to::<f32>()?;
    let slope: Vec<f32> = if per_channel {
        super::floats(&slope)?.to_vec()
    } else {
        vec![slope.cast_to_scalar::<f32>()?; c]
    };
    let slope = Tensor::from(tract_ndarray::Array1::from(slope)).into_arc_tensor();
    Ok(Some((slope, OutletId::new(add.id, 0))))
}
