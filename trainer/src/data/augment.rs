//! The training augmentation of the Smooth-AP paper: a random crop and a horizontal flip.
//!
//! The crop is pad-and-crop: the crop is shifted by up to `pad` pixels each way and the
//! uncovered border is black, at the original scale. Crop-and-resize would also rescale the
//! face, which the device's alignment never does (every gallery face is at the template's
//! scale), so a shift is the variation the model actually meets: small alignment errors.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smoothface_shared::preprocess::flip_horizontal;

/// A seeded augmenter of interleaved RGB crops of one size.
#[derive(Debug, Clone)]
pub struct Augment {
    size: usize,
    pad: usize,
    flip_probability: f64,
    rng: ChaCha8Rng,
}

impl Augment {
    /// Crops of `size` x `size` shifted by up to `pad` pixels and mirrored with probability
    /// `flip_probability` (0.5 in the paper), drawn from a generator seeded with `seed`.
    pub fn new(size: usize, pad: usize, flip_probability: f64, seed: u64) -> Self {
        Augment {
            size,
            pad,
            flip_probability: flip_probability.clamp(0.0, 1.0),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// One augmented copy of `crop` (`size * size * 3` bytes), the same size.
    pub fn apply(&mut self, crop: &[u8]) -> Vec<u8> {
        let s = self.size;
        assert_eq!(crop.len(), s * s * 3, "crop size");
        let (dx, dy, flip) = self.draw();
        let shifted = shift(crop, s, dx, dy);
        if flip {
            flip_horizontal(&shifted, s)
        } else {
            shifted
        }
    }
}

impl Augment {
    /// Advances the generator past one face, exactly as [`Augment::apply`] would: the next
    /// face is then augmented as if this one had been (for a face that could not be read, and
    /// for the faces of a batch before this process's share of it).
    pub fn skip(&mut self) {
        self.draw();
    }

    /// The shift and flip of the next face.
    fn draw(&mut self) -> (isize, isize, bool) {
        let dx = self.rng.gen_range(0..=2 * self.pad) as isize - self.pad as isize;
        let dy = self.rng.gen_range(0..=2 * self.pad) as isize - self.pad as isize;
        let flip = self.rng.gen_bool(self.flip_probability);
        (dx, dy, flip)
    }
}

/// `crop` moved so that output pixel `(x, y)` is input pixel `(x + dx, y + dy)`; black where
/// that falls outside. This is the window at offset `(pad + dx, pad + dy)` of the crop padded
/// by `pad` pixels on every side.
fn shift(crop: &[u8], s: usize, dx: isize, dy: isize) -> Vec<u8> {
    let mut out = vec![0u8; crop.len()];
    for y in 0..s {
        let sy = y as isize + dy;
        if sy < 0 || sy >= s as isize {
            continue;
        }
        for x in 0..s {
            let sx = x as isize + dx;
            if sx < 0 || sx >= s as isize {
                continue;
            }
            let (d, from) = ((y * s + x) * 3, (sy as usize * s + sx as usize) * 3);
            out[d..d + 3].copy_from_slice(&crop[from..from + 3]);
        }
    }
    out
}
