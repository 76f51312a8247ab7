//! The contract between the Smoothface trainer and device: face alignment to the ArcFace
//! template, preprocessing, embedding math, retrieval and verification metrics, clustering quality
//! metrics, protocol readers (LFW, folder-per-person), the IJB-B/C evaluation both binaries run,
//! model metadata, and (feature `plot`) what their PNG plots share. Light dependencies only: no
//! tract, no libtorch.
//!
//! Everything here is what both binaries must compute identically, so that a model sees the same
//! input in training and in the gallery and both report the same numbers. Where to start reading:
//! [`align`] and [`preprocess`] (a face into model input), [`metrics`] (the retrieval and
//! verification numbers), [`manifest`] (a model folder), [`ijb`] (the IJB-B/C evaluation).

pub mod align;
pub mod atomic;
pub mod clustering;
pub mod embedding;
pub mod ijb;
pub mod manifest;
pub mod metrics;
#[cfg(feature = "plot")]
pub mod plot;
pub mod preprocess;
pub mod protocol;
