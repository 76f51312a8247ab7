//! Offline IJB-B and IJB-C evaluation, computed as insightface computes it, so that a model's
//! numbers here equal its numbers from insightface's scripts on the same data: the metadata
//! readers ([`meta`]), face features with the flip test and an on-disk cache ([`features`]),
//! template pooling ([`pool`]), the protocols' figures ([`scores`]) and the report that joins
//! them ([`report`]). The device (tract) and the trainer (libtorch) each bring only their
//! embedder.

#[cfg(feature = "cli")]
pub mod cli;
pub mod features;
pub mod meta;
#[cfg(feature = "plot")]
pub mod plot;
pub mod pool;
pub mod report;
pub mod scores;

pub use features::{embed_faces, FaceEmbedder, FaceFeatures};
pub use meta::IjbSet;
pub use pool::PoolOptions;
pub use report::{evaluate, run, write_roc, EvalOptions, IjbReport, Protocol};
