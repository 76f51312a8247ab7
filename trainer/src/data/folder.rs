//! A folder-per-identity dataset of aligned crops (`ROOT/<person>/<image>.png|jpg`), the layout
//! `smoothface align` writes and face-training sets ship in.

use super::{crops_to_tensor, decode_crop};
use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use smoothface_shared::manifest::InputSpec;
use smoothface_shared::protocol::folder_per_person;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// The people of a folder and their photos. Labels are positions in the sorted list of people
/// kept, so the same folder and filter always give the same labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceFolder {
    /// Folder names of the people, sorted; person `k` has label `k`.
    pub people: Vec<String>,
    /// Every photo, grouped by person in label order, sorted by file name within a person.
    pub images: Vec<PathBuf>,
    /// Label of each photo in `images`.
    pub labels: Vec<i64>,
}

/// Whether a file name is that of an image this dataset reads.
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
}

impl FaceFolder {
    /// Lists `root` (through [`folder_per_person`], the listing the device's evaluation uses
    /// too), keeping the people with at least `min_photos` PNG or JPEG photos (training needs
    /// several photos per person: the sampler takes P of a person at once). Files of other types,
    /// hidden entries and files directly under `root` are ignored; nothing is decoded yet.
    pub fn open(root: &Path, min_photos: usize) -> Result<Self> {
        let mut folder = FaceFolder {
            people: Vec::new(),
            images: Vec::new(),
            labels: Vec::new(),
        };
        let people = folder_per_person(root)
            .with_context(|| format!("{}: cannot list the faces", root.display()))?;
        for person in people {
            let photos: Vec<PathBuf> = person.images.into_iter().filter(|p| is_image(p)).collect();
            if photos.len() < min_photos.max(1) {
                continue;
            }
            let label = folder.people.len() as i64;
            folder.people.push(person.name);
            folder
                .labels
                .extend(std::iter::repeat_n(label, photos.len()));
            folder.images.extend(photos);
        }
        Ok(folder)
    }

    /// Number of photos.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when no person was kept.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Splits the people (never one person's photos) into `(train, validation)`, a seeded
    /// shuffle putting `round(fraction * people)` of them into validation. Each part is
    /// relabelled from 0 in its own sorted order.
    pub fn split_people(&self, fraction: f64, seed: u64) -> (FaceFolder, FaceFolder) {
        let mut order: Vec<usize> = (0..self.people.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_val = ((fraction.clamp(0.0, 1.0) * self.people.len() as f64).round()) as usize;
        let mut in_val = vec![false; self.people.len()];
        for &person in &order[..n_val] {
            in_val[person] = true;
        }
        (self.subset(|k| !in_val[k]), self.subset(|k| in_val[k]))
    }

    /// The people whose label `keep` accepts, relabelled 0.. in their existing order.
    fn subset(&self, keep: impl Fn(usize) -> bool) -> FaceFolder {
        let mut new_label = vec![None; self.people.len()];
        let mut people = Vec::new();
        for (k, name) in self.people.iter().enumerate() {
            if keep(k) {
                new_label[k] = Some(people.len() as i64);
                people.push(name.clone());
            }
        }
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        for (path, &label) in self.images.iter().zip(&self.labels) {
            if let Some(l) = new_label[label as usize] {
                images.push(path.clone());
                labels.push(l);
            }
        }
        FaceFolder {
            people,
            images,
            labels,
        }
    }

    /// Photo `i` as an interleaved RGB crop of `size` x `size`; an unreadable file or one of
    /// another size is an error naming the file.
    pub fn crop(&self, i: usize, size: usize) -> Result<Vec<u8>> {
        let path = &self.images[i];
        let name = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("{name}: cannot read"))?;
        decode_crop(&bytes, size, &name)
    }

    /// Photos `indices` as one model-input tensor (`[N, 3, size, size]` f32 for an NCHW spec),
    /// preprocessed exactly as the device does.
    pub fn load_batch(&self, indices: &[usize], spec: &InputSpec) -> Result<Tensor> {
        let crops = indices
            .iter()
            .map(|&i| self.crop(i, spec.size))
            .collect::<Result<Vec<_>>>()?;
        Ok(crops_to_tensor(&crops, spec))
    }
}
