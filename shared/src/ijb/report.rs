//! The whole evaluation of a set from its face features: pooling, then each protocol, in one
//! report whose JSON keys other tools read.

use super::features::{embed_faces, FaceEmbedder, FaceFeatures, FeatureError, Missing};
use super::meta::{IjbSet, SubjectTemplate};
use super::pool::{face_features, pool_templates, PoolOptions, Templates};
use super::scores::{self, GalleryReport, JoinedReport, ScoreError, ScoreMatrix, Verification};
use crate::metrics::{retrieval_metrics, RocPoint};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which protocols to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// 1:1 verification.
    Verification,
    /// 1:N identification.
    Identification,
    /// The Smooth-AP paper's retrieval mAP.
    Retrieval,
    /// Every protocol whose files the set has.
    All,
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "1:1" => Ok(Protocol::Verification),
            "1:N" | "1:n" => Ok(Protocol::Identification),
            "map" => Ok(Protocol::Retrieval),
            "all" => Ok(Protocol::All),
            other => Err(format!(
                "unknown protocol `{other}` (expected 1:1, 1:N, map or all)"
            )),
        }
    }
}

/// Identities with fewer templates are left out of the retrieval protocol, as in the paper.
pub const MIN_TEMPLATES_PER_IDENTITY: usize = 5;
/// Recall@K values of the retrieval protocol.
pub const RECALL_KS: [usize; 3] = [1, 4, 16];

/// How the faces were embedded.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingStats {
    /// Faces embedded by this run.
    pub embedded: usize,
    /// Faces read from the feature cache.
    pub cached: usize,
    /// Seconds spent embedding.
    pub seconds: f64,
    /// Faces embedded per second this run (each with its mirror when flipping); null when all
    /// came from the cache.
    pub faces_per_second: Option<f64>,
}

/// The 1:N report.
#[derive(Debug, Clone, Serialize)]
pub struct IdentificationReport {
    /// The mixed probes against gallery 1 alone.
    pub g1: GalleryReport,
    /// Against gallery 2 alone.
    pub g2: GalleryReport,
    /// insightface `ijb_1n.py`'s figures, with the galleries joined.
    pub insightface_joined: JoinedReport,
}

/// The retrieval report.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalIjb {
    /// Templates used (of identities with enough of them).
    pub templates: usize,
    /// Identities used.
    pub identities: usize,
    /// Mean average precision.
    pub map: f64,
    /// Recall@1.
    pub recall_at_1: f64,
    /// Recall@4.
    pub recall_at_4: f64,
    /// Recall@16.
    pub recall_at_16: f64,
}

/// Everything one evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct IjbReport {
    /// `IJB-B` or `IJB-C`.
    pub benchmark: &'static str,
    /// Faces listed.
    pub faces: usize,
    /// Templates listed.
    pub templates: usize,
    /// The pooling choices.
    pub options: PoolOptions,
    /// Faces whose crops could not be used (left out of their templates).
    pub missing_faces: Vec<Missing>,
    /// Templates none of whose faces could be used.
    pub empty_templates: usize,
    /// How the features were computed.
    pub embedding: EmbeddingStats,
    /// 1:1, when run.
    pub verification: Option<Verification>,
    /// 1:N, when run.
    pub identification: Option<IdentificationReport>,
    /// Retrieval, when run.
    pub retrieval: Option<RetrievalIjb>,
    /// Protocols `all` skipped because their files are absent, and why.
    pub skipped: Vec<String>,
}

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A protocol asked for by name has no files in the set.
    #[error("{0}")]
    MissingFiles(String),
    /// The scores could not be computed.
    #[error(transparent)]
    Score(#[from] ScoreError),
    /// The faces could not be embedded.
    #[error(transparent)]
    Features(#[from] FeatureError),
}

/// The choices of an evaluation, the same for every embedder.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Flip test, norm and faceness weighting.
    pub pool: PoolOptions,
    /// Which protocols.
    pub protocol: Protocol,
    /// Feature cache folder, or none.
    pub cache: Option<PathBuf>,
}

/// Embeds the faces of `set` with `model` (or reads them from the cache; `progress` is told
/// each batch of faces done) and runs the protocols.
pub fn run(
    set: &IjbSet,
    model: &dyn FaceEmbedder,
    options: &EvalOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<IjbReport, EvalError> {
    let features = embed_faces(
        set,
        model,
        options.pool.flip,
        options.cache.as_deref(),
        progress,
    )?;
    evaluate(set, &features, options.pool, options.protocol)
}

/// The template features from the face features under `options`.
pub fn templates(set: &IjbSet, features: &FaceFeatures, options: PoolOptions) -> Templates {
    let faces = face_features(
        &set.faces,
        features.dim,
        &features.plain,
        features.flipped.as_deref().filter(|_| options.flip),
        options,
    );
    pool_templates(&set.faces, &faces, &features.present, features.dim)
}

/// Runs `protocol` on `set` with its face `features`.
pub fn evaluate(
    set: &IjbSet,
    features: &FaceFeatures,
    options: PoolOptions,
    protocol: Protocol,
) -> Result<IjbReport, EvalError> {
    let templates = templates(set, features, options);
    let wants = |p: Protocol| protocol == p || protocol == Protocol::All;
    let meta = set.root.join("meta");
    let prefix = set.benchmark.prefix();
    let mut skipped = Vec::new();
    let mut absent = |p: Protocol, what: String| -> Result<(), EvalError> {
        if protocol == p {
            Err(EvalError::MissingFiles(what))
        } else {
            skipped.push(what);
            Ok(())
        }
    };

    let mut verification = None;
    if wants(Protocol::Verification) {
        match &set.pairs {
            Some(pairs) => verification = Some(scores::verification(&templates, pairs)?),
            None => absent(
                Protocol::Verification,
                format!(
                    "1:1: {} not found",
                    meta.join(format!("{prefix}_template_pair_label.txt"))
                        .display()
                ),
            )?,
        }
    }
    let mut identification = None;
    let mut retrieval = None;
    let missing_1n = || {
        format!(
            "{}: the 1:N lists ({prefix}_1N_gallery_*.csv, {prefix}_1N_probe_mixed.csv) are \
             not all there",
            meta.display()
        )
    };
    if wants(Protocol::Identification) {
        match &set.identification {
            Some(id) => {
                // One score matrix against both galleries joined (sorted by template, as
                // ijb_1n.py orders them); each gallery's is its columns, in its own order.
                let mut tagged: Vec<(SubjectTemplate, usize)> = (id.g1.iter().map(|t| (*t, 0)))
                    .chain(id.g2.iter().map(|t| (*t, 1)))
                    .collect();
                tagged.sort();
                let joined: Vec<SubjectTemplate> = tagged.iter().map(|t| t.0).collect();
                let all = ScoreMatrix::compute(&templates, &id.probes, &joined, "the galleries")?;
                let of = |gallery: usize| {
                    let cols: Vec<usize> = (0..tagged.len())
                        .filter(|&j| tagged[j].1 == gallery)
                        .collect();
                    all.columns(&cols)
                };
                let (g1, g2) = (of(0), of(1));
                identification = Some(IdentificationReport {
                    g1: scores::search_gallery(&g1, &id.probes, &id.g1),
                    g2: scores::search_gallery(&g2, &id.probes, &id.g2),
                    insightface_joined: scores::search_joined(&all, &id.probes, &joined)?,
                });
            }
            None => absent(Protocol::Identification, format!("1:N: {}", missing_1n()))?,
        }
    }
    if wants(Protocol::Retrieval) {
        match &set.identification {
            Some(id) => retrieval = Some(retrieval_protocol(&templates, id)?),
            None => absent(
                Protocol::Retrieval,
                format!("retrieval needs subjects: {}", missing_1n()),
            )?,
        }
    }
    Ok(IjbReport {
        benchmark: set.benchmark.name(),
        faces: set.faces.len(),
        templates: templates.ids.len(),
        options,
        missing_faces: features.missing.clone(),
        empty_templates: templates.empty.len(),
        embedding: EmbeddingStats {
            embedded: features.embedded,
            cached: features.cached,
            seconds: features.seconds,
            faces_per_second: (features.embedded > 0 && features.seconds > 0.0)
                .then(|| features.embedded as f64 / features.seconds),
        },
        verification,
        identification,
        retrieval,
        skipped,
    })
}

/// Every template with a known subject queries all the others; identities with fewer than
/// [`MIN_TEMPLATES_PER_IDENTITY`] templates are left out.
fn retrieval_protocol(
    templates: &Templates,
    id: &super::meta::Identification,
) -> Result<RetrievalIjb, EvalError> {
    let mut subject_of: BTreeMap<u32, u32> = BTreeMap::new();
    for t in id.g1.iter().chain(&id.g2).chain(&id.probes) {
        subject_of.entry(t.template).or_insert(t.subject);
    }
    let mut per_subject: BTreeMap<u32, usize> = BTreeMap::new();
    subject_of
        .values()
        .for_each(|s| *per_subject.entry(*s).or_default() += 1);
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for (&template, subject) in &subject_of {
        if per_subject[subject] < MIN_TEMPLATES_PER_IDENTITY {
            continue;
        }
        let row = templates.get(template).ok_or(ScoreError::UnknownTemplate {
            list: "the 1:N lists",
            template,
        })?;
        features.extend_from_slice(row);
        labels.push(*subject);
    }
    if labels.is_empty() {
        return Ok(RetrievalIjb {
            templates: 0,
            identities: 0,
            map: 0.0,
            recall_at_1: 0.0,
            recall_at_4: 0.0,
            recall_at_16: 0.0,
        });
    }
    let r = retrieval_metrics(&features, templates.dim, &labels, &RECALL_KS)
        .map_err(ScoreError::from)?;
    let recall = |k: usize| {
        r.recall_at
            .iter()
            .find(|(kk, _)| *kk == k)
            .map_or(0.0, |x| x.1)
    };
    Ok(RetrievalIjb {
        templates: labels.len(),
        identities: per_subject
            .values()
            .filter(|&&c| c >= MIN_TEMPLATES_PER_IDENTITY)
            .count(),
        map: r.map,
        recall_at_1: recall(1),
        recall_at_4: recall(4),
        recall_at_16: recall(16),
    })
}

impl IjbReport {
    /// The report as the tables the command prints.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let pct = |v: f64| format!("{:.2}", 100.0 * v);
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), pct);
        let _ = writeln!(
            s,
            "{}: {} faces, {} templates (flip {}, norm score {}, detector score {})",
            self.benchmark,
            self.faces,
            self.templates,
            on(self.options.flip),
            on(self.options.norm_score),
            on(self.options.detector_score)
        );
        if let Some(fps) = self.embedding.faces_per_second {
            let _ = writeln!(
                s,
                "embedded {} faces in {:.1} s ({fps:.1} faces/s), {} from the cache",
                self.embedding.embedded, self.embedding.seconds, self.embedding.cached
            );
        } else {
            let _ = writeln!(s, "all {} faces from the cache", self.embedding.cached);
        }
        if !self.missing_faces.is_empty() {
            let _ = writeln!(
                s,
                "{} faces could not be used (see --json), {} templates are empty",
                self.missing_faces.len(),
                self.empty_templates
            );
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(
                s,
                "\n1:1 verification, {} pairs ({} mated), TAR (%) at FAR:",
                v.pairs, v.mated
            );
            let keys: Vec<&String> = v.tar_at_far.keys().rev().collect();
            let _ = writeln!(
                s,
                "| TAR at | {} | AUC |",
                keys.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(s, "|---|{}---:|", "---:|".repeat(keys.len()));
            let row = |values: &BTreeMap<String, f64>| {
                keys.iter()
                    .map(|k| pct(values[*k]))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            let _ = writeln!(
                s,
                "| nearest ROC point (insightface) | {} | {} |",
                row(&v.tar_at_far),
                pct(v.auc)
            );
            let _ = writeln!(
                s,
                "| FAR at most the target | {} | |",
                row(&v.tar_at_far_at_most)
            );
        }
        if let Some(id) = &self.identification {
            let _ = writeln!(
                s,
                "\n1:N identification, mixed probes (%), each gallery on its own:"
            );
            let _ = writeln!(
                s,
                "| gallery | templates | mated | non-mated | rank-1 | rank-5 | rank-10 | TPIR@FPIR 0.01 | TPIR@FPIR 0.1 |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            for (name, g) in [("G1", &id.g1), ("G2", &id.g2)] {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    g.gallery,
                    g.mated,
                    g.non_mated,
                    pct(g.rank1),
                    pct(g.rank5),
                    pct(g.rank10),
                    opt(g.tpir_at_fpir["0.01"]),
                    opt(g.tpir_at_fpir["0.1"])
                );
            }
            let j = &id.insightface_joined;
            let _ = writeln!(
                s,
                "insightface ijb_1n.py variant (G1 and G2 joined): rank-1 {}, rank-5 {}, \
                 rank-10 {}, TPIR@FPIR 0.01 {}, 0.1 {}",
                pct(j.rank1),
                pct(j.rank5),
                pct(j.rank10),
                pct(j.tpir_at_fpir["0.01"]),
                pct(j.tpir_at_fpir["0.1"])
            );
        }
        if let Some(r) = &self.retrieval {
            let _ = writeln!(
                s,
                "\nretrieval ({} templates of {} identities with >= {MIN_TEMPLATES_PER_IDENTITY}): \
                 mAP {}, R@1 {}, R@4 {}, R@16 {}",
                r.templates,
                r.identities,
                pct(r.map),
                pct(r.recall_at_1),
                pct(r.recall_at_4),
                pct(r.recall_at_16)
            );
        }
        for skip in &self.skipped {
            let _ = writeln!(s, "skipped {skip}");
        }
        s
    }
}

fn on(flag: bool) -> &'static str {
    if flag {
        "on"
    } else {
        "off"
    }
}

/// Writes the 1:1 ROC curve of `report` to `csv` and, with the `plot` feature, its plot beside
/// it (same name, `.png`), titled with `model`.
pub fn write_roc(report: &IjbReport, csv: &Path, model: &str) -> Result<(), String> {
    let Some(v) = &report.verification else {
        return Err("--roc needs the 1:1 protocol, which did not run".into());
    };
    write_roc_csv(&v.roc, csv).map_err(|e| format!("{}: cannot write: {e}", csv.display()))?;
    #[cfg(feature = "plot")]
    super::plot::write_roc_png(
        &v.roc,
        &format!("{} 1:1 ROC, {model}", report.benchmark),
        &csv.with_extension("png"),
    )?;
    #[cfg(not(feature = "plot"))]
    let _ = model;
    Ok(())
}

/// Writes the ROC curve as CSV (`far,tar,threshold`, FAR ascending), atomically.
pub fn write_roc_csv(curve: &[RocPoint], path: &Path) -> std::io::Result<()> {
    let mut text = String::from("far,tar,threshold\n");
    for p in curve {
        let _ = writeln!(text, "{},{},{}", p.far, p.tar, p.threshold);
    }
    crate::atomic::write_atomically(path, |file| {
        std::io::Write::write_all(file, text.as_bytes())
    })
}
