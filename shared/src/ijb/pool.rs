//! From face features to template features, as insightface pools them: each face's feature
//! (plus its mirror's, with the flip test) keeps its norm and is weighted by the detector's
//! faceness score; the faces of one media (the frames of a video) are averaged; a template is
//! the sum of its media, L2-normalised.

use super::meta::FaceRecord;
use serde::Serialize;
use std::collections::BTreeMap;

/// The pooling choices insightface's evaluation scripts expose (all on by default there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolOptions {
    /// Add the feature of the horizontally flipped crop (insightface's `F2`).
    pub flip: bool,
    /// Keep each face's feature norm, a quality signal (`N1`); off: L2-normalise first.
    pub norm_score: bool,
    /// Weight each face by its faceness score (`D1`).
    pub detector_score: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            flip: true,
            norm_score: true,
            detector_score: true,
        }
    }
}

/// The feature of each face that enters pooling, `dim` floats a face, from the raw embedder
/// outputs `plain` (and `flipped` when the flip test is on).
///
/// # Panics
///
/// If the lengths disagree with `faces` and `dim`, or `options.flip` is set without `flipped`.
pub fn face_features(
    faces: &[FaceRecord],
    dim: usize,
    plain: &[f32],
    flipped: Option<&[f32]>,
    options: PoolOptions,
) -> Vec<f32> {
    assert_eq!(plain.len(), faces.len() * dim, "one plain feature a face");
    let mut out = plain.to_vec();
    if options.flip {
        let flipped = flipped.expect("the flip test needs the flipped features");
        assert_eq!(flipped.len(), out.len(), "one flipped feature a face");
        out.iter_mut().zip(flipped).for_each(|(o, f)| *o += f);
    }
    for (row, face) in out.chunks_exact_mut(dim).zip(faces) {
        if !options.norm_score {
            crate::embedding::l2_normalize(row);
        }
        if options.detector_score {
            row.iter_mut().for_each(|v| *v *= face.faceness);
        }
    }
    out
}

/// Unit-length template features, one row per template, templates sorted by id.
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    /// Template ids, ascending.
    pub ids: Vec<u32>,
    /// Floats per feature.
    pub dim: usize,
    /// `ids.len()` rows of `dim`: unit length, or zero for a template none of whose faces
    /// could be read (it then scores 0 against everything).
    pub features: Vec<f32>,
    /// Templates whose features are zero for that reason.
    pub empty: Vec<u32>,
}

impl Templates {
    /// The row of template `id`, if it has one.
    pub fn get(&self, id: u32) -> Option<&[f32]> {
        let i = self.ids.binary_search(&id).ok()?;
        Some(&self.features[i * self.dim..(i + 1) * self.dim])
    }
}

/// Pools `features` (`dim` floats per face of `faces`) into templates; faces whose `present`
/// flag is false (unreadable crops) are left out.
pub fn pool_templates(
    faces: &[FaceRecord],
    features: &[f32],
    present: &[bool],
    dim: usize,
) -> Templates {
    // template -> media -> (sum of its faces, count), in f64 as numpy accumulates.
    let mut sums: BTreeMap<u32, BTreeMap<u32, (Vec<f64>, usize)>> = BTreeMap::new();
    for (i, face) in faces.iter().enumerate() {
        let media = sums.entry(face.template).or_default();
        if !present[i] {
            continue;
        }
        let (sum, count) = media
            .entry(face.media)
            .or_insert_with(|| (vec![0.0; dim], 0));
        for (s, &v) in sum.iter_mut().zip(&features[i * dim..(i + 1) * dim]) {
            *s += f64::from(v);
        }
        *count += 1;
    }
    let mut templates = Templates {
        ids: Vec::with_capacity(sums.len()),
        dim,
        features: Vec::with_capacity(sums.len() * dim),
        empty: Vec::new(),
    };
    for (template, media) in sums {
        let mut feature = vec![0.0f64; dim];
        for (sum, count) in media.values() {
            for (f, s) in feature.iter_mut().zip(sum) {
                *f += s / *count as f64;
            }
        }
        let norm = feature.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            feature.iter_mut().for_each(|v| *v /= norm);
        } else {
            templates.empty.push(template);
        }
        templates.ids.push(template);
        templates.features.extend(feature.iter().map(|&v| v as f32));
    }
    templates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(template: u32, media: u32, faceness: f32) -> FaceRecord {
        FaceRecord {
            image: String::new(),
            template,
            media,
            landmarks: [[0.0; 2]; 5],
            faceness,
        }
    }

    #[test]
    fn media_are_averaged_then_summed_then_normalised_by_hand() {
        // Template 9: media 1 has faces (2,0) and (0,2) -> mean (1,1); media 2 has (3,0).
        // Sum (4,1), norm sqrt(17). Template 4: one face (0,-5) -> (0,-1).
        let faces = [
            face(9, 1, 1.0),
            face(4, 3, 1.0),
            face(9, 2, 1.0),
            face(9, 1, 1.0),
        ];
        let features = [2.0, 0.0, 0.0, -5.0, 3.0, 0.0, 0.0, 2.0];
        let t = pool_templates(&faces, &features, &[true; 4], 2);
        assert_eq!(t.ids, [4, 9]);
        let s = 17f32.sqrt();
        assert_eq!(t.get(4).unwrap(), [0.0, -1.0]);
        let nine = t.get(9).unwrap();
        assert!((nine[0] - 4.0 / s).abs() < 1e-6 && (nine[1] - 1.0 / s).abs() < 1e-6);
        assert!(t.empty.is_empty());
        // Without the second face of media 1, media 1 is (2,0): sum (5,0).
        let t = pool_templates(&faces, &features, &[true, true, true, false], 2);
        assert_eq!(t.get(9).unwrap(), [1.0, 0.0]);
        // A template without readable faces is zero and listed.
        let t = pool_templates(&faces, &features, &[true, false, true, true], 2);
        assert_eq!(t.get(4).unwrap(), [0.0, 0.0]);
        assert_eq!(t.empty, [4]);
    }

    #[test]
    fn flip_norm_and_faceness_options_by_hand() {
        let faces = [face(1, 1, 0.5)];
        let plain = [3.0, 0.0];
        let flipped = [1.0, 4.0];
        let all = PoolOptions::default();
        // (3,0) + (1,4) = (4,4), times 0.5.
        assert_eq!(
            face_features(&faces, 2, &plain, Some(&flipped), all),
            [2.0, 2.0]
        );
        let no_flip = PoolOptions { flip: false, ..all };
        assert_eq!(face_features(&faces, 2, &plain, None, no_flip), [1.5, 0.0]);
        let unit = PoolOptions {
            norm_score: false,
            detector_score: false,
            ..all
        };
        let h = 0.5f32.sqrt();
        let got = face_features(&faces, 2, &plain, Some(&flipped), unit);
        assert!((got[0] - h).abs() < 1e-6 && (got[1] - h).abs() < 1e-6);
    }
}
