//! Preprocessing of aligned face crops into model input: one definition shared by the trainer
//! and the device, so a model sees the same numbers in training and in the gallery.

use crate::manifest::{Channels, InputSpec, Layout};

/// Writes one aligned RGB crop (`size * size * 3` bytes, row-major, interleaved) into `out`
/// (`3 * size * size` floats) in the layout, channel order and normalisation that `spec` asks.
pub fn face_tensor(crop_rgb: &[u8], spec: &InputSpec, out: &mut [f32]) {
    let plane = spec.size * spec.size;
    assert_eq!(crop_rgb.len(), plane * 3, "crop size");
    assert_eq!(out.len(), plane * 3, "tensor size");
    let scale = 1.0 / spec.std;
    for (p, px) in crop_rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let src = match spec.channels {
                Channels::Rgb => c,
                Channels::Bgr => 2 - c,
            };
            let v = (px[src] as f32 - spec.mean) * scale;
            match spec.layout {
                Layout::Nchw => out[c * plane + p] = v,
                Layout::Nhwc => out[p * 3 + c] = v,
            }
        }
    }
}

/// Mirrors an interleaved RGB crop left to right (test-time and training-time flip).
pub fn flip_horizontal(crop_rgb: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; crop_rgb.len()];
    for y in 0..size {
        for x in 0..size {
            let (s, d) = ((y * size + x) * 3, (y * size + size - 1 - x) * 3);
            out[d..d + 3].copy_from_slice(&crop_rgb[s..s + 3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layout: Layout, channels: Channels) -> InputSpec {
        InputSpec {
            layout,
            size: 2,
            channels,
            mean: 127.0,
            std: 128.0,
        }
    }

    // A 2x2 crop: pixels (r,g,b) = (255,127,0), (0,0,0), (127,127,127), (255,255,255).
    const CROP: [u8; 12] = [255, 127, 0, 0, 0, 0, 127, 127, 127, 255, 255, 255];

    #[test]
    fn nchw_rgb_by_hand() {
        let mut out = [0.0; 12];
        face_tensor(&CROP, &spec(Layout::Nchw, Channels::Rgb), &mut out);
        // (255-127)/128 = 1, (0-127)/128 = -0.9921875, (127-127)/128 = 0.
        let r = [1.0, -0.9921875, 0.0, 1.0];
        let g = [0.0, -0.9921875, 0.0, 1.0];
        let b = [-0.9921875, -0.9921875, 0.0, 1.0];
        assert_eq!(out[..4], r);
        assert_eq!(out[4..8], g);
        assert_eq!(out[8..], b);
    }

    #[test]
    fn nhwc_bgr_swaps_channels_and_interleaves() {
        let mut out = [0.0; 12];
        face_tensor(&CROP, &spec(Layout::Nhwc, Channels::Bgr), &mut out);
        assert_eq!(out[..3], [-0.9921875, 0.0, 1.0]);
        assert_eq!(out[9..], [1.0, 1.0, 1.0]);
    }

    #[test]
    fn flip_mirrors_each_row() {
        let flipped = flip_horizontal(&CROP, 2);
        assert_eq!(
            flipped,
            [0, 0, 0, 255, 127, 0, 255, 255, 255, 127, 127, 127]
        );
        assert_eq!(flip_horizontal(&flipped, 2), CROP);
    }
}
