//! Face tracks: the faces of consecutive sampled frames linked into one face per person on
//! screen, with one vector for the whole track (the IJB-C convention: one template per face per
//! video).
//!
//! Online and greedy, as trackers of detections are (SORT's association without its motion
//! model: at two frames a second faces jump too far for a constant-velocity prediction to help).
//! A detection joins the active track it overlaps (IoU) and resembles (cosine to the track's mean
//! embedding), or that it resembles strongly wherever it is; pairs are taken best first. A track
//! missing from more than `max_gap` sampled frames ends: someone who leaves and comes back is a
//! new track, which the people grouping joins to the first.

use crate::mtcnn::Face;
use crate::pipeline::EmbeddedFace;
use smoothface_shared::embedding::{dot, l2_normalize};

/// When a detection continues a track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Box overlap (intersection over union) with the track's last box that, with
    /// `min_similarity`, continues it.
    pub min_iou: f32,
    /// Cosine to the track's mean embedding needed even with overlap: a cut to someone else in
    /// the same place starts a new track.
    pub min_similarity: f32,
    /// Cosine to the track's mean embedding that continues it without overlap.
    pub strong_similarity: f32,
    /// Sampled frames a track may be missing from (a turned head, a missed detection).
    pub max_gap: usize,
}

impl TrackerConfig {
    /// The tracker for a model: its calibrated `track` and `track_strong` similarities
    /// (docs/design.md, "Video"), a fifth of the box overlapping and three frames of gap.
    pub fn for_model(t: &smoothface_shared::manifest::Thresholds) -> TrackerConfig {
        TrackerConfig {
            min_iou: 0.2,
            min_similarity: t.track,
            strong_similarity: t.track_strong,
            max_gap: 3,
        }
    }
}

/// How a track's frames become its one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean of the frames' embeddings, normalised.
    Mean,
    /// The mean weighted by each frame's detector score, normalised.
    ScoreWeighted,
}

impl Pooling {
    /// What the gallery stores (docs/design.md, "Video", says why).
    pub const DEFAULT: Pooling = Pooling::Mean;
}

/// One face followed through a recording.
#[derive(Debug, Clone)]
pub struct Track {
    /// Number of the track in its recording, from 0, in order of appearance.
    pub id: usize,
    /// Time of its first frame, in seconds.
    pub start_s: f64,
    /// Time of its last frame.
    pub end_s: f64,
    /// Sampled frames it appears in.
    pub frames: usize,
    /// Its face in the frame where the detector was surest.
    pub best: Face,
    /// Time of that frame.
    pub best_s: f64,
    /// Its face in its last frame.
    pub last: Face,
    sum: Vec<f32>,
    weighted_sum: Vec<f32>,
    last_frame: usize,
}

impl Track {
    fn start(id: usize, frame: usize, time_s: f64, face: EmbeddedFace) -> Track {
        let weighted_sum = face.embedding.iter().map(|x| x * face.face.score).collect();
        Track {
            id,
            start_s: time_s,
            end_s: time_s,
            frames: 1,
            best: face.face.clone(),
            best_s: time_s,
            last: face.face,
            sum: face.embedding,
            weighted_sum,
            last_frame: frame,
        }
    }

    fn extend(&mut self, frame: usize, time_s: f64, face: EmbeddedFace) {
        let score = face.face.score;
        for ((s, w), x) in self
            .sum
            .iter_mut()
            .zip(&mut self.weighted_sum)
            .zip(&face.embedding)
        {
            *s += x;
            *w += x * score;
        }
        if score > self.best.score {
            self.best = face.face.clone();
            self.best_s = time_s;
        }
        self.last = face.face;
        self.end_s = time_s;
        self.frames += 1;
        self.last_frame = frame;
    }

    /// The track's one vector, unit length.
    pub fn embedding(&self, pooling: Pooling) -> Vec<f32> {
        let mut v = match pooling {
            Pooling::Mean => self.sum.clone(),
            Pooling::ScoreWeighted => self.weighted_sum.clone(),
        };
        l2_normalize(&mut v);
        v
    }
}

/// One vector for `vectors` (`n x dim`, row-major) with detector `scores`, as a track's frames
/// are pooled: for measuring the poolings on labelled photos (`eval people`).
pub fn pool(vectors: &[f32], scores: &[f32], dim: usize, pooling: Pooling) -> Vec<f32> {
    let mut v = vec![0.0f32; dim];
    for (row, &score) in vectors.chunks_exact(dim).zip(scores) {
        let w = match pooling {
            Pooling::Mean => 1.0,
            Pooling::ScoreWeighted => score,
        };
        v.iter_mut().zip(row).for_each(|(a, x)| *a += w * x);
    }
    l2_normalize(&mut v);
    v
}

impl Pooling {
    /// Both, in the order `eval people` reports them.
    pub const ALL: [Pooling; 2] = [Pooling::Mean, Pooling::ScoreWeighted];

    /// The name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::ScoreWeighted => "score_weighted",
        }
    }
}

/// Intersection over union of two boxes `[x1, y1, x2, y2]`.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Links the faces of successive frames into tracks.
#[derive(Debug)]
pub struct Tracker {
    config: TrackerConfig,
    active: Vec<Track>,
    ended: Vec<Track>,
    frame: usize,
    next_id: usize,
}

impl Tracker {
    /// A tracker with no tracks yet.
    pub fn new(config: TrackerConfig) -> Tracker {
        Tracker {
            config,
            active: Vec::new(),
            ended: Vec::new(),
            frame: 0,
            next_id: 0,
        }
    }

    /// Adds one frame's faces. Returns, for each face in order, the id of the track it joined
    /// or started; tracks that ended are kept for [`Tracker::take_ended`].
    pub fn update(&mut self, time_s: f64, faces: Vec<EmbeddedFace>) -> Vec<usize> {
        let frame = self.frame;
        self.frame += 1;
        let c = self.config;
        // Tracks gone for longer than the gap end before this frame is matched.
        let (alive, gone): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|t| frame - t.last_frame <= c.max_gap + 1);
        self.active = alive;
        self.ended.extend(gone);

        let means: Vec<Vec<f32>> = self
            .active
            .iter()
            .map(|t| t.embedding(Pooling::Mean))
            .collect();
        let mut pairs = Vec::new();
        for (d, face) in faces.iter().enumerate() {
            for (t, track) in self.active.iter().enumerate() {
                let sim = dot(&face.embedding, &means[t]);
                let overlap = iou(&face.face.bbox, &track.last.bbox);
                let joins =
                    sim >= c.strong_similarity || (sim >= c.min_similarity && overlap >= c.min_iou);
                if joins {
                    pairs.push((sim + overlap, d, t));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_of_face = vec![None; faces.len()];
        let mut taken = vec![false; self.active.len()];
        for (_, d, t) in pairs {
            if track_of_face[d].is_none() && !taken[t] {
                track_of_face[d] = Some(t);
                taken[t] = true;
            }
        }
        let mut ids = Vec::with_capacity(faces.len());
        for (face, track) in faces.into_iter().zip(track_of_face) {
            match track {
                Some(t) => {
                    self.active[t].extend(frame, time_s, face);
                    ids.push(self.active[t].id);
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.active.push(Track::start(id, frame, time_s, face));
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// The active track with this id.
    pub fn track(&self, id: usize) -> Option<&Track> {
        self.active.iter().find(|t| t.id == id)
    }

    /// The tracks that ended since the last call.
    pub fn take_ended(&mut self) -> Vec<Track> {
        std::mem::take(&mut self.ended)
    }

    /// Ends every track; all tracks, in order of appearance.
    pub fn finish(mut self) -> Vec<Track> {
        let mut all = std::mem::take(&mut self.ended);
        all.append(&mut self.active);
        all.sort_by_key(|t| t.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A face at `x` (a 40-pixel box) whose embedding is unit vector `e` of 4 dimensions,
    /// nudged by `wobble` on the last axis.
    fn face(x: f32, e: usize, wobble: f32, score: f32) -> EmbeddedFace {
        let mut embedding = vec![0.0; 4];
        embedding[e] = 1.0;
        embedding[3] += wobble;
        l2_normalize(&mut embedding);
        EmbeddedFace {
            face: Face {
                bbox: [x, 10.0, x + 40.0, 50.0],
                score,
                landmarks: [[0.0; 2]; 5],
            },
            embedding,
        }
    }

    /// The tracker these tests were worked out for: different people below 0.3, one person's
    /// consecutive frames above 0.5.
    const TEST_CONFIG: TrackerConfig = TrackerConfig {
        min_iou: 0.2,
        min_similarity: 0.3,
        strong_similarity: 0.5,
        max_gap: 3,
    };

    #[test]
    fn the_tracker_takes_the_models_thresholds() {
        let t = smoothface_shared::manifest::Thresholds {
            track: 0.3,
            track_strong: 0.5,
            ..smoothface_shared::manifest::Thresholds::FALLBACK
        };
        assert_eq!(TrackerConfig::for_model(&t), TEST_CONFIG);
    }

    #[test]
    fn boxes_overlap_by_hand_computed_amounts() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[5.0, 0.0, 15.0, 10.0]), 50.0 / 150.0);
        assert_eq!(iou(&a, &[20.0, 0.0, 30.0, 10.0]), 0.0);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn a_cut_to_someone_else_in_the_same_place_starts_a_new_track() {
        let mut t = Tracker::new(TEST_CONFIG);
        // A for three frames, then B in the same place, then A again after a long absence.
        for i in 0..3 {
            assert_eq!(
                t.update(i as f64 * 0.5, vec![face(100.0, 0, 0.1, 0.99)]),
                vec![0]
            );
        }
        for i in 3..8 {
            assert_eq!(
                t.update(i as f64 * 0.5, vec![face(100.0, 1, 0.1, 0.99)]),
                vec![1]
            );
        }
        assert_eq!(t.update(4.0, vec![face(100.0, 0, 0.1, 0.99)]), vec![2]);
        let tracks = t.finish();
        let spans: Vec<(f64, f64, usize)> = tracks
            .iter()
            .map(|t| (t.start_s, t.end_s, t.frames))
            .collect();
        assert_eq!(spans, vec![(0.0, 1.0, 3), (1.5, 3.5, 5), (4.0, 4.0, 1)]);
    }

    #[test]
    fn two_faces_that_cross_keep_their_tracks_and_a_short_gap_is_bridged() {
        let mut t = Tracker::new(TEST_CONFIG);
        assert_eq!(
            t.update(0.0, vec![face(0.0, 0, 0.0, 0.9), face(200.0, 1, 0.0, 0.9)]),
            vec![0, 1]
        );
        // They swap places (no overlap with their own last boxes): identity decides.
        assert_eq!(
            t.update(0.5, vec![face(200.0, 0, 0.1, 0.95), face(0.0, 1, 0.1, 0.9)]),
            vec![0, 1]
        );
        // Face 1 is missed for two frames, within the gap of 3, then comes back.
        t.update(1.0, vec![face(200.0, 0, 0.0, 0.99)]);
        t.update(1.5, vec![face(200.0, 0, 0.0, 0.9)]);
        assert_eq!(t.update(2.0, vec![face(0.0, 1, 0.0, 0.9)]), vec![1]);
        let tracks = t.finish();
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].frames, tracks[0].best_s), (4, 1.0));
        assert_eq!(
            (tracks[1].start_s, tracks[1].end_s, tracks[1].frames),
            (0.0, 2.0, 3)
        );
    }

    #[test]
    fn pooling_is_the_normalised_plain_or_score_weighted_mean() {
        let mut t = Tracker::new(TrackerConfig {
            strong_similarity: 0.0,
            min_similarity: -1.0,
            ..TEST_CONFIG
        });
        let mut a = face(0.0, 0, 0.0, 0.5);
        let mut b = face(0.0, 1, 0.0, 1.0);
        a.embedding = vec![1.0, 0.0, 0.0, 0.0];
        b.embedding = vec![0.0, 1.0, 0.0, 0.0];
        t.update(0.0, vec![a]);
        t.update(0.5, vec![b]);
        let track = &t.finish()[0];
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let mean = track.embedding(Pooling::Mean);
        assert!((mean[0] - h).abs() < 1e-6 && (mean[1] - h).abs() < 1e-6);
        // Weights 0.5 and 1: (0.5, 1) / |(0.5, 1)|.
        let w = track.embedding(Pooling::ScoreWeighted);
        let n = (0.25f32 + 1.0).sqrt();
        assert!((w[0] - 0.5 / n).abs() < 1e-6 && (w[1] - 1.0 / n).abs() < 1e-6);
        // The batch form agrees with the running one.
        let rows = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        for p in Pooling::ALL {
            let batch = pool(&rows, &[0.5, 1.0], 4, p);
            let online = track.embedding(p);
            assert!(
                batch.iter().zip(&online).all(|(a, b)| (a - b).abs() < 1e-6),
                "{p:?}"
            );
        }
    }
}
