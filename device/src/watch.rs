//! Live recognition on any [`FrameSource`]: `camera --enrol` turns a person's good frames into
//! one vector stored under their name; `camera --watch` tracks the faces of every frame and
//! says who each track is (a named person) and which gallery photo it looks most like.

use crate::frames::FrameSource;
use crate::gallery::{db, search::FaceMatrix};
use crate::pipeline::{EmbeddedFace, Pipeline};
use crate::tracks::{Pooling, Track, Tracker, TrackerConfig};
use anyhow::{bail, Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use smoothface_shared::align::align_face;
use smoothface_shared::embedding::{dot, l2_normalize, mean_embedding};

/// Which frames an enrolment keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnrolQuality {
    /// Shorter side of the face box, in pixels.
    pub min_size: f32,
    /// Detector score.
    pub min_score: f32,
    /// Variance of the Laplacian of the aligned grey crop: lower is blurred.
    pub min_sharpness: f32,
}

impl EnrolQuality {
    /// The defaults. Sharpness 80: clips of five `lfw-devtrain` people (docs/benchmarks.md, "Video and
    /// camera") have medians of 132 to 267, and 34 to 70 under a Gaussian blur of sigma 2.
    pub const DEFAULT: EnrolQuality = EnrolQuality {
        min_size: 80.0,
        min_score: crate::detector::DEFAULT_GROUP_MIN_SCORE,
        min_sharpness: 80.0,
    };
}

/// Fewest good frames an enrolment accepts.
pub const MIN_ENROL_FRAMES: usize = 3;

/// What an enrolment did.
#[derive(Debug, Clone, Serialize)]
pub struct Enrolled {
    /// The person, new or existing.
    pub person: i64,
    /// Their name.
    pub name: String,
    /// Frames looked at.
    pub frames_seen: usize,
    /// Frames kept and averaged.
    pub frames_kept: usize,
    /// Why the others were not kept, counted by reason.
    pub rejected: std::collections::BTreeMap<&'static str, usize>,
    /// Median sharpness of the frames with one large, sure face (the measure that
    /// `min_sharpness` bounds), to see how far a rejected enrolment was from passing.
    pub median_sharpness: Option<f32>,
}

/// Variance of the 4-neighbour Laplacian of a grey image (`w x h`, row-major): the usual
/// focus measure; a blurred picture has weak second derivatives.
pub fn laplacian_variance(grey: &[f32], w: usize, h: usize) -> f32 {
    if w < 3 || h < 3 {
        return 0.0;
    }
    let mut values = Vec::with_capacity((w - 2) * (h - 2));
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let c = grey[y * w + x];
            values.push(
                grey[(y - 1) * w + x]
                    + grey[(y + 1) * w + x]
                    + grey[y * w + x - 1]
                    + grey[y * w + x + 1]
                    - 4.0 * c,
            );
        }
    }
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n
}

/// The sharpness of a face: [`laplacian_variance`] of its aligned 112x112 crop in grey.
fn face_sharpness(image: &image::RgbImage, face: &EmbeddedFace) -> f32 {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let Some(crop) = align_face(image.as_raw(), w, h, &face.face.landmarks) else {
        return 0.0;
    };
    let grey: Vec<f32> = crop
        .chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let side = (grey.len() as f64).sqrt() as usize;
    laplacian_variance(&grey, side, side)
}

/// Captures up to `frames` frames, keeps those with one face that is large, sure and sharp,
/// and stores the mean of their embeddings as an enrolment of the person named `name` (created
/// if no person has that name).
pub fn enrol(
    conn: &mut Connection,
    pipeline: &Pipeline,
    source: &mut dyn FrameSource,
    name: &str,
    frames: usize,
    quality: EnrolQuality,
) -> Result<Enrolled> {
    // Checked before the camera runs: the same rule as `people name`.
    let name = crate::people::names::clean(name)?;
    let name = name.as_str();
    let mut kept: Vec<Vec<f32>> = Vec::new();
    let mut sharpness = Vec::new();
    let mut rejected = std::collections::BTreeMap::new();
    let mut seen = 0;
    while seen < frames {
        let Some(frame) = source.next_frame()? else {
            break;
        };
        seen += 1;
        let faces = pipeline.analyze(&frame.image)?;
        let verdict = match faces.as_slice() {
            [] => Err("no face"),
            [f] => {
                let side = (f.face.bbox[2] - f.face.bbox[0]).min(f.face.bbox[3] - f.face.bbox[1]);
                if side < quality.min_size {
                    Err("face too small")
                } else if f.face.score < quality.min_score {
                    Err("detector unsure")
                } else {
                    let sharp = face_sharpness(&frame.image, f);
                    sharpness.push(sharp);
                    if sharp < quality.min_sharpness {
                        Err("blurred")
                    } else {
                        Ok(f.embedding.clone())
                    }
                }
            }
            _ => Err("more than one face"),
        };
        match verdict {
            Ok(v) => kept.push(v),
            Err(why) => *rejected.entry(why).or_insert(0) += 1,
        }
    }
    sharpness.sort_by(f32::total_cmp);
    let median_sharpness = sharpness.get(sharpness.len() / 2).copied();
    if kept.len() < MIN_ENROL_FRAMES.min(frames) {
        bail!(
            "{}: only {} of {seen} frames had one large, sharp face (rejected: {rejected:?}; \
             median sharpness {median_sharpness:?}, {} needed); enrolment needs {}: face the \
             camera alone, closer, in better light",
            source.name(),
            kept.len(),
            quality.min_sharpness,
            MIN_ENROL_FRAMES.min(frames)
        );
    }
    let vector = mean_embedding(kept.iter().map(Vec::as_slice)).context("no frame kept")?;
    let model_id = crate::gallery::model::adopt(conn, &pipeline.embedder)?;
    let tx = conn.transaction()?;
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM people WHERE model_id = ?1 AND name = ?2 ORDER BY id LIMIT 1",
            params![model_id, name],
            |r| r.get(0),
        )
        .optional()?;
    let person = match existing {
        Some(id) => id,
        None => crate::people::store::create_person(&tx, model_id, Some(name))?,
    };
    tx.execute(
        "INSERT INTO enrolments (person_id, embedding, frames, source, model_id)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            person,
            db::to_blob(&vector),
            kept.len() as i64,
            source.name(),
            model_id
        ],
    )?;
    tx.commit()?;
    Ok(Enrolled {
        person,
        name: name.to_string(),
        frames_seen: seen,
        frames_kept: kept.len(),
        rejected,
        median_sharpness,
    })
}

/// A named person as the watch loop knows them: the normalised mean of their enrolments and
/// their gallery faces.
struct Known {
    name: String,
    vector: Vec<f32>,
}

/// Every named person of a model with something to recognise them by.
fn known_people(conn: &Connection, model_id: i64, dim: usize) -> Result<Vec<Known>> {
    let mut stmt = conn.prepare(
        "SELECT p.id, p.name, e.embedding FROM people p JOIN enrolments e ON e.person_id = p.id
         WHERE p.model_id = ?1 AND e.model_id = ?1 AND p.name IS NOT NULL
         UNION ALL
         SELECT p.id, p.name, f.embedding FROM people p JOIN faces f ON f.person_id = p.id
         WHERE p.model_id = ?1 AND p.name IS NOT NULL
         ORDER BY 1",
    )?;
    let mut rows = stmt.query([model_id])?;
    let mut people: Vec<(i64, Known)> = Vec::new();
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        let v = db::from_blob(r.get_ref(2)?.as_blob()?);
        if v.len() != dim {
            continue; // a damaged row recognises no one
        }
        match people.last_mut() {
            Some((last, k)) if *last == id => {
                k.vector.iter_mut().zip(&v).for_each(|(a, b)| *a += b)
            }
            _ => people.push((
                id,
                Known {
                    name: r.get(1)?,
                    vector: v,
                },
            )),
        }
    }
    Ok(people
        .into_iter()
        .map(|(_, mut k)| {
            l2_normalize(&mut k.vector);
            k
        })
        .collect())
}

/// One line of `camera --watch`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// `appeared`, `identified` (its best match changed) or `left` (at its last frame).
    pub event: &'static str,
    /// Seconds since the source started.
    pub time: f64,
    /// The track, numbered from 0 in order of appearance.
    pub track: usize,
    /// Its box in the latest frame it was seen in.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The named person it is, if one scores at least the threshold.
    pub person: Option<String>,
    /// Its cosine similarity to the best-matching named person (`null` with none to match).
    pub score: Option<f32>,
    /// The gallery photo or video whose face it looks most like.
    pub best_media: Option<String>,
    /// That face's cosine similarity.
    pub best_media_score: Option<f32>,
}

/// What a watch run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchReport {
    /// Frames analysed.
    pub frames: usize,
    /// Tracks followed.
    pub tracks: usize,
    /// Frames a live source dropped while the analysis was busy.
    pub dropped: usize,
}

/// Watches a source until it ends (a file) or fails (a camera that stops): every frame's faces
/// tracked, each track matched against the named people and the gallery; `emit` is called for
/// each event as it happens.
pub fn watch(
    conn: &Connection,
    pipeline: &Pipeline,
    source: &mut dyn FrameSource,
    min_score: f32,
    emit: &mut dyn FnMut(&Event) -> Result<()>,
) -> Result<WatchReport> {
    let emb = &pipeline.embedder;
    let (model_id, dim) = db::find_model(conn, &emb.model_id)?.unwrap_or((-1, emb.dim()));
    let known = known_people(conn, model_id, dim)?;
    let mut gallery = FaceMatrix::load(conn, model_id, dim)?;
    // Every frame's faces query the gallery: large galleries scan compact codes.
    gallery.compact_when_large();
    let mut tracker = Tracker::new(TrackerConfig::for_model(&emb.thresholds));
    let mut matched: std::collections::HashMap<usize, Option<String>> = Default::default();
    let mut report = WatchReport::default();
    let matcher = Matcher {
        conn,
        known: &known,
        gallery: &gallery,
        min_score,
    };
    while let Some(frame) = source.next_frame()? {
        report.frames += 1;
        let faces = pipeline.analyze(&frame.image)?;
        let ids = tracker.update(frame.time_s, faces);
        for track in tracker.take_ended() {
            matched.remove(&track.id);
            let who = matcher.identify(&track);
            emit(&matcher.event("left", track.end_s, &track, who)?)?;
        }
        for id in ids {
            let track = tracker.track(id).expect("just updated");
            // Who it is costs a dot product per named person; the gallery's best match (a scan
            // of every face) is looked up only for the events printed.
            let who = matcher.identify(track);
            let kind = match matched.get(&id) {
                None => {
                    report.tracks += 1;
                    "appeared"
                }
                Some(before) if *before != who.person => "identified",
                Some(_) => continue,
            };
            matched.insert(id, who.person.clone());
            emit(&matcher.event(kind, frame.time_s, track, who)?)?;
        }
    }
    for track in tracker.finish() {
        let who = matcher.identify(&track);
        emit(&matcher.event("left", track.end_s, &track, who)?)?;
    }
    report.dropped = source.dropped();
    Ok(report)
}

/// Matches tracks against the named people and the gallery.
struct Matcher<'a> {
    conn: &'a Connection,
    known: &'a [Known],
    gallery: &'a FaceMatrix,
    min_score: f32,
}

/// A track's vector and the named person it is, if any.
struct Identity {
    vector: Vec<f32>,
    person: Option<String>,
    score: Option<f32>,
}

impl Matcher<'_> {
    /// The named person most like the track, named when they score at least `min_score`.
    fn identify(&self, track: &Track) -> Identity {
        let vector = track.embedding(Pooling::DEFAULT);
        let best_known = self
            .known
            .iter()
            .map(|k| (k, dot(&vector, &k.vector)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Identity {
            person: best_known
                .filter(|(_, s)| *s >= self.min_score)
                .map(|(k, _)| k.name.clone()),
            score: best_known.map(|(_, s)| s),
            vector,
        }
    }

    /// The event for a track, with the gallery's best match.
    fn event(&self, kind: &'static str, time: f64, track: &Track, who: Identity) -> Result<Event> {
        let best_media = match self.gallery.rank_media(&who.vector, 1, -1.0).first() {
            Some(hit) => Some((db::media_path(self.conn, hit.media_id)?, hit.score)),
            None => None,
        };
        Ok(Event {
            event: kind,
            // Milliseconds are as fine as frame times get; more digits are float noise.
            time: (time * 1000.0).round() / 1000.0,
            track: track.id,
            bbox: track.last.bbox,
            person: who.person,
            score: who.score,
            best_media_score: best_media.as_ref().map(|m| m.1),
            best_media: best_media.map(|m| m.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_laplacian_variance_is_hand_computable_and_falls_with_blur() {
        // A single bright pixel in a 3x3 image: one Laplacian value, -4 * 10, so variance 0;
        // in 4x3, two values (-40 and 10): mean -15, variance 625.
        let mut g = vec![0.0; 9];
        g[4] = 10.0;
        assert_eq!(laplacian_variance(&g, 3, 3), 0.0);
        let mut g = vec![0.0; 12];
        g[5] = 10.0;
        assert_eq!(laplacian_variance(&g, 4, 3), 625.0);

        // A checkerboard loses nearly all its variance to a 2-pixel Gaussian blur.
        let board = image::GrayImage::from_fn(64, 64, |x, y| {
            image::Luma([if (x / 4 + y / 4) % 2 == 0 { 220 } else { 30 }])
        });
        let blurred = image::imageops::blur(&board, 2.0);
        let as_f32 = |i: &image::GrayImage| i.pixels().map(|p| f32::from(p[0])).collect::<Vec<_>>();
        let sharp = laplacian_variance(&as_f32(&board), 64, 64);
        let soft = laplacian_variance(&as_f32(&blurred), 64, 64);
        assert!(soft < sharp / 10.0, "sharp {sharp}, blurred {soft}");
    }
}
