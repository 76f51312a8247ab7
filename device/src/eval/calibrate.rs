//! `smoothface eval calibrate`: an embedder's similarity thresholds, measured on labelled sets.
//!
//! A cosine similarity means something different for every model (the same two photos of one
//! person score 0.45 with one and 0.65 with another), so every threshold a command applies comes
//! from the model's manifest, and this is how they are measured. Each set, a folder-per-person
//! tree, is indexed into a gallery as a user's would be; its labelled faces (one per photo) give
//! the similarities of different people's faces, and the whole gallery the people grouping at
//! each candidate threshold. Every threshold is chosen on all sets at once, never on one:
//!
//! - `identify` and `track_strong`: the strictest of the sets' thresholds at which at most one in
//!   ten thousand pairs of different people's faces (false-match rate 1e-4) scores as high, so
//!   the camera does not name a stranger and a track does not jump to another face;
//! - `track`: the same at 1e-2 (the track's box must overlap too, which rules out most of the
//!   rest);
//! - `link`: the people grouping's threshold with the best worst-set BCubed F among those whose
//!   BCubed precision is at least [`MIN_PRECISION`] on every set (merging two people is the
//!   error users forgive least); where none reaches it, the one of the best worst-set precision.

use crate::people::evaluation::{self, GroupingScore};
use crate::people::linkage::{self, LinkageConfig};
use crate::people::store::Eligibility;
use crate::pipeline::{FacePick, Pipeline};
use anyhow::{ensure, Result};
use rayon::prelude::*;
use serde::Serialize;
use smoothface_shared::embedding::dot;
use smoothface_shared::manifest::Thresholds;
use std::path::{Path, PathBuf};

/// Smallest BCubed precision the grouping's threshold must reach on every set.
pub const MIN_PRECISION: f64 = 0.97;
/// False-match rate of `identify` and `track_strong`.
pub const FMR_STRICT: f64 = 1e-4;
/// False-match rate of `track`.
pub const FMR_LOOSE: f64 = 1e-2;
/// The groupings tried: one pass at 0.20 to 0.80 by 0.01; two passes at a first threshold of
/// 0.36 to 0.56 by 0.02, a relative link of 0.45 to 0.80 by 0.05 and a floor of 0.15 or 0.25.
fn link_grid() -> Vec<LinkageConfig> {
    let one = (20..=80).map(|c| LinkageConfig::at(c as f32 / 100.0));
    let two = (0..=10).flat_map(|t| {
        (0..8).flat_map(move |r| {
            [0.15, 0.25].map(|floor| {
                LinkageConfig::two_pass(0.36 + 0.02 * t as f32, 0.45 + 0.05 * r as f32, floor)
            })
        })
    });
    one.chain(two).collect()
}

/// One set's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct SetCalibration {
    /// The set's folder name.
    pub set: String,
    /// Its folder.
    pub dir: PathBuf,
    /// Photos, labelled faces and true people.
    pub photos: usize,
    /// Labelled faces (photos with a face).
    pub labelled: usize,
    /// True people among them.
    pub people: usize,
    /// Pairs of different people's labelled faces.
    pub impostor_pairs: usize,
    /// Pairs of one person's labelled faces.
    pub genuine_pairs: usize,
    /// The set's threshold at false-match rate [`FMR_STRICT`].
    pub strict: f32,
    /// The set's threshold at false-match rate [`FMR_LOOSE`].
    pub loose: f32,
    /// Share of one person's pairs at or above the chosen `identify` (true-match rate).
    pub identify_tmr: f64,
    /// Our grouping at the chosen `link`.
    pub grouping: GroupingScore,
    /// BCubed F, precision and recall at every grouping tried.
    pub link_curve: Vec<LinkPoint>,
}

/// The grouping at one point of the grid.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LinkPoint {
    /// The first pass's threshold.
    pub link: f32,
    /// The second pass's relative threshold (`None`: one pass).
    pub relative: Option<f32>,
    /// The second pass's floor.
    pub floor: Option<f32>,
    /// BCubed F.
    pub f: f64,
    /// BCubed precision.
    pub precision: f64,
    /// BCubed recall.
    pub recall: f64,
}

/// The result: the thresholds chosen on every set, and each set's figures, worst first.
#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    /// The embedder's manifest name.
    pub model: String,
    /// The thresholds, as a manifest holds them.
    pub thresholds: Thresholds,
    /// Each set, the worst BCubed F at the chosen `link` first.
    pub sets: Vec<SetCalibration>,
}

/// The threshold at which at most `fmr` of the `impostors` scores are at or above it: just above
/// the `floor(fmr * n)`-th highest (0-based), so that many and no more reach it.
pub fn threshold_at_fmr(impostors: &mut [f32], fmr: f64) -> f32 {
    if impostors.is_empty() {
        return -1.0;
    }
    let k = ((fmr * impostors.len() as f64).floor() as usize).min(impostors.len() - 1);
    let (_, kth, _) = impostors.select_nth_unstable_by(k, |a, b| b.total_cmp(a));
    kth.next_up()
}

/// Similarities of every pair of labelled faces, split into different people's and one
/// person's.
fn pair_scores(vectors: &[&[f32]], truth: &[u32]) -> (Vec<f32>, Vec<f32>) {
    let per_row: Vec<(Vec<f32>, Vec<f32>)> = (0..vectors.len())
        .into_par_iter()
        .map(|i| {
            let (mut impostor, mut genuine) = (Vec::new(), Vec::new());
            for j in i + 1..vectors.len() {
                let s = dot(vectors[i], vectors[j]);
                if truth[i] == truth[j] {
                    genuine.push(s);
                } else {
                    impostor.push(s);
                }
            }
            (impostor, genuine)
        })
        .collect();
    let mut impostor = Vec::new();
    let mut genuine = Vec::new();
    for (i, g) in per_row {
        impostor.extend(i);
        genuine.extend(g);
    }
    (impostor, genuine)
}

/// BCubed F, precision and recall of our grouping at every threshold of the grid. The
/// neighbours are found once for the whole grid ([`linkage::Sweep`]: past `linkage::group`'s
/// batch size it groups as one batch); the scores reported at the chosen threshold are
/// `linkage::group`'s own.
fn sweep_links(prepared: &evaluation::Prepared) -> Result<Vec<LinkPoint>> {
    let gallery = prepared.gallery();
    let grid = link_grid();
    let floor = grid
        .iter()
        .map(|c| c.lowest())
        .fold(f32::INFINITY, f32::min);
    let sweep = linkage::Sweep::new(&gallery, LinkageConfig::K, floor);
    grid.iter()
        .map(|config| {
            let s = prepared.score(&|_| sweep.group(config))?;
            Ok(LinkPoint {
                link: config.threshold,
                relative: config.relative,
                floor: config.relative.map(|_| config.floor),
                f: s.bcubed_f,
                precision: s.scores.bcubed_precision,
                recall: s.scores.bcubed_recall,
            })
        })
        .collect()
}

/// What one set gives before the thresholds are chosen.
struct Measured {
    set: String,
    dir: PathBuf,
    prepared: evaluation::Prepared,
    genuine: Vec<f32>,
    impostor_pairs: usize,
    strict: f32,
    loose: f32,
    curve: Vec<LinkPoint>,
}

/// Calibrates the pipeline's embedder on the sets `dirs` (folder-per-person trees), each face
/// of a photo labelled by `pick`, the faces `eligibility` admits grouped. With `keep`, each
/// set's gallery is kept there (`SET.sqlite`), so a second run indexes nothing again.
pub fn calibrate(
    pipeline: &Pipeline,
    dirs: &[PathBuf],
    pick: FacePick,
    eligibility: &Eligibility,
    keep: Option<&Path>,
    progress: bool,
) -> Result<Calibration> {
    ensure!(!dirs.is_empty(), "no sets to calibrate on");
    let mut measured = Vec::new();
    for dir in dirs {
        let set = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if progress {
            eprintln!("calibrate: {set}");
        }
        let db = keep.map(|k| k.join(format!("{set}.sqlite")));
        let prepared =
            evaluation::prepare(pipeline, dir, db.as_deref(), pick, eligibility, progress)?;
        let vectors: Vec<&[f32]> = prepared
            .labelled
            .iter()
            .map(|&i| prepared.embedding(i))
            .collect();
        let (mut impostor, genuine) = pair_scores(&vectors, &prepared.truth);
        ensure!(
            !impostor.is_empty(),
            "{}: needs photos of two people at least",
            dir.display()
        );
        let strict = threshold_at_fmr(&mut impostor, FMR_STRICT);
        let loose = threshold_at_fmr(&mut impostor, FMR_LOOSE);
        let curve = sweep_links(&prepared)?;
        measured.push(Measured {
            set,
            dir: dir.clone(),
            prepared,
            genuine,
            impostor_pairs: impostor.len(),
            strict,
            loose,
            curve,
        });
    }
    let chosen = choose_link(
        &measured
            .iter()
            .map(|m| m.curve.as_slice())
            .collect::<Vec<_>>(),
    );
    let identify = measured.iter().map(|m| m.strict).fold(f32::MIN, f32::max);
    let track = measured.iter().map(|m| m.loose).fold(f32::MIN, f32::max);
    let names: Vec<&str> = measured.iter().map(|m| m.set.as_str()).collect();
    let thresholds = Thresholds {
        link: chosen.link,
        link_relative: chosen.relative,
        link_floor: chosen.floor,
        identify,
        track,
        track_strong: identify,
        calibration: Some(format!(
            "smoothface eval calibrate on {}: link (and link_relative, link_floor) = the grouping \
             of the best worst-set BCubed F with BCubed precision >= {MIN_PRECISION} on every \
             set; identify and track_strong = the strictest set's threshold at false-match rate \
             {FMR_STRICT:e}, track at {FMR_LOOSE:e}",
            names.join(", ")
        )),
    };
    let config = LinkageConfig::for_model(&thresholds);
    let mut sets = measured
        .into_iter()
        .map(|m| {
            let grouping = m.prepared.score(&|g| linkage::group(g, &config))?;
            let accepted = m.genuine.iter().filter(|&&s| s >= identify).count();
            Ok(SetCalibration {
                set: m.set,
                dir: m.dir,
                photos: m.prepared.photos,
                labelled: m.prepared.labelled.len(),
                people: count_people(&m.prepared.truth),
                impostor_pairs: m.impostor_pairs,
                genuine_pairs: m.genuine.len(),
                strict: m.strict,
                loose: m.loose,
                identify_tmr: accepted as f64 / m.genuine.len().max(1) as f64,
                grouping,
                link_curve: m.curve,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    sets.sort_by(|a, b| a.grouping.bcubed_f.total_cmp(&b.grouping.bcubed_f));
    Ok(Calibration {
        model: pipeline.embedder.name.clone(),
        thresholds,
        sets,
    })
}

fn count_people(truth: &[u32]) -> usize {
    truth.iter().collect::<std::collections::HashSet<_>>().len()
}

/// The grouping with the best worst-set F among those precise enough on every set, else the
/// one of the best worst-set precision; ties go to the later point of the grid. The curves are
/// over the same groupings, in the same order.
pub fn choose_link(curves: &[&[LinkPoint]]) -> LinkPoint {
    let points = curves.first().map_or(0, |c| c.len());
    let worst = |i: usize, of: fn(&LinkPoint) -> f64| {
        curves
            .iter()
            .map(|c| of(&c[i]))
            .fold(f64::INFINITY, f64::min)
    };
    let precise: Vec<usize> = (0..points)
        .filter(|&i| worst(i, |p| p.precision) >= MIN_PRECISION)
        .collect();
    let best = |candidates: &[usize], of: fn(&LinkPoint) -> f64| {
        candidates
            .iter()
            .copied()
            .max_by(|&a, &b| worst(a, of).total_cmp(&worst(b, of)).then(a.cmp(&b)))
    };
    let all: Vec<usize> = (0..points).collect();
    let pick = if precise.is_empty() {
        best(&all, |p| p.precision)
    } else {
        best(&precise, |p| p.f)
    };
    let fallback = LinkPoint {
        link: Thresholds::FALLBACK.link,
        relative: None,
        floor: None,
        f: 0.0,
        precision: 0.0,
        recall: 0.0,
    };
    pick.map_or(fallback, |i| curves[0][i])
}

/// Writes `thresholds` into the manifest of the model folder `dir` (through a temporary file
/// renamed over it), leaving the rest of the manifest as it was.
pub fn write_thresholds(dir: &Path, thresholds: &Thresholds) -> Result<PathBuf> {
    use smoothface_shared::manifest::{ModelManifest, MANIFEST_FILE};
    let model = ModelManifest::load(dir)?;
    let mut manifest = model.manifest;
    manifest.thresholds = Some(thresholds.clone());
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&manifest)? + "\n";
    smoothface_shared::atomic::write_atomically(&path, |f| {
        use std::io::Write;
        f.write_all(text.as_bytes())
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_at_a_false_match_rate_lets_that_many_impostors_through() {
        // 10 impostor scores; at 0.2 two may pass: the two highest (0.9, 0.8) do, 0.7 does not.
        let mut s = [0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.4, 0.6, 0.5, 0.0];
        let t = threshold_at_fmr(&mut s, 0.2);
        assert!(t > 0.7 && t <= 0.7f32.next_up().next_up(), "{t}");
        assert_eq!(s.iter().filter(|&&x| x >= t).count(), 2);
        // At 0 none may pass; at 1 the threshold is just above the lowest score.
        let t = threshold_at_fmr(&mut s, 0.0);
        assert!(s.iter().all(|&x| x < t));
        let t = threshold_at_fmr(&mut s, 1.0);
        assert_eq!(s.iter().filter(|&&x| x >= t).count(), 9);
        assert_eq!(threshold_at_fmr(&mut [], 0.1), -1.0);
    }

    fn point(link: f32, f: f64, precision: f64) -> LinkPoint {
        LinkPoint {
            link,
            relative: None,
            floor: None,
            f,
            precision,
            recall: 0.0,
        }
    }

    #[test]
    fn the_link_threshold_is_the_best_worst_set_among_the_precise_ones() {
        // Set A peaks at 0.4 but B is imprecise there; 0.5 is precise on both with the best
        // worst-set F (min(0.90, 0.85) = 0.85 against min(0.88, 0.80) at 0.6).
        let a = [
            point(0.4, 0.95, 0.99),
            point(0.5, 0.90, 0.99),
            point(0.6, 0.88, 1.0),
        ];
        let b = [
            point(0.4, 0.92, 0.90),
            point(0.5, 0.85, 0.98),
            point(0.6, 0.80, 0.99),
        ];
        assert_eq!(choose_link(&[&a, &b]).link, 0.5);
        // Nothing precise enough: the best worst-set precision (0.6 here, B's 0.95).
        let c = [
            point(0.4, 0.9, 0.80),
            point(0.5, 0.9, 0.90),
            point(0.6, 0.9, 0.95),
        ];
        assert_eq!(choose_link(&[&a, &c]).link, 0.6);
        // A tie goes to the later point.
        let d = [point(0.4, 0.9, 0.99), point(0.5, 0.9, 0.99)];
        assert_eq!(choose_link(&[&d]).link, 0.5);
    }
}
