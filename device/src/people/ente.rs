//! The second baseline: the clustering Ente's web client runs (HDBSCAN over the faces' unit
//! embeddings, Euclidean distance; min cluster size 3, min samples 5, cluster selection epsilon
//! 0.6, leaf selection), run on the same faces and embeddings as ours in `eval people` and
//! `bench`.
//!
//! Neither HDBSCAN crate of crates.io selects leaf clusters (`hdbscan` 0.12 has excess of mass
//! and epsilon only, `petal-clustering` 0.14 neither), so the algorithm is written here, step by
//! step as scikit-learn's `HDBSCAN` computes it, and tested on hand-worked cases:
//!
//! 1. each face's core distance: the distance to its `min_samples`-th nearest face, itself
//!    counted first;
//! 2. the minimum spanning tree of the mutual reachability distances
//!    `max(core(a), core(b), d(a, b))` (Prim's, the distances computed row by row, so memory
//!    stays linear);
//! 3. the single-linkage hierarchy of its edges, condensed: a split whose both sides have at
//!    least `min_cluster_size` faces makes two clusters, a smaller side's faces fall out of
//!    their cluster;
//! 4. the leaves of the cluster tree selected, each replaced by its nearest ancestor born at a
//!    distance above `epsilon` when it was born below it (`cluster_selection_epsilon`);
//! 5. every face labelled by the selected cluster it falls out of (or under); the rest noise,
//!    left unassigned.
//!
//! It groups from scratch: existing people are ignored (Ente's web client clusters everything
//! again), so it is a baseline for a gallery's first grouping.

use super::neighbours::neighbours;
use super::{Gallery, Grouping};
use rayon::prelude::*;
use smoothface_shared::embedding::dot;

/// Ente's parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EnteConfig {
    /// Faces a cluster needs.
    pub min_cluster_size: usize,
    /// The neighbour (the face itself counted) whose distance is a face's core distance.
    pub min_samples: usize,
    /// Clusters born below this Euclidean distance are merged up into their ancestor.
    pub epsilon: f32,
}

impl Default for EnteConfig {
    /// The values Ente's web client passes.
    fn default() -> EnteConfig {
        EnteConfig {
            min_cluster_size: 3,
            min_samples: 5,
            epsilon: 0.6,
        }
    }
}

/// Euclidean distance of two unit vectors from their cosine similarity.
fn distance(cos: f32) -> f32 {
    (2.0 - 2.0 * cos).max(0.0).sqrt()
}

/// Groups the gallery's pending faces by Ente's clustering, from scratch.
pub fn group(g: &Gallery, config: &EnteConfig) -> Grouping {
    let rows: Vec<&[f32]> = g
        .pending
        .iter()
        .map(|&r| &g.data[r as usize * g.dim..(r as usize + 1) * g.dim])
        .collect();
    let labels = cluster(&rows, g.dim, config);
    let mut people: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
    let mut out = Grouping::default();
    for (&r, label) in g.pending.iter().zip(labels) {
        match label {
            Some(l) => people.entry(l).or_default().push(r),
            None => out.unassigned.push(r),
        }
    }
    out.new_people = people.into_values().collect();
    out.finish();
    out
}

/// HDBSCAN labels of `rows` (unit vectors of size `dim`): a cluster number for each, or `None`
/// for noise.
pub fn cluster(rows: &[&[f32]], dim: usize, config: &EnteConfig) -> Vec<Option<usize>> {
    let n = rows.len();
    if n < config.min_cluster_size.max(2) {
        return vec![None; n];
    }
    let core = core_distances(rows, dim, config.min_samples);
    let mst = spanning_tree(rows, &core);
    let hierarchy = single_linkage(n, mst);
    let tree = condense(&hierarchy, n, config.min_cluster_size.max(2));
    let selected = select_leaves(&tree, n, config.epsilon);
    label(&tree, n, &selected)
}

/// Each row's distance to its `min_samples`-th nearest row, itself the first.
fn core_distances(rows: &[&[f32]], dim: usize, min_samples: usize) -> Vec<f32> {
    let others = min_samples.saturating_sub(1);
    if others == 0 {
        return vec![0.0; rows.len()];
    }
    let data: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let queries: Vec<u32> = (0..rows.len() as u32).collect();
    neighbours(&data, dim, &queries, others, -2.0)
        .into_iter()
        .map(|hits| hits.last().map_or(f32::INFINITY, |h| distance(h.sim)))
        .collect()
}

/// An edge of the spanning tree: its two rows and its mutual reachability distance.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Edge {
    a: usize,
    b: usize,
    weight: f32,
}

/// The minimum spanning tree of the mutual reachability graph (Prim's from row 0; a row's
/// distances computed when it joins the tree).
fn spanning_tree(rows: &[&[f32]], core: &[f32]) -> Vec<Edge> {
    let n = rows.len();
    let mut in_tree = vec![false; n];
    let mut best = vec![f32::INFINITY; n];
    let mut from = vec![0usize; n];
    let mut edges = Vec::with_capacity(n.saturating_sub(1));
    let mut current = 0;
    in_tree[0] = true;
    for _ in 1..n {
        let (cur_row, cur_core) = (rows[current], core[current]);
        best.par_iter_mut()
            .zip(from.par_iter_mut())
            .enumerate()
            .filter(|(j, _)| !in_tree[*j])
            .for_each(|(j, (b, f))| {
                let d = distance(dot(cur_row, rows[j])).max(cur_core).max(core[j]);
                if d < *b {
                    *b = d;
                    *f = current;
                }
            });
        // The nearest row outside the tree (the lowest index among ties, for determinism).
        let next = (0..n)
            .filter(|&j| !in_tree[j])
            .min_by(|&x, &y| best[x].total_cmp(&best[y]).then(x.cmp(&y)))
            .expect("a row outside the tree");
        edges.push(Edge {
            a: from[next],
            b: next,
            weight: best[next],
        });
        in_tree[next] = true;
        current = next;
    }
    edges
}

/// One merge of the single-linkage hierarchy: two nodes (rows are `0..n`, merges `n..`), at a
/// distance, into a node of `size` rows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Merge {
    left: usize,
    right: usize,
    distance: f32,
    size: usize,
}

/// The single-linkage hierarchy of the tree's edges, lightest first; merge `i` is node `n + i`.
fn single_linkage(n: usize, mut edges: Vec<Edge>) -> Vec<Merge> {
    edges.sort_by(|x, y| x.weight.total_cmp(&y.weight));
    let mut parent: Vec<usize> = (0..2 * n).collect();
    let mut size = vec![1usize; 2 * n];
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut merges = Vec::with_capacity(n - 1);
    for (i, e) in edges.into_iter().enumerate() {
        let (a, b) = (find(&mut parent, e.a), find(&mut parent, e.b));
        let node = n + i;
        parent[a] = node;
        parent[b] = node;
        size[node] = size[a] + size[b];
        merges.push(Merge {
            left: a,
            right: b,
            distance: e.weight,
            size: size[node],
        });
    }
    merges
}

/// A row of the condensed tree: a cluster (numbered from `n`, the root `n`) and a child, a row
/// (`< n`) falling out of it or a cluster (`>= n`) born from it, at `lambda` (1 / distance).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Condensed {
    parent: usize,
    child: usize,
    lambda: f32,
    size: usize,
}

/// The hierarchy condensed at `min_size`: walking down from the root, a split with both sides of
/// at least `min_size` rows makes two new clusters; otherwise the large side stays the same
/// cluster and the small side's rows fall out of it.
fn condense(merges: &[Merge], n: usize, min_size: usize) -> Vec<Condensed> {
    let root = 2 * n - 2;
    let node_size = |node: usize| if node < n { 1 } else { merges[node - n].size };
    let mut relabel = vec![0usize; 2 * n - 1];
    relabel[root] = n;
    let mut next_label = n + 1;
    let mut out = Vec::new();
    let mut ignore = vec![false; 2 * n - 1];
    // Nodes in breadth-first order from the root, as scikit-learn visits them.
    let mut order = vec![root];
    let mut i = 0;
    while i < order.len() {
        if order[i] >= n {
            let m = merges[order[i] - n];
            order.push(m.left);
            order.push(m.right);
        }
        i += 1;
    }
    let leaves_of = |node: usize| {
        let mut stack = vec![node];
        let mut rows = Vec::new();
        while let Some(x) = stack.pop() {
            if x < n {
                rows.push(x);
            } else {
                let m = merges[x - n];
                stack.push(m.left);
                stack.push(m.right);
            }
        }
        rows
    };
    for &node in &order {
        if ignore[node] || node < n {
            continue;
        }
        let m = merges[node - n];
        let lambda = if m.distance > 0.0 {
            1.0 / m.distance
        } else {
            f32::INFINITY
        };
        let (left, right) = (m.left, m.right);
        let (ls, rs) = (node_size(left), node_size(right));
        let parent = relabel[node];
        let fall_out = |child: usize, ignore: &mut Vec<bool>, out: &mut Vec<Condensed>| {
            for row in leaves_of(child) {
                out.push(Condensed {
                    parent,
                    child: row,
                    lambda,
                    size: 1,
                });
            }
            // Its inner nodes are done with.
            let mut stack = vec![child];
            while let Some(x) = stack.pop() {
                ignore[x] = true;
                if x >= n {
                    stack.push(merges[x - n].left);
                    stack.push(merges[x - n].right);
                }
            }
        };
        match (ls >= min_size, rs >= min_size) {
            (true, true) => {
                for (child, size) in [(left, ls), (right, rs)] {
                    relabel[child] = next_label;
                    out.push(Condensed {
                        parent,
                        child: next_label,
                        lambda,
                        size,
                    });
                    next_label += 1;
                }
            }
            (false, false) => {
                fall_out(left, &mut ignore, &mut out);
                fall_out(right, &mut ignore, &mut out);
            }
            (true, false) => {
                relabel[left] = parent;
                fall_out(right, &mut ignore, &mut out);
            }
            (false, true) => {
                relabel[right] = parent;
                fall_out(left, &mut ignore, &mut out);
            }
        }
    }
    out
}

/// The leaf clusters of the condensed tree (clusters with no cluster below them), each replaced
/// by its nearest ancestor born above `epsilon` when it was born below it; the root is never
/// selected (scikit-learn's `allow_single_cluster` off).
fn select_leaves(tree: &[Condensed], n: usize, epsilon: f32) -> Vec<usize> {
    let clusters: Vec<&Condensed> = tree.iter().filter(|c| c.child >= n).collect();
    if clusters.is_empty() {
        return Vec::new();
    }
    let parent_of = |c: usize| clusters.iter().find(|x| x.child == c).map(|x| x.parent);
    let birth = |c: usize| clusters.iter().find(|x| x.child == c).map(|x| x.lambda);
    let has_child = |c: usize| clusters.iter().any(|x| x.parent == c);
    let mut leaves: Vec<usize> = clusters
        .iter()
        .map(|c| c.child)
        .filter(|&c| !has_child(c))
        .collect();
    leaves.sort_unstable();
    if epsilon <= 0.0 {
        return leaves;
    }
    let eps_of = |c: usize| birth(c).map_or(f32::INFINITY, |l| 1.0 / l);
    let mut selected: Vec<usize> = Vec::new();
    let mut processed: Vec<usize> = Vec::new();
    for leaf in leaves {
        if eps_of(leaf) >= epsilon {
            selected.push(leaf);
            continue;
        }
        if processed.contains(&leaf) {
            continue;
        }
        // Up to the first ancestor born above epsilon; below the root, the root's child.
        let mut c = leaf;
        loop {
            let parent = parent_of(c).expect("a cluster has a parent");
            if parent == n {
                break;
            }
            c = parent;
            if eps_of(c) > epsilon {
                break;
            }
        }
        selected.push(c);
        // The clusters under it are taken care of.
        let mut stack: Vec<usize> = clusters
            .iter()
            .filter(|y| y.parent == c)
            .map(|y| y.child)
            .collect();
        while let Some(x) = stack.pop() {
            processed.push(x);
            stack.extend(clusters.iter().filter(|y| y.parent == x).map(|y| y.child));
        }
    }
    selected.sort_unstable();
    selected.dedup();
    selected
}

/// Each row's selected cluster (its nearest selected ancestor in the condensed tree, walking
/// up through unselected ones), numbered in the order of `selected`; `None` when the walk
/// reaches the root.
fn label(tree: &[Condensed], n: usize, selected: &[usize]) -> Vec<Option<usize>> {
    let nodes = tree
        .iter()
        .map(|c| c.child.max(c.parent))
        .max()
        .unwrap_or(n)
        + 1;
    let mut parent_of = vec![usize::MAX; nodes];
    for c in tree {
        parent_of[c.child] = c.parent;
    }
    (0..n)
        .map(|row| {
            let mut x = parent_of[row];
            while x != usize::MAX && x != n {
                if let Ok(i) = selected.binary_search(&x) {
                    return Some(i);
                }
                x = parent_of[x];
            }
            None
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors in the plane at these angles (degrees).
    fn at(degrees: &[f32]) -> Vec<f32> {
        degrees
            .iter()
            .flat_map(|d| [d.to_radians().cos(), d.to_radians().sin()])
            .collect()
    }

    /// The labels, renumbered in order of first appearance (cluster numbers are arbitrary).
    fn clusters(data: &[f32], config: &EnteConfig) -> Vec<Option<usize>> {
        let rows: Vec<&[f32]> = data.chunks_exact(2).collect();
        let mut seen: Vec<usize> = Vec::new();
        cluster(&rows, 2, config)
            .into_iter()
            .map(|l| {
                l.map(|l| {
                    seen.iter().position(|&s| s == l).unwrap_or_else(|| {
                        seen.push(l);
                        seen.len() - 1
                    })
                })
            })
            .collect()
    }

    #[test]
    fn two_far_groups_are_two_clusters_and_a_lone_face_is_noise() {
        // Five faces 1 degree apart at 0 and at 120 degrees, one alone at 240. The lone face
        // falls out of the root (a side of 1 < 3); the 5-5 split makes two clusters, whose
        // faces then fall out of them one by one (sides of 1 to 4 against 1): the leaves.
        let data = at(&[0., 1., 2., 3., 4., 120., 121., 122., 123., 124., 240.]);
        let labels = clusters(&data, &EnteConfig::default());
        let expected: Vec<Option<usize>> = [Some(0); 5]
            .into_iter()
            .chain([Some(1); 5])
            .chain([None])
            .collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn leaves_born_closer_than_epsilon_are_merged_into_their_ancestor() {
        // A1 (0-4 degrees) and A2 (20-24) split at a mutual reachability distance of
        // 2 sin(8 deg) = 0.278 (16 degrees between their nearest faces, above both core
        // distances, 2 sin(2 deg) = 0.070); A and B (180-184) at about 1.9. Leaves: A1, A2, B.
        let data = at(&[
            0., 1., 2., 3., 4., 20., 21., 22., 23., 24., 180., 181., 182., 183., 184.,
        ]);
        let no_epsilon = EnteConfig {
            epsilon: 0.0,
            ..EnteConfig::default()
        };
        let three: Vec<Option<usize>> = [0, 1, 2].into_iter().flat_map(|c| [Some(c); 5]).collect();
        assert_eq!(clusters(&data, &no_epsilon), three);
        // At epsilon 0.6 A1 and A2 (born at 0.278 < 0.6) give way to A (born at 1.9 > 0.6).
        let two: Vec<Option<usize>> = [Some(0); 10].into_iter().chain([Some(1); 5]).collect();
        assert_eq!(clusters(&data, &EnteConfig::default()), two);
        // At epsilon 2.0 nothing is born above it below the root: the root's children stay.
        let wide = EnteConfig {
            epsilon: 2.0,
            ..EnteConfig::default()
        };
        assert_eq!(clusters(&data, &wide), two);
    }

    #[test]
    fn the_core_distance_counts_the_face_itself_first() {
        // min_samples 2: the nearest other face; 1: the face itself (0).
        let data = at(&[0., 10., 30.]);
        let rows: Vec<&[f32]> = data.chunks_exact(2).collect();
        let d10 = 2.0 * 5f32.to_radians().sin();
        let d20 = 2.0 * 10f32.to_radians().sin();
        let core = core_distances(&rows, 2, 2);
        for (got, want) in core.iter().zip([d10, d10, d20]) {
            assert!((got - want).abs() < 1e-5, "{core:?}");
        }
        assert_eq!(core_distances(&rows, 2, 1), vec![0.0; 3]);
    }

    #[test]
    fn too_few_faces_are_all_noise_and_the_gallery_order_is_kept() {
        let data = at(&[0., 1.]);
        assert_eq!(clusters(&data, &EnteConfig::default()), vec![None, None]);
        // Through `group`: pending rows map back to the gallery's rows.
        let data = at(&[0., 120., 1., 121., 2., 122., 3., 123., 4., 124.]);
        let g = Gallery::from_scratch(&data, 2);
        let out = group(&g, &EnteConfig::default());
        assert_eq!(
            out.new_people,
            vec![vec![0, 2, 4, 6, 8], vec![1, 3, 5, 7, 9]]
        );
        assert!(out.unassigned.is_empty() && out.joins.is_empty());
    }
}
