//! The Smoothface trainer: the losses that teach an embedder to rank photos of the same person
//! first, on libtorch through `tch`. The `smoothface-train` binary is its command line.
//!
//! [`loss`] holds Smooth-AP and the baselines, [`backbone`] the networks, [`import`] fills them
//! from a pretrained ONNX model, [`data`] reads and batches aligned faces, [`fit`] trains (with
//! [`optim`]'s Adam, [`precision`]'s mixed precision and [`checkpoint`]'s files) as [`config`]
//! says, [`export`] writes the ONNX model folder the device runs and quantizes it to int8
//! ([`backbone::onnx`] is the ONNX they write), [`eval`] runs the IJB evaluation on a checkpoint,
//! [`bench`](mod@bench) times the loss and the training step beside the authors' form and PyTorch, and
//! [`npy`] reads numpy arrays for the `loss` command.
//!
//! Where to start reading: [`fit`] (a run: batches, the step, validation, checkpoints), then
//! [`loss::SmoothAp`]. `docs/training.md` is the user's side; `docs/design.md` follows a batch
//! from disk to a checkpoint through these modules.

pub mod backbone;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod eval;
pub mod export;
pub mod fit;
pub mod import;
pub mod loss;
pub mod npy;
pub mod optim;
pub mod precision;

/// The choice among `all` whose `name` is `s`, for the `FromStr` of the library's enums (the
/// command line parses its flags with them); the error lists every accepted name.
pub(crate) fn parse_choice<T: Copy>(
    s: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
    what: &str,
) -> Result<T, String> {
    all.iter().copied().find(|&c| name(c) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&c| name(c)).collect();
        format!(
            "unknown {what} '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}
