//! Smoothface on the device: find every face of a photo library with MTCNN, embed it with an
//! ArcFace model in tract, keep the gallery in SQLite and rank it by identity.
//!
//! The `smoothface` binary is a thin command line over these modules.

pub mod align_cmd;
pub mod bench;
pub mod embedder;
pub mod eval;
pub mod gallery;
pub mod image_io;
pub mod kernels;
pub mod models;
pub mod mtcnn;
pub mod onnx;
pub mod pipeline;
pub mod progress;
