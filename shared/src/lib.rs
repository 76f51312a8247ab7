//! The contract between the Smoothface trainer and device: face alignment to the ArcFace
//! template, preprocessing, embedding math, retrieval and verification metrics, clustering quality
//! metrics, protocol readers and model metadata. Light dependencies only: no tract, no libtorch.

pub mod align;
pub mod atomic;
pub mod clustering;
pub mod embedding;
pub mod manifest;
pub mod metrics;
pub mod preprocess;
pub mod protocol;
