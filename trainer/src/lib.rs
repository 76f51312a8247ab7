//! The Smoothface trainer: the losses that teach an embedder to rank photos of the same person
//! first, on libtorch through `tch`. The `smoothface-train` binary is its command line.

pub mod backbone;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod export;
pub mod fit;
pub mod import;
pub mod loss;
pub mod npy;
pub mod optim;
