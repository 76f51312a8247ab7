//! Training data: face crops from a folder per identity or from insightface's RecordIO packs,
//! the P-samples-per-class batch sampler Smooth-AP trains with, and its augmentation.
//!
//! Crops travel as interleaved RGB bytes (`size * size * 3`) until [`crops_to_tensor`] turns a
//! batch into model input with the same preprocessing the device applies in the gallery.

pub mod augment;
pub mod folder;
pub mod loader;
pub mod recordio;
pub mod sampler;

use anyhow::{anyhow, ensure, Result};
use smoothface_shared::manifest::{InputSpec, Layout};
use smoothface_shared::preprocess::face_tensor;
use tch::Tensor;

/// Decodes an encoded image (PNG or JPEG) into an interleaved RGB crop of `size` x `size`;
/// `name` (a path, a record number) appears in every error so a bad file can be found.
pub fn decode_crop(bytes: &[u8], size: usize, name: &str) -> Result<Vec<u8>> {
    let image = image::load_from_memory(bytes)
        .map_err(|e| anyhow!("{name}: not a readable PNG or JPEG image: {e}"))?
        .to_rgb8();
    let (w, h) = image.dimensions();
    ensure!(
        w as usize == size && h as usize == size,
        "{name}: {w}x{h} image, expected an aligned {size}x{size} crop"
    );
    Ok(image.into_raw())
}

/// Stacks crops into one f32 tensor, `[N, 3, size, size]` for an NCHW `spec` (`[N, size, size,
/// 3]` for NHWC), normalised by `spec` through the device's own [`face_tensor`].
pub fn crops_to_tensor(crops: &[impl AsRef<[u8]>], spec: &InputSpec) -> Tensor {
    let per = 3 * spec.size * spec.size;
    let mut data = vec![0f32; crops.len() * per];
    for (crop, out) in crops.iter().zip(data.chunks_exact_mut(per)) {
        face_tensor(crop.as_ref(), spec, out);
    }
    let (n, s) = (crops.len() as i64, spec.size as i64);
    let shape = match spec.layout {
        Layout::Nchw => [n, 3, s, s],
        Layout::Nhwc => [n, s, s, 3],
    };
    Tensor::from_slice(&data).reshape(shape)
}
