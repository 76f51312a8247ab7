//! The Smoothface trainer: the losses that teach an embedder to rank photos of the same person
//! first, on libtorch through `tch`. The `smoothface-train` binary is its command line.

pub mod backbone;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod fit;
pub mod import;
pub mod loss;
pub mod npy;
pub mod onnx_graph;
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
