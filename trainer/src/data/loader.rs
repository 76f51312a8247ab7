//! The training batches of an epoch, decoded, augmented and turned into model input on worker
//! threads while the step runs (a step takes seconds on a CPU, milliseconds on a GPU, and the
//! GPU must never wait for a JPEG decoder).
//!
//! Worker `w` of `W` makes batches `w, w + W, w + 2W, ...`, each into its own bounded queue, and
//! the consumer takes them round-robin: batches arrive in order, however many workers there
//! are. Each batch's augmentation is drawn from a generator seeded by the epoch's seed and the
//! batch's position, so an epoch's batches are the same whatever the number of workers and
//! whichever batch a resumed run starts from. For a GPU the input is copied into pinned
//! (page-locked) host memory on the worker, so that the copy to the device can be asynchronous.

use super::augment::Augment;
use super::crops_to_tensor;
use super::folder::FaceFolder;
use super::recordio::RecordIo;
use anyhow::Result;
use smoothface_shared::manifest::InputSpec;
use std::ops::ControlFlow;
use std::sync::mpsc;
use tch::{Device, Tensor};

/// Batches each worker keeps ready ahead of the consumer.
const QUEUE_DEPTH: usize = 2;

/// The training faces: a folder per person or a RecordIO pack.
pub enum TrainingSet {
    /// Aligned crops, a folder per person.
    Folder(FaceFolder),
    /// An insightface RecordIO pack and the label of each of its images.
    Pack(RecordIo, Vec<i64>),
}

impl TrainingSet {
    /// The label of every face, in order.
    pub fn labels(&self) -> &[i64] {
        match self {
            TrainingSet::Folder(f) => &f.labels,
            TrainingSet::Pack(_, labels) => labels,
        }
    }

    /// Face `i` as an interleaved RGB crop of `size` x `size`.
    pub fn crop(&self, i: usize, size: usize) -> Result<Vec<u8>> {
        match self {
            TrainingSet::Folder(f) => f.crop(i, size),
            TrainingSet::Pack(p, _) => Ok(p.crop(i, size)?.1),
        }
    }
}

/// How batches are made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderSettings {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// Largest random shift of a crop, pixels.
    pub shift: usize,
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// The step's device: the input is pinned for a CUDA one.
    pub device: Device,
    /// This process's share of every batch, for data-parallel training: `(rank, world)` takes
    /// faces `len · rank / world .. len · (rank + 1) / world` of each batch (all of it for
    /// `(0, 1)`), each augmented as it is in the whole batch.
    pub share: (usize, usize),
}

/// The faces of a batch of `len` that share `(rank, world)` takes (see [`LoaderSettings::share`]).
pub fn share_range(len: usize, (rank, world): (usize, usize)) -> std::ops::Range<usize> {
    let world = world.max(1);
    len * rank / world..len * (rank + 1) / world
}

/// One batch, ready for the step.
pub struct Batch {
    /// Model input, `[N, 3, size, size]` float32 on the host (pinned for a CUDA device).
    pub input: Tensor,
    /// The faces' labels, `[N]`.
    pub labels: Tensor,
    /// Faces in the batch (those that could not be read are left out, with a warning).
    pub images: usize,
}

/// The seed of the augmentation of batch `index` of an epoch whose seed is `epoch_seed`.
fn batch_seed(epoch_seed: u64, index: usize) -> u64 {
    epoch_seed ^ (index as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Decodes and augments the faces `indices[take]` of `set` into a batch, each augmented as it is
/// in the whole of `indices` (the generator advances past the faces before `take`); a face that
/// cannot be read is reported on stderr and left out, and takes its draw of the generator all
/// the same, so that the faces after it are augmented as they would be without it.
fn make_batch(
    set: &TrainingSet,
    indices: &[usize],
    take: std::ops::Range<usize>,
    spec: &InputSpec,
    augment: &mut Augment,
    device: Device,
) -> Batch {
    let (mut crops, mut labels) = (Vec::new(), Vec::new());
    for _ in 0..take.start {
        augment.skip();
    }
    for &i in &indices[take] {
        match set.crop(i, spec.size) {
            Ok(crop) => {
                crops.push(augment.apply(&crop));
                labels.push(set.labels()[i]);
            }
            Err(e) => {
                augment.skip();
                eprintln!("smoothface-train: warning: training face left out: {e:#}")
            }
        }
    }
    let input = crops_to_tensor(&crops, spec);
    Batch {
        input: match device {
            Device::Cuda(_) => input.pin_memory(device),
            _ => input,
        },
        labels: Tensor::from_slice(&labels),
        images: crops.len(),
    }
}

/// Makes `batches` (face indices of `set`) on `settings.workers` threads and hands them to
/// `consume` in order, until the last one or until `consume` breaks; returns what it broke with.
pub fn load_epoch<B>(
    set: &TrainingSet,
    spec: &InputSpec,
    batches: &[Vec<usize>],
    epoch_seed: u64,
    settings: &LoaderSettings,
    mut consume: impl FnMut(Batch) -> ControlFlow<B>,
) -> Option<B> {
    let workers = settings.workers.clamp(1, batches.len().max(1));
    std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(workers);
        for w in 0..workers {
            let (send, receive) = mpsc::sync_channel(QUEUE_DEPTH);
            queues.push(receive);
            scope.spawn(move || {
                for index in (w..batches.len()).step_by(workers) {
                    let mut augment = Augment::new(
                        spec.size,
                        settings.shift,
                        settings.flip,
                        batch_seed(epoch_seed, index),
                    );
                    let take = share_range(batches[index].len(), settings.share);
                    let batch = make_batch(
                        set,
                        &batches[index],
                        take,
                        spec,
                        &mut augment,
                        settings.device,
                    );
                    // The consumer hung up (it broke early): stop.
                    if send.send(batch).is_err() {
                        return;
                    }
                }
            });
        }
        for index in 0..batches.len() {
            let batch = queues[index % workers]
                .recv()
                .expect("a worker sends every batch of its share unless the consumer hung up");
            if let ControlFlow::Break(b) = consume(batch) {
                // Dropping the queues ends the workers at their next send.
                drop(queues);
                return Some(b);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoothface_shared::manifest::{Channels, Layout};

    /// A folder of `people` x `photos` distinct, random 8x8 PNG crops.
    fn folder(people: usize, photos: usize) -> (tempfile::TempDir, FaceFolder) {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = smoothface_tests::Rng::new(7);
        for p in 0..people {
            let person = dir.path().join(format!("p{p}"));
            std::fs::create_dir(&person).unwrap();
            for k in 0..photos {
                let pixels: Vec<u8> = (0..8 * 8 * 3).map(|_| rng.below(256) as u8).collect();
                image::RgbImage::from_raw(8, 8, pixels)
                    .unwrap()
                    .save(person.join(format!("{k}.png")))
                    .unwrap();
            }
        }
        let f = FaceFolder::open(dir.path(), 1).unwrap();
        (dir, f)
    }

    fn spec() -> InputSpec {
        InputSpec {
            layout: Layout::Nchw,
            size: 8,
            channels: Channels::Rgb,
            mean: 127.5,
            std: 127.5,
        }
    }

    /// Every batch, in order, as (input values, labels).
    fn all(set: &TrainingSet, batches: &[Vec<usize>], workers: usize) -> Vec<(Vec<f32>, Vec<i64>)> {
        let settings = LoaderSettings {
            workers,
            shift: 2,
            flip: 0.5,
            device: Device::Cpu,
            share: (0, 1),
        };
        let mut out = Vec::new();
        load_epoch(set, &spec(), batches, 11, &settings, |b| {
            let input: Vec<f32> = b.input.flatten(0, -1).try_into().unwrap();
            out.push((input, b.labels.try_into().unwrap()));
            ControlFlow::<()>::Continue(())
        });
        out
    }

    /// The single-threaded reference, from the definition: batch `k` augmented by a generator
    /// seeded with the batch seed, faces in order.
    fn reference(set: &TrainingSet, batches: &[Vec<usize>]) -> Vec<(Vec<f32>, Vec<i64>)> {
        batches
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let mut augment = Augment::new(8, 2, 0.5, batch_seed(11, k));
                let crops: Vec<Vec<u8>> = b
                    .iter()
                    .map(|&i| augment.apply(&set.crop(i, 8).unwrap()))
                    .collect();
                let input = crops_to_tensor(&crops, &spec()).flatten(0, -1);
                let labels = b.iter().map(|&i| set.labels()[i]).collect();
                (input.try_into().unwrap(), labels)
            })
            .collect()
    }

    #[test]
    fn batches_arrive_in_order_and_equal_whatever_the_workers() {
        let (_dir, f) = folder(6, 3);
        let set = TrainingSet::Folder(f);
        let batches: Vec<Vec<usize>> = (0..7)
            .map(|k| vec![k, (k + 5) % 18, (3 * k) % 18])
            .collect();
        let expected = reference(&set, &batches);
        for workers in [1, 2, 3, 8] {
            assert!(
                all(&set, &batches, workers) == expected,
                "{workers} workers"
            );
        }
        // Distinct batches get distinct augmentations: the same faces twice differ.
        let twice = vec![vec![0, 1, 2], vec![0, 1, 2]];
        let got = all(&set, &twice, 2);
        assert_ne!(got[0].0, got[1].0);
    }

    /// Each process's share of the batches, concatenated in rank order, is the whole batch,
    /// pixel for pixel: a face's augmentation depends on its place in the batch, not on how the
    /// batch is shared.
    #[test]
    fn the_shares_of_a_batch_make_up_the_whole_batch() {
        let (_dir, f) = folder(6, 3);
        let set = TrainingSet::Folder(f);
        let batches: Vec<Vec<usize>> = (0..4).map(|k| (k..k + 12).collect()).collect();
        let expected = reference(&set, &batches);
        for world in [2, 3, 5] {
            let shares: Vec<Vec<(Vec<f32>, Vec<i64>)>> = (0..world)
                .map(|rank| {
                    let settings = LoaderSettings {
                        workers: 2,
                        shift: 2,
                        flip: 0.5,
                        device: Device::Cpu,
                        share: (rank, world),
                    };
                    let mut out = Vec::new();
                    load_epoch(&set, &spec(), &batches, 11, &settings, |b| {
                        let input: Vec<f32> = b.input.flatten(0, -1).try_into().unwrap();
                        out.push((input, b.labels.try_into().unwrap()));
                        ControlFlow::<()>::Continue(())
                    });
                    out
                })
                .collect();
            for (k, whole) in expected.iter().enumerate() {
                let (mut input, mut labels) = (Vec::new(), Vec::new());
                for share in &shares {
                    input.extend_from_slice(&share[k].0);
                    labels.extend_from_slice(&share[k].1);
                }
                assert!(
                    input == whole.0 && labels == whole.1,
                    "world {world}, batch {k}"
                );
            }
        }
        assert_eq!(share_range(12, (2, 5)), 4..7);
        assert_eq!(share_range(12, (0, 1)), 0..12);
    }

    #[test]
    fn an_unreadable_face_is_left_out_and_breaking_stops_the_workers() {
        let (dir, mut f) = folder(2, 2);
        f.images[1] = dir.path().join("missing.png");
        let set = TrainingSet::Folder(f);
        let batches = vec![vec![0, 1, 2, 3]; 20];
        let settings = LoaderSettings {
            workers: 3,
            shift: 0,
            flip: 0.0,
            device: Device::Cpu,
            share: (0, 1),
        };
        let mut seen = 0;
        let stopped = load_epoch(&set, &spec(), &batches, 0, &settings, |b| {
            assert_eq!(b.images, 3);
            assert_eq!(Vec::<i64>::try_from(b.labels).unwrap(), [0, 1, 1]);
            seen += 1;
            if seen == 4 {
                ControlFlow::Break(seen)
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!((stopped, seen), (Some(4), 4));
    }
}
