//! People: the gallery's faces grouped into persons, the user's corrections, search by person.
//!
//! [`neighbours`] finds each face's nearest faces, [`linkage`] groups them (ours: average
//! linkage with a calibrated threshold), [`immich`] is the baseline rule measured beside it,
//! [`store`] keeps people and assignments in the gallery and runs incremental updates,
//! [`decisions`] records the user's names, merges, splits, moves and rejections (and undoes
//! them; [`refused`] is why one is refused), [`names`] says what a name may be and how a stored
//! one is printed, [`suggest`] finds people that may be one, [`fusion`] ranks the gallery for a
//! person from all of their faces, [`evaluation`] scores the groupings and the fusions on
//! labelled photos.

pub mod decisions;
pub mod ente;
pub mod evaluation;
pub mod fusion;
pub mod immich;
pub mod linkage;
pub mod names;
pub mod neighbours;
pub mod refused;
pub mod store;
pub mod suggest;

use std::collections::HashMap;

/// A grouping problem: faces as rows of unit vectors, the people some already belong to, and
/// the rows to group.
#[derive(Debug, Clone)]
pub struct Gallery<'a> {
    /// `n x dim` unit embeddings, row-major.
    pub data: &'a [f32],
    /// Embedding size.
    pub dim: usize,
    /// Each row's person, when it has one (ids of existing people).
    pub person: Vec<Option<i64>>,
    /// Rows without a person to group now.
    pub pending: Vec<u32>,
    /// People each pending row must never join (the user's rejections).
    pub rejected: HashMap<u32, Vec<i64>>,
    /// Where each row was seen: faces seen together are never grouped into one person (ours;
    /// the baselines do not know this rule). Empty: not known, no such constraint.
    pub seen: Vec<Seen>,
}

/// Where a face was seen: in a photo, or in a video while its track was on screen. One photo,
/// or one moment of a video, shows a person once: two faces seen together are two people.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seen {
    /// The media row.
    pub media: i64,
    /// For a video's face track, the seconds it spans.
    pub span: Option<(f64, f64)>,
}

impl Seen {
    /// Whether the two faces were seen together: in one photo, or in one video at
    /// overlapping times.
    pub fn together(&self, other: &Seen) -> bool {
        self.media == other.media
            && match (self.span, other.span) {
                (Some((a0, a1)), Some((b0, b1))) => a0 <= b1 && b0 <= a1,
                _ => true,
            }
    }

    /// Whether any face of `a` was seen together with any of `b`; both sorted by media.
    pub fn any_together(a: &[Seen], b: &[Seen]) -> bool {
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].media.cmp(&b[j].media) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    let media = a[i].media;
                    let end_a = a[i..].iter().take_while(|s| s.media == media).count() + i;
                    let end_b = b[j..].iter().take_while(|s| s.media == media).count() + j;
                    if a[i..end_a]
                        .iter()
                        .any(|x| b[j..end_b].iter().any(|y| x.together(y)))
                    {
                        return true;
                    }
                    (i, j) = (end_a, end_b);
                }
            }
        }
        false
    }

    /// `a` and `b` (each sorted by media) as one list sorted by media.
    pub fn merged(a: &[Seen], b: &[Seen]) -> Vec<Seen> {
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            if j == b.len() || (i < a.len() && a[i].media <= b[j].media) {
                out.push(a[i]);
                i += 1;
            } else {
                out.push(b[j]);
                j += 1;
            }
        }
        out
    }
}

impl<'a> Gallery<'a> {
    /// Every row pending, nobody assigned: grouping from scratch.
    pub fn from_scratch(data: &'a [f32], dim: usize) -> Gallery<'a> {
        let n = data.len() / dim.max(1);
        Gallery {
            data,
            dim,
            person: vec![None; n],
            pending: (0..n as u32).collect(),
            rejected: HashMap::new(),
            seen: Vec::new(),
        }
    }
}

/// What a grouping decided for the pending rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grouping {
    /// Rows that join an existing person, by row.
    pub joins: Vec<(u32, i64)>,
    /// New people, each its rows in order; ordered by their first row.
    pub new_people: Vec<Vec<u32>>,
    /// Rows left unassigned, in order.
    pub unassigned: Vec<u32>,
}

impl Grouping {
    /// Puts every list in a canonical order, so that groupings compare and print stably.
    fn finish(&mut self) {
        self.joins.sort_unstable();
        self.unassigned.sort_unstable();
        for p in &mut self.new_people {
            p.sort_unstable();
        }
        self.new_people.sort_unstable_by_key(|p| p[0]);
    }

    /// The grouping of `pending` rows given each row's person after grouping: an existing
    /// person's id (>= 0) is a join, a negative id one of the new people the grouping made
    /// (numbered below every real id, so they never collide), none an unassigned row.
    fn from_persons(pending: &[u32], person: &[Option<i64>]) -> Grouping {
        let mut out = Grouping::default();
        let mut new_people: HashMap<i64, Vec<u32>> = HashMap::new();
        for &r in pending {
            match person[r as usize] {
                Some(p) if p < 0 => new_people.entry(p).or_default().push(r),
                Some(p) => out.joins.push((r, p)),
                None => out.unassigned.push(r),
            }
        }
        out.new_people = new_people.into_values().collect();
        out.finish();
        out
    }

    /// One label per row of an `n`-row gallery for scoring: existing people by id, new people
    /// and unassigned rows each a label of their own (an unassigned face is a singleton).
    pub fn labels(&self, gallery: &Gallery) -> Vec<u32> {
        let n = gallery.person.len();
        let mut labels = vec![u32::MAX; n];
        let mut next = 0u32;
        let mut person_label: HashMap<i64, u32> = HashMap::new();
        let mut fresh = || {
            next += 1;
            next - 1
        };
        for (r, p) in gallery.person.iter().enumerate() {
            if let Some(p) = p {
                labels[r] = *person_label.entry(*p).or_insert_with(&mut fresh);
            }
        }
        for &(r, p) in &self.joins {
            labels[r as usize] = *person_label.entry(p).or_insert_with(&mut fresh);
        }
        for group in &self.new_people {
            let l = fresh();
            for &r in group {
                labels[r as usize] = l;
            }
        }
        for l in labels.iter_mut().filter(|l| **l == u32::MAX) {
            *l = fresh();
        }
        labels
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use smoothface_shared::embedding::l2_normalize;

    /// `people` clusters of `each` unit vectors around random centres, with noise `spread`
    /// (relative to the centre's unit length), people in order.
    pub(crate) fn clustered(
        people: usize,
        each: usize,
        dim: usize,
        spread: f32,
        seed: u64,
    ) -> Vec<f32> {
        let mut rng = smoothface_tests::Rng::new(seed);
        let mut data = Vec::with_capacity(people * each * dim);
        let scale = spread / (dim as f32).sqrt();
        for _ in 0..people {
            let mut centre: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
            l2_normalize(&mut centre);
            for _ in 0..each {
                let mut v: Vec<f32> = centre
                    .iter()
                    .map(|c| c + scale * rng.normal() as f32)
                    .collect();
                l2_normalize(&mut v);
                data.extend(v);
            }
        }
        data
    }

    #[test]
    fn labels_give_unassigned_rows_their_own() {
        let data = [1.0f32; 5];
        let mut g = Gallery::from_scratch(&data, 1);
        g.person[4] = Some(9);
        g.pending = vec![0, 1, 2, 3];
        let out = Grouping {
            joins: vec![(3, 9)],
            new_people: vec![vec![0, 2]],
            unassigned: vec![1],
        };
        let l = out.labels(&g);
        assert_eq!(l[0], l[2]);
        assert_eq!(l[3], l[4]);
        let distinct: std::collections::HashSet<u32> = l.iter().copied().collect();
        assert_eq!(distinct.len(), 3); // {0,2}, {3,4}, {1}
    }
}
