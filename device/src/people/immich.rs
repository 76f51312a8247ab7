//! The baseline: the incremental rule Immich ships (`person.service.ts`, facial recognition),
//! run on the same faces and embeddings as ours in `eval people` and `bench`.
//!
//! Faces are taken in turn (gallery order). For each, up to `min_faces` nearest faces within
//! `max_distance` (cosine distance) are looked up, the face itself included. With only itself,
//! it is left unassigned. It takes the person of the first hit that has one, else of the nearest
//! face with a person within `max_distance`. A face with fewer than `min_faces` hits is not a
//! "core" face: it is deferred to a second pass, where it may still take a person found that
//! way but never starts one. A core face without a person found starts a new person.

use super::neighbours::neighbours;
use super::{Gallery, Grouping};

/// Immich's parameters.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ImmichConfig {
    /// Largest cosine distance (1 - similarity) of a match.
    pub max_distance: f32,
    /// Matches (the face included) a face needs to start a person.
    pub min_faces: usize,
}

impl Default for ImmichConfig {
    /// Immich's defaults.
    fn default() -> ImmichConfig {
        ImmichConfig {
            max_distance: 0.5,
            min_faces: 3,
        }
    }
}

/// Faces searched for "the nearest face with a person": Immich asks its vector index for the
/// single nearest such face; the nearest this many faces within `max_distance` stand in for it.
const PERSON_SEARCH: usize = 64;

/// Groups the gallery's pending faces by Immich's rule (existing people are kept and joined).
pub fn group(g: &Gallery, config: &ImmichConfig) -> Grouping {
    let floor = 1.0 - config.max_distance;
    let graph = neighbours(
        g.data,
        g.dim,
        &g.pending,
        PERSON_SEARCH.max(config.min_faces),
        floor,
    );
    let mut person: Vec<Option<i64>> = g.person.clone();
    // New people get negative ids (see `Grouping::from_persons`).
    let mut next_new = -1i64;
    let mut deferred = Vec::new();
    let mut decide = |pos: usize, second_pass: bool, person: &mut Vec<Option<i64>>| -> bool {
        let r = g.pending[pos];
        let hits = &graph[pos];
        let matches = 1 + hits.len().min(config.min_faces.saturating_sub(1));
        if config.min_faces > 1 && matches <= 1 {
            return true; // no match at all: unassigned, not deferred
        }
        let allowed = |p: &i64| !g.rejected.get(&r).is_some_and(|rej| rej.contains(p));
        let from_matches = hits[..matches - 1]
            .iter()
            .find_map(|h| person[h.row as usize].filter(allowed));
        let found = from_matches.or_else(|| {
            hits.iter()
                .find_map(|h| person[h.row as usize].filter(allowed))
        });
        let core = matches >= config.min_faces;
        if !core && !second_pass {
            return false;
        }
        match (found, core) {
            (Some(p), _) => person[r as usize] = Some(p),
            (None, true) => {
                person[r as usize] = Some(next_new);
                next_new -= 1;
            }
            (None, false) => {}
        }
        true
    };
    for pos in 0..g.pending.len() {
        if !decide(pos, false, &mut person) {
            deferred.push(pos);
        }
    }
    for pos in deferred {
        decide(pos, true, &mut person);
    }
    Grouping::from_persons(&g.pending, &person)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(deg: f32) -> [f32; 2] {
        [deg.to_radians().cos(), deg.to_radians().sin()]
    }

    /// By hand, with max_distance 0.5 (similarity at least 0.5, i.e. within 60 degrees) and
    /// min_faces 3, faces in gallery order at 0, 10, 20 (three within reach of each other),
    /// 200 (alone), 65 (reaches 10 and 20 only: two matches beside itself, core) and 120 (reaches
    /// 65 only: not core, deferred, then takes 65's person).
    #[test]
    fn the_rule_by_hand() {
        let data: Vec<f32> = [0.0, 10.0, 20.0, 200.0, 65.0, 120.0]
            .iter()
            .flat_map(|&a| at(a))
            .collect();
        let g = Gallery::from_scratch(&data, 2);
        let out = group(&g, &ImmichConfig::default());
        // Face 0: matches itself, 10, 20 -> core, nobody has a person: new person A.
        // Faces 1, 2: a match has person A: join. Face 3: no match: unassigned.
        // Face 4 (65): within 60 degrees are 20 (45 deg) and 10 (55 deg), not 0 (65 deg)
        //   -> core, joins A through 20. Face 5 (120): only 65 (55 deg) -> deferred; the second
        //   pass takes A through 65.
        assert_eq!(out.new_people, vec![vec![0, 1, 2, 4, 5]]);
        assert_eq!(out.unassigned, vec![3]);
    }

    /// The rule splits: two faces of one person that are not core and have no person around stay
    /// unassigned, where a clustering would pair them.
    #[test]
    fn pairs_stay_unassigned() {
        let data: Vec<f32> = [0.0, 5.0, 180.0, 185.0]
            .iter()
            .flat_map(|&a| at(a))
            .collect();
        let out = group(&Gallery::from_scratch(&data, 2), &ImmichConfig::default());
        assert!(out.new_people.is_empty());
        assert_eq!(out.unassigned, vec![0, 1, 2, 3]);
    }
}
