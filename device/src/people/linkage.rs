//! Our grouping: average linkage over the faces' nearest-neighbour graph, with a calibrated
//! threshold and the user's decisions as constraints.
//!
//! Average linkage (UPGMA) merges, at each step, the two groups whose faces are the most similar
//! on average, and stops when no pair of groups is at least [`LinkageConfig::threshold`]
//! similar on average. Because the faces are unit vectors, the mean similarity of every pair
//! across two groups is `sum(A) · sum(B) / (|A| |B|)`: each group keeps the sum of its faces and
//! the linkage is exact, in one dot product, however large the groups. Only groups joined by an
//! edge are compared: a pending face's nearest pending faces, and every person whose mean face
//! it is at least `threshold` similar to (a pair of groups whose mean similarity is above the
//! threshold has a member above it). Unlike single linkage (connected
//! components, Chinese whispers) one look-alike pair of faces cannot chain two people together:
//! merging two siblings takes their faces being similar on the whole.
//!
//! Incremental: people already in the gallery enter as fixed groups. Pending faces join them or
//! each other; two existing people are never merged (that is the user's call), and a face the
//! user rejected from a person never joins it.

use super::neighbours::{gather, neighbours, similarities, Neighbour};
use super::{Gallery, Grouping, Seen};
use ndarray::ArrayView2;
use rayon::prelude::*;
use smoothface_shared::embedding::dot;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// The parameters of our grouping.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LinkageConfig {
    /// First pass: smallest mean cosine similarity between two groups that are merged.
    pub threshold: f32,
    /// Second pass: smallest mean similarity of two groups relative to their own spread
    /// ([`relative_link`]) for them to merge; `None`: no second pass.
    pub relative: Option<f32>,
    /// Second pass: smallest plain mean similarity of two groups that merge.
    pub floor: f32,
    /// Neighbours per face in the graph.
    pub k: usize,
    /// Faces a new person needs; smaller groups stay unassigned until more faces arrive.
    pub min_faces: usize,
}

impl LinkageConfig {
    /// Neighbours per face in the graph, whatever the model.
    pub const K: usize = 32;
    /// Faces a new person needs, whatever the model.
    pub const MIN_FACES: usize = 2;

    /// Our grouping in one pass at `threshold`, with the default graph and person size.
    pub fn at(threshold: f32) -> LinkageConfig {
        LinkageConfig {
            threshold,
            relative: None,
            floor: threshold,
            k: Self::K,
            min_faces: Self::MIN_FACES,
        }
    }

    /// Our grouping in two passes: at `threshold`, then groups whose relative link is at least
    /// `relative` and plain link at least `floor`.
    pub fn two_pass(threshold: f32, relative: f32, floor: f32) -> LinkageConfig {
        LinkageConfig {
            relative: Some(relative),
            floor,
            ..LinkageConfig::at(threshold)
        }
    }

    /// Our grouping for a model: its calibrated `link` thresholds (docs/design.md, "People").
    pub fn for_model(t: &smoothface_shared::manifest::Thresholds) -> LinkageConfig {
        match (t.link_relative, t.link_floor) {
            (Some(relative), Some(floor)) => LinkageConfig::two_pass(t.link, relative, floor),
            _ => LinkageConfig::at(t.link),
        }
    }

    /// The lowest plain similarity either pass merges at: the neighbour graph's floor.
    pub fn lowest(&self) -> f32 {
        match self.relative {
            Some(_) => self.threshold.min(self.floor),
            None => self.threshold,
        }
    }
}

/// A group while merging; the default is a dead, empty one (what a merged-away group becomes).
#[derive(Default)]
struct Group {
    sum: Vec<f32>,
    size: usize,
    /// The existing person it is, if any.
    person: Option<i64>,
    /// People some face of it was rejected from.
    rejected: Vec<i64>,
    /// Where its faces were seen, by media.
    seen: Vec<Seen>,
    /// Pending faces in it.
    pending: Vec<u32>,
    neighbours: HashSet<u32>,
    version: u32,
    alive: bool,
}

/// A candidate merge: ordered by linkage, then by the groups' ids for determinism.
#[derive(PartialEq)]
struct Candidate {
    link: f32,
    a: u32,
    b: u32,
    versions: (u32, u32),
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Candidate) -> Ordering {
        self.link
            .total_cmp(&other.link)
            .then_with(|| (other.a, other.b).cmp(&(self.a, self.b)))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Candidate) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn may_merge(a: &Group, b: &Group) -> bool {
    if Seen::any_together(&a.seen, &b.seen) {
        return false;
    }
    match (a.person, b.person) {
        (Some(_), Some(_)) => false,
        (Some(p), None) => !b.rejected.contains(&p),
        (None, Some(p)) => !a.rejected.contains(&p),
        (None, None) => true,
    }
}

fn link(a: &Group, b: &Group) -> f32 {
    dot(&a.sum, &b.sum) / (a.size * b.size) as f32
}

/// A group's mean similarity between two different faces of it (1 for a single face): how
/// tight it is. `|sum|^2` counts every ordered pair and each face with itself once.
fn self_link(g: &Group) -> f32 {
    if g.size < 2 {
        return 1.0;
    }
    let n = g.size as f32;
    (dot(&g.sum, &g.sum) - n) / (n * (n - 1.0))
}

/// Two groups' mean similarity relative to their own tightness: `link(A, B) /
/// sqrt(self(A) self(B))` (for large groups, about the cosine of their mean faces). One person
/// photographed over the years ends in several tight groups whose faces are only moderately
/// alike across groups (mean 0.35 where each group's own is 0.55: relative 0.64), while two
/// people's groups are not alike at all (0.05 against 0.55: 0.09): relative to each group's
/// own spread, the first pair stands out where a plain threshold cannot tell it from a
/// look-alike pair.
pub fn relative_link(a_link: f32, a_self: f32, b_self: f32) -> f32 {
    // A group whose faces are barely alike among themselves is no evidence of anything.
    a_link / (a_self.max(1e-3) * b_self.max(1e-3)).sqrt()
}

/// Pending faces grouped at once: beyond it a gallery is grouped in batches, each against the
/// people the earlier ones made, which bounds the exact neighbour search's cost (quadratic in
/// the batch) while a new face still sees every person.
pub const BATCH: usize = 10_000;

/// Groups the gallery's pending faces: in one go up to [`BATCH`] of them, else batch by batch
/// (faces a batch leaves unassigned are pending again in the next).
pub fn group(g: &Gallery, config: &LinkageConfig) -> Grouping {
    if g.pending.len() <= BATCH {
        return group_batch(g, config);
    }
    // People made by earlier batches take ids below every real one (negative).
    let mut person = g.person.clone();
    let mut next_new = -1i64;
    let mut carried: Vec<u32> = Vec::new();
    for chunk in g.pending.chunks(BATCH) {
        let mut pending = std::mem::take(&mut carried);
        pending.extend_from_slice(chunk);
        let batch = Gallery {
            data: g.data,
            dim: g.dim,
            person: person.clone(),
            pending,
            rejected: g.rejected.clone(),
            seen: g.seen.clone(),
        };
        let out = group_batch(&batch, config);
        for (r, p) in out.joins {
            person[r as usize] = Some(p);
        }
        for faces in out.new_people {
            for r in faces {
                person[r as usize] = Some(next_new);
            }
            next_new -= 1;
        }
        carried = out.unassigned;
    }
    // Rows still unassigned are exactly the last batch's carried ones.
    Grouping::from_persons(&g.pending, &person)
}

/// Groups one gallery from scratch at many thresholds (calibration sweeps them), finding its
/// faces' nearest neighbours once, at the lowest threshold: a face's `k` nearest at least `t`
/// similar are its `k` nearest at least `floor` that reach `t`, for any `t >= floor`. Every face
/// is one batch, whatever the gallery's size (unlike [`group`] beyond [`BATCH`] faces).
pub struct Sweep<'a> {
    gallery: &'a Gallery<'a>,
    floor: f32,
    graph: Vec<Vec<Neighbour>>,
}

impl<'a> Sweep<'a> {
    /// The neighbour graph of a gallery with no people yet, for thresholds from `floor` up.
    pub fn new(gallery: &'a Gallery<'a>, k: usize, floor: f32) -> Sweep<'a> {
        assert!(
            gallery.person.iter().all(Option::is_none),
            "a sweep groups from scratch"
        );
        let pending = gather(gallery.data, gallery.dim, &gallery.pending);
        let queries: Vec<u32> = (0..gallery.pending.len() as u32).collect();
        let graph = neighbours(
            pending.as_slice().expect("contiguous"),
            gallery.dim,
            &queries,
            k,
            floor,
        );
        Sweep {
            gallery,
            floor,
            graph,
        }
    }

    /// The grouping at `config` (its `k` at most the sweep's, its threshold at least its floor).
    pub fn group(&self, config: &LinkageConfig) -> Grouping {
        assert!(config.lowest() >= self.floor, "below the sweep's floor");
        let graph: Vec<Vec<Neighbour>> = self
            .graph
            .iter()
            .map(|hits| {
                hits.iter()
                    .copied()
                    .filter(|h| h.sim >= config.lowest())
                    .take(config.k)
                    .collect()
            })
            .collect();
        group_batch_with(self.gallery, config, Some(graph))
    }
}

/// One batch: every pending face against every other and against every person.
fn group_batch(g: &Gallery, config: &LinkageConfig) -> Grouping {
    group_batch_with(g, config, None)
}

/// [`group_batch`], with the pending faces' neighbour graph given (`Some`) or found here.
fn group_batch_with(
    g: &Gallery,
    config: &LinkageConfig,
    graph: Option<Vec<Vec<Neighbour>>>,
) -> Grouping {
    let dim = g.dim;
    let row = |r: u32| &g.data[r as usize * dim..(r as usize + 1) * dim];
    let seen = |r: u32| g.seen.get(r as usize).copied();
    let fresh = |sum: Vec<f32>, size, person, rejected, pending: Vec<u32>| Group {
        sum,
        size,
        person,
        rejected,
        seen: pending.iter().filter_map(|&r| seen(r)).collect(),
        pending,
        alive: true,
        ..Group::default()
    };
    // Groups: one per pending face (group i is pending face i), then the existing people.
    let mut groups: Vec<Group> = g
        .pending
        .iter()
        .map(|&r| {
            fresh(
                row(r).to_vec(),
                1,
                None,
                g.rejected.get(&r).cloned().unwrap_or_default(),
                vec![r],
            )
        })
        .collect();
    let mut group_of_person: HashMap<i64, u32> = HashMap::new();
    for (r, person) in g.person.iter().enumerate() {
        let Some(p) = *person else { continue };
        let id = *group_of_person.entry(p).or_insert_with(|| {
            groups.push(fresh(vec![0.0; dim], 0, Some(p), Vec::new(), Vec::new()));
            groups.len() as u32 - 1
        });
        let grp = &mut groups[id as usize];
        grp.sum
            .iter_mut()
            .zip(row(r as u32))
            .for_each(|(s, x)| *s += x);
        grp.size += 1;
        grp.seen.extend(seen(r as u32));
    }
    for grp in &mut groups[g.pending.len()..] {
        grp.seen.sort_by_key(|s| s.media);
    }
    let n_pending = g.pending.len();
    // Edges between pending faces: their nearest neighbours among each other.
    let pending_data = gather(g.data, dim, &g.pending);
    let pending_data = pending_data.as_slice().expect("contiguous");
    let graph = graph.unwrap_or_else(|| {
        let queries: Vec<u32> = (0..n_pending as u32).collect();
        neighbours(pending_data, dim, &queries, config.k, config.lowest())
    });
    for (a, hits) in graph.iter().enumerate() {
        for h in hits {
            groups[a].neighbours.insert(h.row);
            groups[h.row as usize].neighbours.insert(a as u32);
        }
    }
    // Edges from pending faces to people: the exact average linkage, face to person mean.
    if groups.len() > n_pending {
        let means: Vec<f32> = groups[n_pending..]
            .iter()
            .flat_map(|p| p.sum.iter().map(move |x| x / p.size as f32))
            .collect();
        let people =
            ArrayView2::from_shape((groups.len() - n_pending, dim), &means).expect("people x dim");
        // In blocks of faces, so the link matrix stays small however many people there are.
        let edges: Vec<(u32, u32)> = pending_data
            .par_chunks(1024 * dim)
            .enumerate()
            .flat_map_iter(|(block, faces)| {
                let faces =
                    ArrayView2::from_shape((faces.len() / dim, dim), faces).expect("faces x dim");
                let links = similarities(faces, people);
                let mut out = Vec::new();
                for (i, row) in links.rows().into_iter().enumerate() {
                    for (p, &l) in row.iter().enumerate() {
                        if l >= config.lowest() {
                            out.push(((block * 1024 + i) as u32, (n_pending + p) as u32));
                        }
                    }
                }
                out
            })
            .collect();
        for (a, b) in edges {
            groups[a as usize].neighbours.insert(b);
            groups[b as usize].neighbours.insert(a);
        }
    }
    let threshold = config.threshold;
    merge_all(&mut groups, &|a, b| {
        let l = link(a, b);
        (l >= threshold).then_some(l)
    });
    if let Some(relative) = config.relative {
        let floor = config.floor;
        merge_all(&mut groups, &|a, b| {
            let l = link(a, b);
            let r = relative_link(l, self_link(a), self_link(b));
            (l >= floor && r >= relative).then_some(r)
        });
    }
    let mut out = Grouping::default();
    for grp in groups
        .into_iter()
        .filter(|g| g.alive && !g.pending.is_empty())
    {
        let mut faces = grp.pending;
        faces.sort_unstable();
        match grp.person {
            Some(p) => out.joins.extend(faces.into_iter().map(|r| (r, p))),
            None if faces.len() >= config.min_faces.max(1) => out.new_people.push(faces),
            None => out.unassigned.extend(faces),
        }
    }
    out.finish();
    out
}

/// Merges groups joined by neighbour edges, best pair first by `score` (`None`: the pair does
/// not merge), until no pair scores.
fn merge_all(groups: &mut [Group], score: &dyn Fn(&Group, &Group) -> Option<f32>) {
    let mut heap = BinaryHeap::new();
    let push = |heap: &mut BinaryHeap<Candidate>, groups: &[Group], a: u32, b: u32| {
        let (ga, gb) = (&groups[a as usize], &groups[b as usize]);
        if may_merge(ga, gb) {
            if let Some(l) = score(ga, gb) {
                let (a, b) = (a.min(b), a.max(b));
                let versions = (groups[a as usize].version, groups[b as usize].version);
                heap.push(Candidate {
                    link: l,
                    a,
                    b,
                    versions,
                });
            }
        }
    };
    for a in 0..groups.len() as u32 {
        for &b in &groups[a as usize].neighbours {
            if a < b {
                push(&mut heap, groups, a, b);
            }
        }
    }
    while let Some(c) = heap.pop() {
        let (ga, gb) = (&groups[c.a as usize], &groups[c.b as usize]);
        if !ga.alive || !gb.alive || (ga.version, gb.version) != c.versions {
            continue; // stale: one of the groups changed since this candidate was pushed
        }
        // Keep the existing person's group, else the larger, as the survivor.
        let keep_a = ga.person.is_some() || (gb.person.is_none() && ga.size >= gb.size);
        let (keep, gone) = if keep_a { (c.a, c.b) } else { (c.b, c.a) };
        let absorbed = std::mem::take(&mut groups[gone as usize]);
        for &n in &absorbed.neighbours {
            let ng = &mut groups[n as usize].neighbours;
            ng.remove(&gone);
            if n != keep {
                ng.insert(keep);
            }
        }
        let k = &mut groups[keep as usize];
        k.sum
            .iter_mut()
            .zip(&absorbed.sum)
            .for_each(|(s, x)| *s += x);
        k.size += absorbed.size;
        k.person = k.person.or(absorbed.person);
        k.rejected.extend(absorbed.rejected);
        k.seen = Seen::merged(&k.seen, &absorbed.seen);
        k.pending.extend(absorbed.pending);
        k.neighbours
            .extend(absorbed.neighbours.into_iter().filter(|&n| n != keep));
        k.neighbours.remove(&gone);
        k.version += 1;
        let around: Vec<u32> = k.neighbours.iter().copied().collect();
        for n in around {
            push(&mut heap, groups, keep, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people::tests::clustered;
    use smoothface_shared::embedding::l2_normalize;

    fn config(threshold: f32) -> LinkageConfig {
        LinkageConfig {
            k: 16,
            ..LinkageConfig::at(threshold)
        }
    }

    #[test]
    fn well_separated_people_are_found_exactly() {
        let data = clustered(12, 6, 32, 0.6, 3);
        let g = Gallery::from_scratch(&data, 32);
        let out = group(&g, &config(0.4));
        assert_eq!(out.new_people.len(), 12);
        for (i, p) in out.new_people.iter().enumerate() {
            assert_eq!(p, &((i as u32 * 6)..(i as u32 * 6 + 6)).collect::<Vec<_>>());
        }
        assert!(out.unassigned.is_empty() && out.joins.is_empty());
    }

    /// Average linkage, by hand: 1-d "directions" in the plane at angles where single linkage
    /// would chain everything together but the mean similarity says stop.
    #[test]
    fn two_faces_seen_together_are_never_one_person() {
        use crate::people::Seen;
        let at = |deg: f32| [deg.to_radians().cos(), deg.to_radians().sin()];
        // Faces 0 and 1 are the nearest pair (1 degree apart) but of one photo (media 7); 2 is
        // near both, 3 near 1. Without the rule all four are one person.
        let data: Vec<f32> = [0.0, 1.0, 3.0, 4.0].into_iter().flat_map(at).collect();
        let photo = |media| Seen { media, span: None };
        let free = Gallery::from_scratch(&data, 2);
        assert_eq!(
            group(&free, &config(0.9)).new_people,
            vec![vec![0, 1, 2, 3]]
        );
        let g = Gallery {
            seen: vec![photo(7), photo(7), photo(8), photo(9)],
            ..Gallery::from_scratch(&data, 2)
        };
        // 2 and 3 merge, then 1 with them; 0 may not join 1's group and is left alone.
        let out = group(&g, &config(0.9));
        assert_eq!(out.new_people, vec![vec![1, 2, 3]], "{out:?}");
        assert_eq!(out.unassigned, vec![0]);
        // Two tracks of one video at different times may be one person; at once, never.
        let track = |s: f64, e: f64| Seen {
            media: 5,
            span: Some((s, e)),
        };
        let g = Gallery {
            seen: vec![track(0.0, 2.0), track(3.0, 4.0), photo(8), photo(9)],
            ..Gallery::from_scratch(&data, 2)
        };
        assert_eq!(group(&g, &config(0.9)).new_people, vec![vec![0, 1, 2, 3]]);
        let g = Gallery {
            seen: vec![track(0.0, 3.0), track(2.5, 4.0), photo(8), photo(9)],
            ..Gallery::from_scratch(&data, 2)
        };
        assert_eq!(group(&g, &config(0.9)).new_people, vec![vec![1, 2, 3]]);
    }

    #[test]
    fn a_sweep_groups_as_a_grouping_at_each_threshold_does() {
        // People close enough that the thresholds decide: some merge at 0.2, none at 0.7.
        let data = clustered(10, 5, 16, 1.2, 9);
        let g = Gallery::from_scratch(&data, 16);
        let sweep = Sweep::new(&g, 16, 0.1);
        let mut distinct = std::collections::HashSet::new();
        for t in [0.1, 0.2, 0.3, 0.45, 0.6, 0.7] {
            let swept = sweep.group(&config(t));
            assert_eq!(swept, group(&g, &config(t)), "threshold {t}");
            distinct.insert(swept.new_people.len());
        }
        assert!(distinct.len() > 2, "the thresholds made no difference");
    }

    #[test]
    fn a_chain_of_look_alikes_does_not_merge_two_people() {
        let at = |deg: f32| {
            let r = deg.to_radians();
            [r.cos(), r.sin()]
        };
        // Person A at 0, 10, 20 degrees; person B at 80, 90, 100; one face at 50 between them.
        // cos 30 = 0.866, so 50 links to 20 and to 80 above a threshold of 0.8: single linkage
        // would join all seven. Mean similarity of {0,10,20,50} to {80,90,100} is far below.
        let angles = [0.0, 10.0, 20.0, 80.0, 90.0, 100.0, 50.0];
        let data: Vec<f32> = angles.iter().flat_map(|&a| at(a)).collect();
        let g = Gallery::from_scratch(&data, 2);
        let out = group(&g, &config(0.8));
        // Mean cos of 50 to {0,10,20} = (cos50+cos40+cos30)/3 = (0.643+0.766+0.866)/3 = 0.758:
        // below 0.8, so the middle face joins nobody.
        assert_eq!(out.new_people, vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(out.unassigned, vec![6]);
    }

    #[test]
    fn new_faces_join_existing_people_which_never_merge() {
        let mut data = clustered(3, 5, 16, 0.5, 4);
        // Rows 0-4 are person 100 and rows 5-9 person 200, though both are person 0 and 1 of the
        // data; rows 10-14 (the third cluster) are pending; then one pending face near each.
        let near = |data: &[f32], r: usize| {
            let mut v: Vec<f32> = data[r * 16..(r + 1) * 16]
                .iter()
                .map(|x| x + 0.05)
                .collect();
            l2_normalize(&mut v);
            v
        };
        let (n0, n1) = (near(&data, 0), near(&data, 5));
        data.extend(n0);
        data.extend(n1);
        let mut person = vec![None; 17];
        for (r, p) in person.iter_mut().enumerate().take(10) {
            *p = Some(if r < 5 { 100 } else { 200 });
        }
        // Make person 200 also hold a face of person 100's cluster: the two are now linked,
        // yet they must stay apart.
        person[4] = Some(200);
        let g = Gallery {
            data: &data,
            dim: 16,
            person,
            pending: (10..17).collect(),
            rejected: HashMap::new(),
            seen: Vec::new(),
        };
        let out = group(&g, &config(0.3));
        assert_eq!(out.joins, vec![(15, 100), (16, 200)]);
        assert_eq!(out.new_people, vec![vec![10, 11, 12, 13, 14]]);
    }

    #[test]
    fn a_rejected_face_never_joins_that_person() {
        let at = |deg: f32| [deg.to_radians().cos(), deg.to_radians().sin()];
        // Person 7 at 0 and 5 degrees; pending face 3 at 2 (it joins 7 first: mean cos 0.999),
        // pending face 2 at 20, rejected from 7 by the user.
        let data: Vec<f32> = [0.0, 5.0, 20.0, 2.0].iter().flat_map(|&a| at(a)).collect();
        let person = vec![Some(7), Some(7), None, None];
        let rejected = HashMap::from([(2, vec![7])]);
        let g = Gallery {
            data: &data,
            dim: 2,
            person,
            pending: vec![2, 3],
            rejected,
            seen: Vec::new(),
        };
        let out = group(&g, &config(0.8));
        assert_eq!(out.joins, vec![(3, 7)]);
        // Without the rejection face 2 would join 7 too (mean cos of 20 to {0, 5, 2} is 0.95).
        assert_eq!(out.unassigned, vec![2]);
        let free = Gallery {
            rejected: HashMap::new(),
            seen: Vec::new(),
            ..g
        };
        assert_eq!(group(&free, &config(0.8)).joins, vec![(2, 7), (3, 7)]);
    }

    #[test]
    fn small_groups_wait_for_more_faces() {
        let data = clustered(2, 3, 16, 0.4, 6);
        let g = Gallery::from_scratch(&data, 16);
        let mut c = config(0.3);
        c.min_faces = 4;
        let out = group(&g, &c);
        assert!(out.new_people.is_empty());
        assert_eq!(out.unassigned, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn batches_find_people_whose_faces_span_them() {
        // 1,011 people of 10 faces, interleaved (face j of person i at row 1011 j + i): every
        // person has faces on both sides of the first batch's end.
        let (people, each, dim) = (1_011usize, 10usize, 128usize);
        let by_person = clustered(people, each, dim, 0.5, 8);
        let mut data = vec![0.0f32; by_person.len()];
        for i in 0..people {
            for j in 0..each {
                let (from, to) = ((i * each + j) * dim, (j * people + i) * dim);
                data[to..to + dim].copy_from_slice(&by_person[from..from + dim]);
            }
        }
        assert!(people * each > BATCH);
        let out = group(&Gallery::from_scratch(&data, dim), &config(0.4));
        assert_eq!(out.new_people.len(), people);
        for (i, p) in out.new_people.iter().enumerate() {
            assert_eq!(
                p,
                &(0..each)
                    .map(|j| (j * people + i) as u32)
                    .collect::<Vec<_>>()
            );
        }
        assert!(out.unassigned.is_empty() && out.joins.is_empty());
    }
}
