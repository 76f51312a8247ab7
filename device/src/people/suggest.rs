//! "Same person?": pairs of people that may be one, for the user to answer (`people suggest`,
//! the web app's cards). A split person is repaired by answering questions, not by hunting.
//!
//! Every pair of people is scored by the mean similarity of their faces, relative to how alike
//! each person's own faces are ([`super::linkage::relative_link`], the grouping's second pass):
//! the parts of one person split by the grouping score high, two people low. Pairs that cannot
//! be one person are left out: a face of each seen together (one photo, or one moment of a
//! video), or a user's `keep-apart`. The best pairs come first.

use super::linkage::relative_link;
use super::store::{self, Whose};
use super::Seen;
use anyhow::Result;
use ndarray::ArrayView2;
use rusqlite::Connection;
use serde::Serialize;
use smoothface_shared::embedding::dot;
use std::collections::{BTreeMap, HashSet};

/// The `top` best suggestions among the people of a model in the gallery (0: all), best
/// first; the user's `keep-apart` pairs left out.
pub fn for_gallery(conn: &Connection, model_id: i64, top: usize) -> Result<Vec<Suggestion>> {
    let (faces, _damaged) = store::faces(conn, model_id, Whose::All, true)?;
    let mut people: BTreeMap<i64, PersonFaces> = BTreeMap::new();
    for f in faces {
        let (Some(person), Some(v)) = (f.person, f.embedding.as_ref()) else {
            continue;
        };
        let p = people.entry(person).or_insert_with(|| PersonFaces {
            id: person,
            sum: vec![0.0; v.len()],
            size: 0,
            seen: Vec::new(),
            face: f.face,
            area: 0.0,
        });
        p.sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
        p.size += 1;
        p.seen.push(f.seen());
        // The face shown is the person's largest, as `people list` shows.
        let area = (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]);
        if area > p.area {
            (p.face, p.area) = (f.face, area);
        }
    }
    let mut people: Vec<PersonFaces> = people.into_values().collect();
    for p in &mut people {
        p.seen.sort_by_key(|s| s.media);
    }
    Ok(rank(&people, &kept_apart(conn)?, top))
}

/// The user's `keep-apart` pairs, smaller id first.
pub fn kept_apart(conn: &Connection) -> Result<HashSet<(i64, i64)>> {
    let mut stmt = conn.prepare("SELECT a, b FROM keep_apart")?;
    let pairs = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(pairs)
}

/// One person as the suggestions see them.
#[derive(Debug, Clone)]
pub struct PersonFaces {
    /// Person id.
    pub id: i64,
    /// The sum of their faces' unit embeddings.
    pub sum: Vec<f32>,
    /// Their faces.
    pub size: usize,
    /// Where each face was seen, sorted by media.
    pub seen: Vec<Seen>,
    /// The face shown for them.
    pub face: i64,
    /// That face's box area, pixels (to pick the largest).
    pub area: f32,
}

/// A pair that may be one person.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// One person's id.
    pub a: i64,
    /// The other's.
    pub b: i64,
    /// How alike, relative to how alike each one's own faces are (1 at most).
    pub score: f32,
    /// A face of `a` to show.
    pub a_face: i64,
    /// A face of `b` to show.
    pub b_face: i64,
}

/// The `top` best pairs of `people` (0: every pair scoring above zero), best first; pairs in
/// `apart` (smaller id first) are left out, as are people with a face each seen together.
pub fn rank(people: &[PersonFaces], apart: &HashSet<(i64, i64)>, top: usize) -> Vec<Suggestion> {
    let n = people.len();
    if n < 2 {
        return Vec::new();
    }
    let dim = people[0].sum.len();
    let tight: Vec<f32> = people.iter().map(self_link).collect();
    let means: Vec<f32> = people
        .iter()
        .flat_map(|p| p.sum.iter().map(move |x| x / p.size as f32))
        .collect();
    let m = ArrayView2::from_shape((n, dim), &means).expect("people x dim");
    let links = m.dot(&m.t());
    let mut pairs: Vec<Suggestion> = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            let score = relative_link(links[[i, j]], tight[i], tight[j]).min(1.0);
            if score <= 0.0 {
                continue;
            }
            let (a, b) = (&people[i], &people[j]);
            let key = (a.id.min(b.id), a.id.max(b.id));
            if apart.contains(&key) || Seen::any_together(&a.seen, &b.seen) {
                continue;
            }
            pairs.push(Suggestion {
                a: key.0,
                b: key.1,
                score,
                a_face: if a.id == key.0 { a.face } else { b.face },
                b_face: if a.id == key.0 { b.face } else { a.face },
            });
        }
    }
    pairs.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    if top > 0 {
        pairs.truncate(top);
    }
    pairs
}

/// A person's mean similarity between two of their faces (1 for one face).
fn self_link(p: &PersonFaces) -> f32 {
    if p.size < 2 {
        return 1.0;
    }
    let n = p.size as f32;
    (dot(&p.sum, &p.sum) - n) / (n * (n - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(id: i64, faces: &[[f32; 2]], media: &[i64]) -> PersonFaces {
        let mut sum = vec![0.0; 2];
        for f in faces {
            sum[0] += f[0];
            sum[1] += f[1];
        }
        let mut seen: Vec<Seen> = media
            .iter()
            .map(|&m| Seen {
                media: m,
                span: None,
            })
            .collect();
        seen.sort_by_key(|s| s.media);
        PersonFaces {
            id,
            sum,
            size: faces.len(),
            seen,
            face: id * 10,
            area: 0.0,
        }
    }

    fn at(deg: f32) -> [f32; 2] {
        [deg.to_radians().cos(), deg.to_radians().sin()]
    }

    #[test]
    fn pairs_are_ranked_by_their_relative_link() {
        // Each person two faces 10 degrees apart (their own link cos 10), about 0, 10 and 95
        // degrees. Mean link of 1 and 2: the four pairs at 0, 10, 10, 20 degrees average
        // cos^2(5) cos(10); relative: cos^2(5) = 0.99240. Of 2 and 3 (means 85 degrees apart):
        // cos^2(5) cos(85) / cos(10) = 0.08783. Of 1 and 3 (95 degrees): below zero, not listed.
        let people = [
            person(1, &[at(-5.0), at(5.0)], &[1, 2]),
            person(2, &[at(5.0), at(15.0)], &[3, 4]),
            person(3, &[at(90.0), at(100.0)], &[5, 6]),
        ];
        let got = rank(&people, &HashSet::new(), 0);
        let pairs: Vec<(i64, i64)> = got.iter().map(|s| (s.a, s.b)).collect();
        assert_eq!(pairs, vec![(1, 2), (2, 3)]);
        assert!((got[0].score - 0.99240).abs() < 1e-4, "{got:?}");
        assert!((got[1].score - 0.08783).abs() < 1e-4, "{got:?}");
        assert_eq!((got[0].a_face, got[0].b_face), (10, 20));
        assert_eq!(rank(&people, &HashSet::new(), 1).len(), 1);
    }

    #[test]
    fn kept_apart_and_seen_together_pairs_are_never_suggested() {
        let people = [
            person(1, &[at(0.0), at(2.0)], &[1, 2]),
            person(2, &[at(1.0), at(3.0)], &[2, 3]),
            person(3, &[at(4.0), at(6.0)], &[4, 5]),
        ];
        // 1 and 2 share photo 2: never one person.
        let pairs: Vec<(i64, i64)> = rank(&people, &HashSet::new(), 0)
            .iter()
            .map(|s| (s.a, s.b))
            .collect();
        assert_eq!(pairs, vec![(2, 3), (1, 3)]);
        let apart = HashSet::from([(2, 3)]);
        let pairs: Vec<(i64, i64)> = rank(&people, &apart, 0)
            .iter()
            .map(|s| (s.a, s.b))
            .collect();
        assert_eq!(pairs, vec![(1, 3)]);
    }
}
