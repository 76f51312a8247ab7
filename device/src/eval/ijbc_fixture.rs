//! `smoothface eval ijbc-fixture`: an IJB-C-layout set made from a folder-per-person tree, so a
//! model can be checked with the IJB tools on photos anyone has. Landmarks and faceness come
//! from our detector; each person's photos become templates of a few photos, the first two of a
//! template sharing one media (as a video's frames do); every pair of templates is a 1:1 pair;
//! each person's first template joins gallery G1 or G2 (alternately) and the others are probes.

use crate::eval::Missing;
use crate::pipeline::{FacePick, Pipeline};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use smoothface_shared::protocol;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How the fixture is cut.
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// Photos per template.
    pub photos_per_template: usize,
    /// Most templates taken from one person (the rest of their photos are left out).
    pub max_templates_per_person: usize,
    /// Most people taken (in name order), of those with at least two templates' worth of photos
    /// (photos past `max_templates_per_person` templates are not looked at).
    pub max_people: usize,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            photos_per_template: 3,
            max_templates_per_person: 8,
            max_people: 100,
        }
    }
}

/// What was written.
#[derive(Debug, Serialize)]
pub struct FixtureReport {
    /// The set's folder.
    pub dir: PathBuf,
    /// People kept.
    pub people: usize,
    /// Their folder names, in subject id order (subject 1 first): a training run must leave
    /// them out for the set to measure held-out people.
    pub names: Vec<String>,
    /// Templates.
    pub templates: usize,
    /// Face crops.
    pub faces: usize,
    /// 1:1 pairs, and of them same-person.
    pub pairs: usize,
    /// Same-person pairs.
    pub mated_pairs: usize,
    /// Gallery templates in G1 and G2.
    pub gallery: [usize; 2],
    /// Probe templates.
    pub probes: usize,
    /// Photos left out: unreadable or without a face.
    pub skipped: Vec<Missing>,
}

/// One usable photo: its file and the face the detector found.
struct Shot {
    path: PathBuf,
    landmarks: [[f32; 2]; 5],
    score: f32,
}

/// Builds the set in `out`, which must not exist yet; it is written in a sibling folder and
/// renamed into place, so a killed run leaves nothing half-made.
pub fn build(
    pipeline: &Pipeline,
    src: &Path,
    out: &Path,
    options: &FixtureOptions,
    progress: bool,
) -> Result<FixtureReport> {
    if options.photos_per_template == 0 || options.max_templates_per_person < 2 {
        bail!("a template needs a photo and a person at least two templates");
    }
    if out.exists() {
        bail!("{}: already exists; give a new folder", out.display());
    }
    let per = options.photos_per_template;
    // Only people with enough photos are looked at; a few spare ones stand in for people
    // whose photos turn out to have too few faces.
    let people: Vec<protocol::Identity> = protocol::folder_per_person(src)?
        .into_iter()
        .filter(|p| p.images.len() >= 2 * per)
        .take(options.max_people + options.max_people / 10 + 2)
        .map(|mut p| {
            p.images.truncate(per * options.max_templates_per_person);
            p
        })
        .collect();
    let paths: Vec<(usize, &PathBuf)> = people
        .iter()
        .enumerate()
        .flat_map(|(i, p)| p.images.iter().map(move |im| (i, im)))
        .collect();
    let bar = crate::progress::photos_bar(paths.len(), progress);
    let found: Vec<(usize, Result<Shot, Missing>)> = paths
        .par_iter()
        .map(|&(person, path)| {
            let missing = |reason: String| Missing {
                path: path.display().to_string(),
                reason,
            };
            let shot = match pipeline.decode(path) {
                Err(e) => Err(missing(e.reason())),
                Ok(img) => match pipeline.pick_face(&img, FacePick::Largest) {
                    Err(e) => Err(missing(format!("{e:#}"))),
                    Ok(None) => Err(missing("no face found".into())),
                    Ok(Some(face)) => Ok(Shot {
                        path: path.clone(),
                        landmarks: face.landmarks,
                        score: face.score,
                    }),
                },
            };
            bar.inc(1);
            (person, shot)
        })
        .collect();
    bar.finish_and_clear();

    let mut shots: Vec<Vec<Shot>> = people.iter().map(|_| Vec::new()).collect();
    let mut skipped = Vec::new();
    for (person, shot) in found {
        match shot {
            Ok(s) => shots[person].push(s),
            Err(m) => skipped.push(m),
        }
    }
    let (names, kept): (Vec<String>, Vec<&[Shot]>) = people
        .iter()
        .zip(&shots)
        .filter(|(_, s)| s.len() >= 2 * per)
        .take(options.max_people)
        .map(|(p, s)| (p.name.clone(), s.as_slice()))
        .unzip();
    if kept.len() < 2 {
        bail!(
            "{}: {} people have at least {} photos with a face; a fixture needs two",
            src.display(),
            kept.len(),
            2 * per
        );
    }

    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)
        .with_context(|| format!("{}: cannot create", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".ijbc-fixture.")
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create a folder", parent.display()))?;
    let root = staging.path();
    std::fs::create_dir_all(root.join("meta"))?;
    std::fs::create_dir_all(root.join("loose_crop"))?;

    let (mut tid_mid, mut points) = (String::new(), String::new());
    // Per template: (id, subject, its image names).
    let mut templates: Vec<(u32, u32, Vec<String>)> = Vec::new();
    let (mut image_no, mut media_no) = (0u32, 0u32);
    for (p, person_shots) in kept.iter().enumerate() {
        let subject = p as u32 + 1;
        for group in person_shots.chunks(per) {
            let template = templates.len() as u32 + 1;
            let mut names = Vec::new();
            for (k, shot) in group.iter().enumerate() {
                // The template's first two photos are one media, as a video's frames are.
                if k != 1 {
                    media_no += 1;
                }
                image_no += 1;
                let ext = shot
                    .path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("img")
                    .to_ascii_lowercase();
                let name = format!("{image_no}.{ext}");
                std::fs::copy(&shot.path, root.join("loose_crop").join(&name))
                    .with_context(|| format!("{}: cannot copy", shot.path.display()))?;
                let _ = writeln!(tid_mid, "{name} {template} {media_no}");
                let _ = write!(points, "{name}");
                for [x, y] in shot.landmarks {
                    let _ = write!(points, " {x:.3} {y:.3}");
                }
                let _ = writeln!(points, " {:.6}", shot.score);
                names.push(name);
            }
            templates.push((template, subject, names));
        }
    }

    let mut pairs = String::new();
    let mut mated_pairs = 0;
    let mut pair_count = 0;
    for (i, a) in templates.iter().enumerate() {
        for b in &templates[i + 1..] {
            let same = a.1 == b.1;
            mated_pairs += usize::from(same);
            pair_count += 1;
            let _ = writeln!(pairs, "{} {} {}", a.0, b.0, u8::from(same));
        }
    }

    let header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n";
    let mut lists = [header.to_owned(), header.to_owned(), header.to_owned()];
    let mut gallery = [0usize; 2];
    let mut probes = 0;
    let mut seen_subject = std::collections::HashSet::new();
    for (template, subject, names) in &templates {
        let list = if seen_subject.insert(*subject) {
            let g = ((subject - 1) % 2) as usize;
            gallery[g] += 1;
            g
        } else {
            probes += 1;
            2
        };
        for name in names {
            let _ = writeln!(lists[list], "{template},{subject},{name}");
        }
    }

    let meta = root.join("meta");
    for (file, text) in [
        ("ijbc_face_tid_mid.txt", &tid_mid),
        ("ijbc_name_5pts_score.txt", &points),
        ("ijbc_template_pair_label.txt", &pairs),
        ("ijbc_1N_gallery_G1.csv", &lists[0]),
        ("ijbc_1N_gallery_G2.csv", &lists[1]),
        ("ijbc_1N_probe_mixed.csv", &lists[2]),
    ] {
        std::fs::write(meta.join(file), text)
            .with_context(|| format!("{}: cannot write", meta.join(file).display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, out)
        .with_context(|| format!("cannot move {} to {}", staged.display(), out.display()))?;
    Ok(FixtureReport {
        dir: out.to_path_buf(),
        people: kept.len(),
        names,
        templates: templates.len(),
        faces: image_no as usize,
        pairs: pair_count,
        mated_pairs,
        gallery,
        probes,
        skipped,
    })
}
