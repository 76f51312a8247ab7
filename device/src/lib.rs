//! Smoothface on the device: find every face of a photo library with MTCNN or SCRFD, embed it with an
//! ArcFace model in tract, keep the gallery in SQLite and rank it by identity.
//!
//! One module per job; the `smoothface` binary is a thin command line over them:
//! [`media`] decodes photos, [`video`] videos (feature `video`), [`frames`] gives any source's
//! frames in order ([`source`] opens the one a user names), [`tracks`] links a recording's faces
//! into tracks, [`camera`] captures (feature `camera`), [`watch`] enrols and recognises people live, [`detector`] detects faces
//! with [`mtcnn`] or [`scrfd`], [`embedder`] embeds them (on [`onnx`]'s
//! load-time graph rewrites and the device's [`kernels`]), [`pipeline`] chains the three,
//! [`gallery`] stores, indexes and searches, [`people`] groups faces into people and keeps the
//! user's corrections, [`eval`] measures accuracy, [`bench`](mod@bench) speed,
//! [`align`] writes training crops, [`models`] finds and installs the models, [`progress`] draws
//! the progress bars, [`serve`] is the local web service and app, [`thumbs`] makes and caches
//! their thumbnails and face crops.
//!
//! Where to start reading: [`pipeline`] (one photo: decode, detect, align, embed), then
//! [`gallery::index`] (a library into the gallery) and [`gallery::search`] (the gallery ranked by
//! a face). `docs/design.md` follows a photo from disk to a ranked result through these modules.

pub mod align;
pub mod bench;
#[cfg(all(feature = "camera", target_os = "linux"))]
pub mod camera;
pub mod detector;
pub mod embedder;
pub mod eval;
pub mod frames;
pub mod gallery;
pub mod kernels;
pub mod media;
pub mod models;
pub mod mtcnn;
pub mod onnx;
pub mod people;
pub mod pipeline;
pub mod progress;
pub mod scrfd;
pub mod serve;
pub mod source;
pub mod thumbs;
pub mod tracks;
#[cfg(feature = "video")]
pub mod video;
pub mod watch;
