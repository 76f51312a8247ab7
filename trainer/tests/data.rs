//! Training data: the P-per-class sampler, the folder-per-identity dataset, the RecordIO reader
//! and the augmentation, on synthetic data each test writes (and real aligned faces when
//! `smoothface_tests::faces` finds them).

use smoothface_shared::manifest::{Channels, InputSpec, Layout};
use smoothface_trainer::data::augment::Augment;
use smoothface_trainer::data::folder::FaceFolder;
use smoothface_trainer::data::recordio::{RecordIo, MAGIC};

mod common;
use common::{part, payload, write_records, ALIGNED};
use smoothface_trainer::data::sampler::PkSampler;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

// ---------------------------------------------------------------- sampler

/// Labels with `counts[k]` samples of class `k`, classes interleaved so indices and labels
/// are not in the same order.
fn labels_with(counts: &[usize]) -> Vec<i64> {
    let mut labels = Vec::new();
    let mut left = counts.to_vec();
    while left.iter().any(|&n| n > 0) {
        for (k, n) in left.iter_mut().enumerate() {
            if *n > 0 {
                labels.push(k as i64);
                *n -= 1;
            }
        }
    }
    labels
}

#[test]
fn sampler_batches_hold_distinct_classes_with_p_samples_each() {
    let counts = [4, 5, 6, 7, 8, 9, 10, 11, 12, 3, 2, 16];
    let labels = labels_with(&counts);
    let sampler = PkSampler::new(&labels, 4, 16, 7).unwrap();
    for epoch in 0..5 {
        let batches = sampler.epoch(epoch);
        assert_eq!(batches.len(), sampler.batches_per_epoch());
        assert!(!batches.is_empty());
        let mut seen = HashSet::new();
        for batch in &batches {
            assert_eq!(batch.len(), 16);
            let mut per_class: BTreeMap<i64, usize> = BTreeMap::new();
            for group in batch.chunks(4) {
                // P consecutive indices share a label.
                assert!(group.iter().all(|&i| labels[i] == labels[group[0]]));
            }
            for &i in batch {
                *per_class.entry(labels[i]).or_default() += 1;
                assert!(seen.insert(i), "index {i} twice in epoch {epoch}");
            }
            assert_eq!(per_class.len(), 4, "{per_class:?}");
            assert!(per_class.values().all(|&n| n == 4), "{per_class:?}");
            // Classes 9 and 10 have fewer than P samples.
            assert!(!per_class.contains_key(&9) && !per_class.contains_key(&10));
        }
    }
}

#[test]
fn sampler_leftovers_by_hand() {
    // Groups of 4: class 0 has 2 (1 sample left), class 1 has 1, class 2 none (3 < P),
    // class 3 has 2: 5 groups, 2 per batch -> 2 batches, one group and 8 samples unused.
    let labels = labels_with(&[9, 4, 3, 8]);
    let sampler = PkSampler::new(&labels, 4, 8, 1).unwrap();
    for epoch in 0..10 {
        let batches = sampler.epoch(epoch);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 16);
        assert!(batches.iter().flatten().all(|&i| labels[i] != 2));
    }
    // Class 0 with 5 groups beside class 1 with one: a class may appear once per batch, so
    // only one batch can be made, of class 0 and class 1; 16 of class 0's samples sit out.
    let labels = labels_with(&[20, 4]);
    let sampler = PkSampler::new(&labels, 4, 8, 1).unwrap();
    let batches = sampler.epoch(0);
    assert_eq!(batches.len(), 1);
    let classes: BTreeSet<i64> = batches[0].iter().map(|&i| labels[i]).collect();
    assert_eq!(classes, BTreeSet::from([0, 1]));
    // Fewer classes than a batch needs: nothing.
    assert!(PkSampler::new(&labels, 4, 12, 1)
        .unwrap()
        .epoch(0)
        .is_empty());
}

#[test]
fn sampler_leftover_samples_change_between_epochs() {
    // Class 0 has 9 samples and uses at most 8 a epoch: over epochs all 9 get their turn.
    let labels = labels_with(&[9, 4, 8]);
    let sampler = PkSampler::new(&labels, 4, 8, 3).unwrap();
    let used: HashSet<usize> = (0..40).flat_map(|e| sampler.epoch(e)).flatten().collect();
    let class0: HashSet<usize> = (0..labels.len()).filter(|&i| labels[i] == 0).collect();
    assert!(class0.is_subset(&used));
}

#[test]
fn sampler_is_seeded_and_reshuffles_each_epoch() {
    let labels = labels_with(&[8; 20]);
    let a = PkSampler::new(&labels, 4, 32, 42).unwrap();
    let b = PkSampler::new(&labels, 4, 32, 42).unwrap();
    let c = PkSampler::new(&labels, 4, 32, 43).unwrap();
    assert_eq!(a.epoch(0), b.epoch(0));
    assert_eq!(a.epoch(5), b.epoch(5));
    assert_ne!(a.epoch(0), a.epoch(1));
    assert_ne!(a.epoch(0), c.epoch(0));
    // 20 classes x 2 groups = 40 groups, 8 per batch: all used every epoch.
    assert_eq!(a.epoch(0).len(), 5);
    let all: BTreeSet<usize> = a.epoch(3).into_iter().flatten().collect();
    assert_eq!(all, (0..labels.len()).collect());
}

#[test]
fn sampler_mixes_the_classes_a_class_meets() {
    // 64 classes of 16 groups, 8 classes a batch: 128 batches, each class in 16 of them. Dealt
    // at random, two classes share about 16 * 7 / 63 = 1.8 batches; a dealing that keeps a
    // class beside the same neighbours would have them share most of their 16.
    let labels = labels_with(&[64; 64]);
    let sampler = PkSampler::new(&labels, 4, 32, 11).unwrap();
    let batches = sampler.epoch(0);
    assert_eq!(batches.len(), 128);
    let mut shared: BTreeMap<(i64, i64), usize> = BTreeMap::new();
    for batch in &batches {
        let classes: Vec<i64> = batch.chunks(4).map(|g| labels[g[0]]).collect();
        for (k, &a) in classes.iter().enumerate() {
            for &b in &classes[k + 1..] {
                *shared.entry((a.min(b), a.max(b))).or_default() += 1;
            }
        }
    }
    let most = shared.values().max().unwrap();
    assert!(*most <= 8, "two classes share {most} of their 16 batches");
}

#[test]
fn sampler_fills_every_batch_on_random_class_sizes() {
    // Uneven classes, some far larger than the rest: every epoch must still give
    // batches_per_epoch full batches of distinct classes (the dealing never gets stuck).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for trial in 0..200 {
        let classes = 1 + next(30) as usize;
        let counts: Vec<usize> = (0..classes)
            .map(|_| {
                let most = if next(5) == 0 { 200 } else { 20 };
                next(most) as usize
            })
            .collect();
        let p = 1 + next(4) as usize;
        let batch_size = p * (1 + next(6) as usize);
        let labels = labels_with(&counts);
        let sampler = PkSampler::new(&labels, p, batch_size, trial).unwrap();
        let batches = sampler.epoch(trial as usize);
        assert_eq!(batches.len(), sampler.batches_per_epoch(), "{counts:?}");
        let mut seen = HashSet::new();
        for batch in &batches {
            assert_eq!(batch.len(), batch_size, "{counts:?}");
            let classes: HashSet<i64> = batch.chunks(p).map(|g| labels[g[0]]).collect();
            assert_eq!(classes.len(), batch_size / p, "{counts:?}");
            assert!(batch.iter().all(|&i| seen.insert(i)));
        }
    }
}

#[test]
fn sampler_rejects_a_batch_that_is_not_a_multiple_of_p() {
    let labels = labels_with(&[8, 8]);
    let err = PkSampler::new(&labels, 4, 10, 0).unwrap_err().to_string();
    assert!(err.contains("10") && err.contains("P = 4"), "{err}");
    assert!(PkSampler::new(&labels, 0, 8, 0).is_err());
    assert!(PkSampler::new(&labels, 4, 0, 0).is_err());
}

// ---------------------------------------------------------------- folder

const SIZE: u32 = 112;

fn spec(channels: Channels) -> InputSpec {
    InputSpec {
        layout: Layout::Nchw,
        size: SIZE as usize,
        channels,
        mean: 127.5,
        std: 127.5,
    }
}

/// A crop whose pixel (x, y) is (x, y, tag): every value can be predicted by the test.
fn write_crop(path: &Path, tag: u8, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, tag]))
        .save(path)
        .unwrap();
}

/// alice 5 PNGs, bob 4 PNGs and a text file, carol 2 PNGs, dave 4 PNGs in capitals.
fn people_tree(root: &Path) {
    for i in 0..5 {
        write_crop(&root.join(format!("alice/{i}.png")), 10 + i, SIZE, SIZE);
    }
    for i in 0..4 {
        write_crop(&root.join(format!("bob/b{i}.png")), 20 + i, SIZE, SIZE);
    }
    std::fs::write(root.join("bob/notes.txt"), "not a photo").unwrap();
    for i in 0..2 {
        write_crop(&root.join(format!("carol/{i}.png")), 30 + i, SIZE, SIZE);
    }
    for i in 0..4 {
        write_crop(&root.join(format!("dave/{i}.PNG")), 40 + i, SIZE, SIZE);
    }
    std::fs::write(root.join("README"), "a file at the top").unwrap();
}

#[test]
fn folder_lists_people_sorted_with_a_minimum_of_photos() {
    let dir = tempfile::tempdir().unwrap();
    people_tree(dir.path());
    let folder = FaceFolder::open(dir.path(), 4).unwrap();
    assert_eq!(folder.people, ["alice", "bob", "dave"]);
    assert_eq!(folder.len(), 13);
    assert_eq!(
        folder.labels,
        [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2].map(i64::from)
    );
    assert!(folder.images[5].ends_with("bob/b0.png"));
    let all = FaceFolder::open(dir.path(), 1).unwrap();
    assert_eq!(all.people, ["alice", "bob", "carol", "dave"]);
    assert_eq!(all.labels[9..11], [2, 2]);
    assert!(FaceFolder::open(&dir.path().join("missing"), 1)
        .unwrap_err()
        .to_string()
        .contains("missing"));
}

#[test]
fn folder_batch_is_preprocessed_like_the_device() {
    let dir = tempfile::tempdir().unwrap();
    people_tree(dir.path());
    let folder = FaceFolder::open(dir.path(), 4).unwrap();
    // alice/1.png (tag 11) and dave/3.PNG (tag 43).
    let batch = folder.load_batch(&[1, 12], &spec(Channels::Rgb)).unwrap();
    assert_eq!(batch.size(), [2, 3, 112, 112]);
    assert_eq!(batch.kind(), tch::Kind::Float);
    let v = |n: i64, c: i64, y: i64, x: i64| batch.double_value(&[n, c, y, x]);
    let norm = |p: f64| (p - 127.5) / 127.5;
    assert!((v(0, 0, 7, 100) - norm(100.0)).abs() < 1e-6);
    assert!((v(0, 1, 7, 100) - norm(7.0)).abs() < 1e-6);
    assert!((v(0, 2, 7, 100) - norm(11.0)).abs() < 1e-6);
    assert!((v(1, 2, 50, 3) - norm(43.0)).abs() < 1e-6);
    // BGR: blue comes first.
    let bgr = folder.load_batch(&[1], &spec(Channels::Bgr)).unwrap();
    assert!((bgr.double_value(&[0, 0, 0, 0]) - norm(11.0)).abs() < 1e-6);
    assert!((bgr.double_value(&[0, 2, 0, 9]) - norm(9.0)).abs() < 1e-6);
}

#[test]
fn folder_errors_name_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        write_crop(&dir.path().join(format!("erin/{i}.png")), i, SIZE, SIZE);
    }
    write_crop(&dir.path().join("erin/3.png"), 3, 100, SIZE);
    std::fs::write(dir.path().join("erin/4.jpg"), b"not a jpeg at all").unwrap();
    let folder = FaceFolder::open(dir.path(), 1).unwrap();
    let err = format!(
        "{:#}",
        folder
            .load_batch(&[0, 3], &spec(Channels::Rgb))
            .unwrap_err()
    );
    assert!(err.contains("3.png") && err.contains("100x112"), "{err}");
    let err = format!(
        "{:#}",
        folder.load_batch(&[4], &spec(Channels::Rgb)).unwrap_err()
    );
    assert!(
        err.contains("4.jpg") && err.contains("not a readable"),
        "{err}"
    );
}

#[test]
fn folder_splits_people_not_photos() {
    let dir = tempfile::tempdir().unwrap();
    for person in 0..10 {
        for i in 0..4 {
            let path = dir.path().join(format!("p{person}/{i}.png"));
            write_crop(&path, person, 4, 4);
        }
    }
    let folder = FaceFolder::open(dir.path(), 4).unwrap();
    let (train, val) = folder.split_people(0.3, 5);
    assert_eq!((train.people.len(), val.people.len()), (7, 3));
    assert_eq!((train.len(), val.len()), (28, 12));
    let t: BTreeSet<_> = train.people.iter().cloned().collect();
    let v: BTreeSet<_> = val.people.iter().cloned().collect();
    assert!(t.is_disjoint(&v));
    assert_eq!(t.union(&v).cloned().collect::<Vec<_>>(), folder.people);
    for part in [&train, &val] {
        // Relabelled from 0, and every photo still belongs to the person its label names.
        let labels: BTreeSet<i64> = part.labels.iter().copied().collect();
        assert_eq!(labels, (0..part.people.len() as i64).collect());
        for (path, &label) in part.images.iter().zip(&part.labels) {
            let owner = path.parent().unwrap().file_name().unwrap();
            assert_eq!(owner.to_str().unwrap(), part.people[label as usize]);
        }
    }
    assert_eq!(folder.split_people(0.3, 5), (train, val));
    let splits: HashSet<Vec<String>> = (0..10)
        .map(|seed| folder.split_people(0.3, seed).1.people)
        .collect();
    assert!(splits.len() > 1, "the seed does not change the split");
}

#[test]
fn folder_reads_real_aligned_faces() {
    let Some(root) = smoothface_tests::faces("folder_reads_real_aligned_faces", ALIGNED) else {
        return;
    };
    let folder = FaceFolder::open(&root, 4).unwrap();
    assert_eq!((folder.people.len(), folder.len()), (12, 720));
    let batch = folder
        .load_batch(&[0, 60, 719], &spec(Channels::Rgb))
        .unwrap();
    assert_eq!(batch.size(), [3, 3, 112, 112]);
    assert!(batch.abs().max().double_value(&[]) <= 1.0);
}

// ---------------------------------------------------------------- RecordIO

fn jpeg(colour: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(SIZE, SIZE, image::Rgb(colour));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode(img.as_raw(), SIZE, SIZE, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

struct Pack {
    _dir: tempfile::TempDir,
    rec: std::path::PathBuf,
    idx: std::path::PathBuf,
    offsets: Vec<usize>,
}

/// Writes records (key = position) and their index in a new temporary folder.
fn write_pack(payloads: &[Vec<u8>]) -> Pack {
    let dir = tempfile::tempdir().unwrap();
    let (rec, idx, offsets) = write_records(dir.path(), payloads);
    Pack {
        _dir: dir,
        rec,
        idx,
        offsets,
    }
}

const COLOURS: [[u8; 3]; 4] = [[200, 30, 30], [30, 200, 30], [30, 30, 200], [128, 128, 128]];

/// The insightface layout: header record 0 (images 1..5, identity records from 5), 4 images of
/// classes 0, 0, 1, 2 (the last with its label in the label array, as some packs store it).
fn insightface_pack() -> Pack {
    let mut payloads = vec![payload(0.0, &[5.0, 8.0], &[])];
    for (class, colour) in [0.0, 0.0, 1.0].into_iter().zip(COLOURS) {
        payloads.push(payload(class, &[], &jpeg(colour)));
    }
    payloads.push(payload(0.0, &[2.0, 9.0], &jpeg(COLOURS[3])));
    // Identity records, which are not images: the header's range leaves them out.
    payloads.push(payload(0.0, &[1.0, 3.0], &[]));
    write_pack(&payloads)
}

#[test]
fn recordio_reads_insightface_packs() {
    let pack = insightface_pack();
    let rec = RecordIo::open(&pack.rec, &pack.idx).unwrap();
    assert_eq!(rec.len(), 4);
    assert_eq!(rec.labels().unwrap(), [0, 0, 1, 2]);
    let (label, bytes) = rec.get(2).unwrap();
    assert_eq!((label, bytes), (1, jpeg(COLOURS[2])));
    for (i, colour) in COLOURS.iter().enumerate() {
        let (_, crop) = rec.crop(i, 112).unwrap();
        assert_eq!(crop.len(), 112 * 112 * 3);
        // JPEG is lossy; a flat colour comes back within a few levels.
        for (got, want) in crop[..3].iter().zip(colour) {
            assert!(got.abs_diff(*want) <= 4, "{:?} vs {colour:?}", &crop[..3]);
        }
    }
    let err = format!("{:#}", rec.crop(0, 96).unwrap_err());
    assert!(err.contains("record 1") && err.contains("112x112"), "{err}");
}

#[test]
fn recordio_without_header_reads_every_record() {
    let pack = write_pack(&[payload(3.0, &[], b"abc"), payload(4.0, &[], b"defgh")]);
    let rec = RecordIo::open(&pack.rec, &pack.idx).unwrap();
    assert_eq!(rec.len(), 2);
    assert_eq!(rec.get(0).unwrap(), (3, b"abc".to_vec()));
    assert_eq!(rec.get(1).unwrap(), (4, b"defgh".to_vec()));
}

#[test]
fn recordio_joins_continued_records() {
    // MXNet cuts a record where its data holds the magic number, at a 4-byte boundary, and
    // the magic goes back between the parts when reading.
    let header = payload(0.0, &[2.0, 2.0], &[]);
    let full = payload(6.0, &[], &[1, 2, 3, 4, 0x0a, 0x23, 0xd7, 0xce, 9, 9, 9]);
    let cut = 24 + 4;
    assert_eq!(full[cut..cut + 4], MAGIC.to_le_bytes());
    let mut rec = Vec::new();
    part(&mut rec, 0, &header);
    let offset = rec.len();
    part(&mut rec, 1, &full[..cut]);
    part(&mut rec, 3, &full[cut + 4..]);
    let dir = tempfile::tempdir().unwrap();
    let (r, i) = (dir.path().join("a.rec"), dir.path().join("a.idx"));
    std::fs::write(&r, rec).unwrap();
    std::fs::write(&i, format!("0\t0\n1\t{offset}\n")).unwrap();
    let pack = RecordIo::open(&r, &i).unwrap();
    assert_eq!(pack.get(0).unwrap(), (6, full[24..].to_vec()));
    assert_eq!(pack.labels().unwrap(), [6]);

    // Cut inside the IRHeader itself (the magic is the low half of `id`), before the label
    // array: the label still comes out right.
    let mut full = payload(0.0, &[5.0], b"xyz");
    full[8..12].copy_from_slice(&MAGIC.to_le_bytes());
    let mut rec = Vec::new();
    part(&mut rec, 1, &full[..8]);
    part(&mut rec, 3, &full[12..]);
    std::fs::write(&r, rec).unwrap();
    std::fs::write(&i, "1\t0\n").unwrap();
    let pack = RecordIo::open(&r, &i).unwrap();
    assert_eq!(pack.labels().unwrap(), [5]);
    assert_eq!(pack.get(0).unwrap(), (5, b"xyz".to_vec()));
}

#[test]
fn recordio_truncated_file_is_a_clear_error() {
    let pack = insightface_pack();
    let bytes = std::fs::read(&pack.rec).unwrap();
    // Cut in the middle of image record 3's JPEG.
    std::fs::write(&pack.rec, &bytes[..pack.offsets[3] + 100]).unwrap();
    let rec = RecordIo::open(&pack.rec, &pack.idx).unwrap();
    assert_eq!(rec.get(1).unwrap().0, 0);
    let err = format!("{:#}", rec.get(2).unwrap_err());
    assert!(
        err.contains("train.rec") && err.contains("record 3") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn recordio_huge_lengths_and_offsets_are_errors_naming_file_and_offset() {
    let pack = insightface_pack();
    let mut bytes = std::fs::read(&pack.rec).unwrap();
    // Record 2 claims the largest length a record header holds (2^29 - 1 bytes), far beyond
    // the end of the file: an error, not an allocation of half a gigabyte.
    let at = pack.offsets[2];
    bytes[at + 4..at + 8].copy_from_slice(&((1u32 << 29) - 1).to_le_bytes());
    std::fs::write(&pack.rec, &bytes).unwrap();
    let rec = RecordIo::open(&pack.rec, &pack.idx).unwrap();
    let err = format!("{:#}", rec.get(1).unwrap_err());
    let payload_at = format!("at byte {}", at + 8);
    assert!(
        err.contains("train.rec")
            && err.contains("record 2")
            && err.contains(&payload_at)
            && err.contains("claims 536870911 bytes"),
        "{err}"
    );
    // An index offset at the very end of the u64 range: no overflow.
    let lines: String = pack
        .offsets
        .iter()
        .enumerate()
        .map(|(key, &offset)| match key {
            3 => format!("{key}\t{}\n", u64::MAX - 2),
            _ => format!("{key}\t{offset}\n"),
        })
        .collect();
    std::fs::write(&pack.idx, lines).unwrap();
    let rec = RecordIo::open(&pack.rec, &pack.idx).unwrap();
    let err = format!("{:#}", rec.get(2).unwrap_err());
    let offset = format!("at byte {}", u64::MAX - 2);
    assert!(
        err.contains("train.rec") && err.contains("record 3") && err.contains(&offset),
        "{err}"
    );
    assert!(rec.labels().is_err());
}

#[test]
fn recordio_bad_magic_is_a_clear_error() {
    let pack = insightface_pack();
    let mut bytes = std::fs::read(&pack.rec).unwrap();
    bytes[pack.offsets[2]] ^= 0xff;
    std::fs::write(&pack.rec, &bytes).unwrap();
    let rec = RecordIo::open(&pack.rec, &pack.idx).unwrap();
    let err = format!("{:#}", rec.get(1).unwrap_err());
    assert!(
        err.contains("record 2") && err.contains("bad magic"),
        "{err}"
    );
    // A broken header record stops the opening.
    bytes[0] ^= 0xff;
    std::fs::write(&pack.rec, &bytes).unwrap();
    let err = format!("{:#}", RecordIo::open(&pack.rec, &pack.idx).unwrap_err());
    assert!(
        err.contains("record 0") && err.contains("bad magic"),
        "{err}"
    );
}

#[test]
fn recordio_bad_index_line_is_named() {
    let pack = insightface_pack();
    std::fs::write(&pack.idx, "0\t0\n1 twelve\n").unwrap();
    let err = format!("{:#}", RecordIo::open(&pack.rec, &pack.idx).unwrap_err());
    assert!(err.contains("train.idx:2"), "{err}");
    // The header promises images 1..5; an index without record 2 is refused at opening.
    let lines: String = pack
        .offsets
        .iter()
        .enumerate()
        .filter(|&(key, _)| key != 2)
        .map(|(key, offset)| format!("{key}\t{offset}\n"))
        .collect();
    std::fs::write(&pack.idx, lines).unwrap();
    let err = format!("{:#}", RecordIo::open(&pack.rec, &pack.idx).unwrap_err());
    assert!(err.contains("image record 2 is not in"), "{err}");
}

// ---------------------------------------------------------------- augmentation

/// An 8x8 crop with every byte different.
fn pattern() -> Vec<u8> {
    (0..8 * 8 * 3).map(|v| v as u8).collect()
}

/// Pixel (x, y) of an 8x8 crop, black outside.
fn pixel(crop: &[u8], x: isize, y: isize) -> [u8; 3] {
    if !(0..8).contains(&x) || !(0..8).contains(&y) {
        return [0; 3];
    }
    let i = (y as usize * 8 + x as usize) * 3;
    [crop[i], crop[i + 1], crop[i + 2]]
}

#[test]
fn augment_with_nothing_to_do_changes_nothing() {
    let mut aug = Augment::new(8, 0, 0.0, 9);
    for _ in 0..20 {
        assert_eq!(aug.apply(&pattern()), pattern());
    }
}

#[test]
fn augment_flip_mirrors_and_twice_is_identity() {
    let mut aug = Augment::new(8, 0, 1.0, 9);
    let once = aug.apply(&pattern());
    for y in 0..8 {
        for x in 0..8 {
            assert_eq!(pixel(&once, x, y), pixel(&pattern(), 7 - x, y));
        }
    }
    assert_eq!(aug.apply(&once), pattern());
}

#[test]
fn augment_crop_is_a_shift_within_the_padding() {
    let (src, pad) = (pattern(), 2isize);
    let mut shifts = HashSet::new();
    let mut flips = HashSet::new();
    let mut aug = Augment::new(8, pad as usize, 0.5, 4);
    let mut again = Augment::new(8, pad as usize, 0.5, 4);
    for _ in 0..200 {
        let out = aug.apply(&src);
        assert_eq!(out, again.apply(&src), "same seed, same crops");
        assert_eq!(out.len(), src.len());
        // Which shift (and flip) of the source is this?
        let found: Vec<(isize, isize, bool)> = (-pad..=pad)
            .flat_map(|dx| (-pad..=pad).map(move |dy| (dx, dy)))
            .flat_map(|(dx, dy)| [(dx, dy, false), (dx, dy, true)])
            .filter(|&(dx, dy, flip)| {
                (0..8).all(|y| {
                    (0..8).all(|x| {
                        let sx = if flip { 7 - x } else { x };
                        pixel(&out, x, y) == pixel(&src, sx + dx, y + dy)
                    })
                })
            })
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        shifts.insert((found[0].0, found[0].1));
        flips.insert(found[0].2);
    }
    assert!(shifts.len() > 15, "only {} shifts of 25", shifts.len());
    assert_eq!(flips.len(), 2);
}
