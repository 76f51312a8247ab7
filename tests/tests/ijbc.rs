//! IJB-C evaluation end to end on real photos: `smoothface eval ijbc-fixture` makes a set in
//! insightface's layout, `smoothface eval ijbc` scores it, and every number is recomputed here
//! from features this test embeds itself, with brute-force pooling, ROC, CMC, TPIR and AP written
//! from their definitions. Then the cache (resume, reuse across protocols and flip settings),
//! the ROC files, bad input, and the trainer's `eval ijbc` of the same weights.

use image::RgbImage;
use smoothface_device::embedder::Embedder;
use smoothface_shared::align::align_face;
use smoothface_shared::manifest::ModelManifest;
use smoothface_tests::{binary, copy_people, faces, json, models, run, succeed, text};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn smoothface() -> Command {
    let mut c = Command::new(binary("smoothface"));
    c.env("SMOOTHFACE_MODELS", models()).arg("--quiet");
    c
}

/// An IJB-C-layout fixture in `dir/set` from 6 LFW people with 15 photos (5 templates of 3)
/// and 24 more with 6 (2 templates), about 230 faces; returns it and the command's report.
fn fixture(dir: &Path, lfw: &Path) -> (PathBuf, serde_json::Value) {
    let src = dir.join("src");
    copy_people(lfw, &src, 30, 6);
    copy_people(lfw, &src, 6, 15);
    let set = dir.join("set");
    let made = json(&succeed(smoothface().args([
        "eval",
        "ijbc-fixture",
        text(&src),
        text(&set),
        "--max-templates-per-person",
        "5",
        "--json",
    ])));
    (set, made)
}

/// A face row of the fixture: image, template, media, landmarks, faceness.
type FaceRow = (String, u32, u32, [[f32; 2]; 5], f64);

/// The fixture's metadata, read by hand.
struct Meta {
    faces: Vec<FaceRow>,
    pairs: Vec<(u32, u32, bool)>,
    /// G1, G2, probes: template -> subject.
    lists: [BTreeMap<u32, u32>; 3],
}

fn read_meta(set: &Path) -> Meta {
    let read = |name: &str| std::fs::read_to_string(set.join("meta").join(name)).unwrap();
    let ids = read("ijbc_face_tid_mid.txt");
    let points = read("ijbc_name_5pts_score.txt");
    let faces = ids
        .lines()
        .zip(points.lines())
        .map(|(a, b)| {
            let a: Vec<&str> = a.split(' ').collect();
            let b: Vec<&str> = b.split(' ').collect();
            assert_eq!((a.len(), b.len()), (3, 12));
            assert_eq!(a[0], b[0], "the two lists pair by row");
            let v: Vec<f32> = b[1..11].iter().map(|x| x.parse().unwrap()).collect();
            let mut lm = [[0.0; 2]; 5];
            for k in 0..5 {
                lm[k] = [v[2 * k], v[2 * k + 1]];
            }
            (
                a[0].to_owned(),
                a[1].parse().unwrap(),
                a[2].parse().unwrap(),
                lm,
                b[11].parse().unwrap(),
            )
        })
        .collect();
    let pairs = read("ijbc_template_pair_label.txt")
        .lines()
        .map(|l| {
            let f: Vec<u32> = l.split(' ').map(|x| x.parse().unwrap()).collect();
            (f[0], f[1], f[2] == 1)
        })
        .collect();
    let list = |name: &str| {
        read(name)
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap(), f[1].parse().unwrap())
            })
            .collect()
    };
    Meta {
        faces,
        pairs,
        lists: [
            list("ijbc_1N_gallery_G1.csv"),
            list("ijbc_1N_gallery_G2.csv"),
            list("ijbc_1N_probe_mixed.csv"),
        ],
    }
}

/// Raw features of each face's crop and of its mirror image.
fn embed_by_hand(set: &Path, meta: &Meta) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let embedder =
        Embedder::load(&ModelManifest::load(&models().join("mobilefacenet")).unwrap()).unwrap();
    let mut plain = Vec::new();
    let mut mirror = Vec::new();
    for (image, _, _, lm, _) in &meta.faces {
        let img: RgbImage = image::open(set.join("loose_crop").join(image))
            .unwrap()
            .into_rgb8();
        let crop = align_face(
            img.as_raw(),
            img.width() as usize,
            img.height() as usize,
            lm,
        )
        .unwrap();
        let mut flipped = vec![0u8; crop.len()];
        for y in 0..112 {
            for x in 0..112 {
                for c in 0..3 {
                    flipped[(y * 112 + x) * 3 + c] = crop[(y * 112 + 111 - x) * 3 + c];
                }
            }
        }
        plain.push(embedder.embed_raw(&[&crop]).unwrap());
        mirror.push(embedder.embed_raw(&[&flipped]).unwrap());
    }
    (plain, mirror)
}

/// insightface's pooling, by loops: (plain + mirror) * faceness; mean per media; sum per
/// template; L2-normalise.
fn pool_by_hand(meta: &Meta, plain: &[Vec<f32>], mirror: &[Vec<f32>]) -> BTreeMap<u32, Vec<f64>> {
    let mut media: BTreeMap<(u32, u32), (Vec<f64>, f64)> = BTreeMap::new();
    for (i, (_, template, m, _, faceness)) in meta.faces.iter().enumerate() {
        let e = media
            .entry((*template, *m))
            .or_insert((vec![0.0; 512], 0.0));
        for d in 0..512 {
            e.0[d] += (plain[i][d] as f64 + mirror[i][d] as f64) * faceness;
        }
        e.1 += 1.0;
    }
    let mut templates: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for ((template, _), (sum, count)) in media {
        let t = templates.entry(template).or_insert(vec![0.0; 512]);
        for d in 0..512 {
            t[d] += sum[d] / count;
        }
    }
    for t in templates.values_mut() {
        let n = t.iter().map(|v| v * v).sum::<f64>().sqrt();
        t.iter_mut().for_each(|v| *v /= n);
    }
    templates
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn close(a: f64, b: &serde_json::Value, what: &str) {
    let b = b
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {b}"));
    assert!((a - b).abs() < 1e-9, "{what}: expected {a}, got {b}");
}

/// Every distinct score a threshold, accepted when >= it: the (FAR, TAR, false and true
/// accepts, threshold) of each, strictest first, with (0, 0) in front.
fn full_roc(scores: &[f64], same: &[bool]) -> Vec<(f64, f64, i64, i64, f64)> {
    let mut thresholds = scores.to_vec();
    thresholds.sort_by(|a, b| b.total_cmp(a));
    thresholds.dedup();
    let p = same.iter().filter(|&&s| s).count();
    let q = same.len() - p;
    let mut out = vec![(0.0, 0.0, 0, 0, f64::INFINITY)];
    for t in thresholds {
        let tp = (0..scores.len())
            .filter(|&i| same[i] && scores[i] >= t)
            .count();
        let fp = (0..scores.len())
            .filter(|&i| !same[i] && scores[i] >= t)
            .count();
        out.push((
            fp as f64 / q as f64,
            tp as f64 / p as f64,
            fp as i64,
            tp as i64,
            t,
        ));
    }
    out
}

#[test]
fn ijbc_numbers_equal_a_brute_force_recomputation() {
    let Some(lfw) = faces(
        "ijbc_numbers_equal_a_brute_force_recomputation",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (set, made) = fixture(tmp.path(), &lfw);

    // The layout, against what the source tree implies.
    let meta = read_meta(&set);
    let people = made["people"].as_u64().unwrap() as usize;
    assert!(people >= 28, "{made}");
    let templates: BTreeMap<u32, u32> =
        meta.lists.iter().flatten().map(|(&t, &s)| (t, s)).collect();
    let faces_per_template = |t: u32| meta.faces.iter().filter(|f| f.1 == t).count();
    assert!(templates
        .keys()
        .all(|&t| (1..=3).contains(&faces_per_template(t))));
    // Several media in a template: the first two photos share one.
    let t1: Vec<u32> = meta
        .faces
        .iter()
        .filter(|f| f.1 == 1)
        .map(|f| f.2)
        .collect();
    assert_eq!((t1.len(), t1[0] == t1[1], t1[1] != t1[2]), (3, true, true));
    let n = templates.len();
    assert_eq!(made["templates"], n);
    assert_eq!(meta.pairs.len(), n * (n - 1) / 2);
    let mated = meta.pairs.iter().filter(|p| p.2).count();
    let mut per_subject: BTreeMap<u32, usize> = BTreeMap::new();
    templates
        .values()
        .for_each(|s| *per_subject.entry(*s).or_default() += 1);
    assert_eq!(
        mated,
        per_subject.values().map(|k| k * (k - 1) / 2).sum::<usize>()
    );
    assert_eq!(meta.lists[0].len() + meta.lists[1].len(), people);
    assert_eq!(meta.lists[2].len(), n - people);
    assert!(per_subject.values().filter(|&&k| k >= 5).count() >= 5);

    let cache = tmp.path().join("cache");
    let roc = tmp.path().join("roc.csv");
    let eval = |extra: &[&str]| {
        json(&succeed(
            smoothface()
                .args([
                    // The embedder `embed_by_hand` recomputes with.
                    "--model",
                    "mobilefacenet",
                    "eval",
                    "ijbc",
                    text(&set),
                    "--json",
                    "--cache",
                    text(&cache),
                ])
                .args(extra),
        ))
    };
    let r = eval(&["--roc", text(&roc)]);
    assert_eq!(r["faces"], meta.faces.len());
    assert_eq!(r["templates"], n);
    assert_eq!(r["embedding"]["embedded"], meta.faces.len());

    // Pooling and pair scores, by hand.
    let (plain, mirror) = embed_by_hand(&set, &meta);
    let pooled = pool_by_hand(&meta, &plain, &mirror);
    let scores: Vec<f64> = meta
        .pairs
        .iter()
        .map(|&(a, b, _)| dot(&pooled[&a], &pooled[&b]))
        .collect();
    let same: Vec<bool> = meta.pairs.iter().map(|p| p.2).collect();
    // The command pools in f64 and scores in f32, this test in f64 throughout: counts agree
    // unless a mated and a non-mated score are within float error of each other.
    let v = &r["verification"];
    let curve = full_roc(&scores, &same);
    // AUC as the Mann-Whitney statistic (ties count half).
    let (pos, neg): (Vec<f64>, Vec<f64>) = {
        let p = (0..scores.len())
            .filter(|&i| same[i])
            .map(|i| scores[i])
            .collect();
        let q = (0..scores.len())
            .filter(|&i| !same[i])
            .map(|i| scores[i])
            .collect();
        (p, q)
    };
    let wins: f64 = pos
        .iter()
        .map(|a| {
            neg.iter()
                .map(|b| {
                    if a > b {
                        1.0
                    } else if a == b {
                        0.5
                    } else {
                        0.0
                    }
                })
                .sum::<f64>()
        })
        .sum();
    let auc = wins / (pos.len() * neg.len()) as f64;
    let got_auc = v["auc"].as_f64().unwrap();
    assert!((auc - got_auc).abs() < 1e-4, "AUC {auc} vs {got_auc}");
    // sklearn's curve keeps (0,0), the first and last thresholds, and every point where the
    // counts' second difference is not zero; TAR at the point nearest each FAR, first on ties.
    let last = curve.len() - 1;
    let kept: Vec<(f64, f64, f64)> = (0..curve.len())
        .filter(|&i| {
            i <= 1
                || i == last
                || curve[i + 1].2 - 2 * curve[i].2 + curve[i - 1].2 != 0
                || curve[i + 1].3 - 2 * curve[i].3 + curve[i - 1].3 != 0
        })
        .map(|i| (curve[i].0, curve[i].1, curve[i].4))
        .collect();
    for (k, far) in [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1].iter().enumerate() {
        let key = format!("1e-0{}", 6 - k);
        let mut best = (f64::INFINITY, 0.0);
        for &(f, t, _) in &kept {
            if (f - far).abs() < best.0 {
                best = ((f - far).abs(), t);
            }
        }
        close(
            best.1,
            &v["tar_at_far"][&key],
            &format!("TAR@{key} (nearest)"),
        );
        let at_most = curve
            .iter()
            .filter(|p| p.0 <= *far)
            .map(|p| p.1)
            .fold(0.0, f64::max);
        close(
            at_most,
            &v["tar_at_far_at_most"][&key],
            &format!("TAR@{key} (at most)"),
        );
    }

    // 1:N, each gallery on its own: stable ranks; TPIR by trying every threshold.
    for (g, name) in [(0, "g1"), (1, "g2")] {
        let gallery: Vec<(u32, u32)> = meta.lists[g].iter().map(|(&t, &s)| (t, s)).collect();
        let (mut ranks, mut mated_top, mut non_top) = (Vec::new(), Vec::new(), Vec::new());
        for (&probe, &subject) in &meta.lists[2] {
            let s: Vec<f64> = gallery
                .iter()
                .map(|(t, _)| dot(&pooled[&probe], &pooled[t]))
                .collect();
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| s[b].total_cmp(&s[a])); // stable: ties keep gallery order
            match gallery.iter().position(|&(_, gs)| gs == subject) {
                Some(j) => {
                    let rank = 1 + order.iter().position(|&k| k == j).unwrap();
                    ranks.push(rank);
                    mated_top.push((rank == 1).then_some(s[j]));
                }
                None => non_top.push(s[order[0]]),
            }
        }
        let report = &r["identification"][name];
        assert_eq!(report["mated"], ranks.len());
        assert_eq!(report["non_mated"], non_top.len());
        for k in [1, 5, 10] {
            let share = ranks.iter().filter(|&&r| r <= k).count() as f64 / ranks.len() as f64;
            close(
                share,
                &report[format!("rank{k}")],
                &format!("{name} rank-{k}"),
            );
        }
        for (fpir, key) in [(0.01, "0.01"), (0.1, "0.1")] {
            // The strictest-to-loosest thresholds: accept a score > t; the loosest t whose
            // accepted non-mated share is at most the FPIR.
            let allowed = (fpir * non_top.len() as f64 + 1e-9).floor() as usize;
            let mut candidates: Vec<f64> = non_top.clone();
            candidates.push(f64::NEG_INFINITY);
            let t = candidates
                .iter()
                .copied()
                .filter(|&t| non_top.iter().filter(|&&s| s > t).count() <= allowed)
                .fold(f64::INFINITY, f64::min);
            let hits = mated_top
                .iter()
                .filter(|s| s.is_some_and(|s| s > t))
                .count();
            close(
                hits as f64 / mated_top.len() as f64,
                &report["tpir_at_fpir"][key],
                &format!("{name} TPIR@FPIR {key}"),
            );
        }
    }

    // Retrieval: identities with 5+ templates; every template queries the others; AP from
    // the ranked list.
    let kept_templates: Vec<(u32, u32)> = templates
        .iter()
        .filter(|(_, s)| per_subject[s] >= 5)
        .map(|(&t, &s)| (t, s))
        .collect();
    let mut ap_sum = 0.0;
    let mut r1 = 0.0;
    for &(q, qs) in &kept_templates {
        let mut others: Vec<(f64, bool)> = kept_templates
            .iter()
            .filter(|&&(t, _)| t != q)
            .map(|&(t, s)| (dot(&pooled[&q], &pooled[&t]), s == qs))
            .collect();
        others.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut hits, mut ap) = (0.0, 0.0);
        for (i, (_, rel)) in others.iter().enumerate() {
            if *rel {
                hits += 1.0;
                ap += hits / (i + 1) as f64;
            }
        }
        ap_sum += ap / hits;
        r1 += f64::from(u8::from(others[0].1));
    }
    let m = kept_templates.len() as f64;
    assert_eq!(r["retrieval"]["templates"], kept_templates.len());
    let got_map = r["retrieval"]["map"].as_f64().unwrap();
    assert!(
        (ap_sum / m - got_map).abs() < 1e-6,
        "mAP {} vs {got_map}",
        ap_sum / m
    );
    close(r1 / m, &r["retrieval"]["recall_at_1"], "R@1");

    // The ROC files: one CSV row per point of sklearn's curve, each threshold a pair score
    // (so the scores themselves, not only their order, are checked), and a PNG.
    let csv = std::fs::read_to_string(&roc).unwrap();
    assert_eq!(csv.lines().next(), Some("far,tar,threshold"));
    assert_eq!(csv.lines().count(), 1 + kept.len());
    for (line, &(far, tar, threshold)) in csv.lines().skip(1).zip(&kept) {
        let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        assert!(
            (f[0] - far).abs() < 1e-12 && (f[1] - tar).abs() < 1e-12,
            "{line}"
        );
        assert!(
            f[2] == threshold || (f[2] - threshold).abs() < 1e-5,
            "pair score {threshold} by hand, {} from eval ijbc",
            f[2]
        );
    }
    let png = image::open(roc.with_extension("png")).unwrap();
    assert_eq!((png.width(), png.height()), (800, 600));

    // A second protocol and a second run embed nothing; without the flip test the plain
    // features are reused too.
    let again = eval(&["--protocol", "1:1"]);
    assert_eq!(again["embedding"]["embedded"], 0);
    assert_eq!(again["embedding"]["cached"], meta.faces.len());
    assert_eq!(again["verification"], r["verification"]);
    assert!(again["identification"].is_null() && again["retrieval"].is_null());
    let no_flip = eval(&["--no-flip", "--protocol", "1:N"]);
    assert_eq!(no_flip["embedding"]["embedded"], 0);
    assert_eq!(no_flip["options"]["flip"], false);
    // A run killed midway leaves whole chunk files: one removed is embedded again, alone.
    let chunk = std::fs::read_dir(&cache)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-flip.f32"))
        .unwrap();
    std::fs::remove_file(&chunk).unwrap();
    let resumed = eval(&[]);
    assert_eq!(resumed["embedding"]["embedded"], meta.faces.len().min(256));
    assert_eq!(resumed["verification"], r["verification"]);
}

#[test]
fn bad_ijbc_input_names_the_file_and_the_batch_goes_on() {
    let Some(lfw) = faces(
        "bad_ijbc_input_names_the_file_and_the_batch_goes_on",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    copy_people(&lfw, &src, 4, 6);
    let set = tmp.path().join("set");
    succeed(smoothface().args(["eval", "ijbc-fixture", text(&src), text(&set)]));
    // The fixture refuses to overwrite.
    let again = run(smoothface().args(["eval", "ijbc-fixture", text(&src), text(&set)]));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // A crop that is gone: listed, and its template pooled from the others.
    let meta = read_meta(&set);
    std::fs::remove_file(set.join("loose_crop").join(&meta.faces[0].0)).unwrap();
    let r = json(&succeed(smoothface().args([
        "eval",
        "ijbc",
        text(&set),
        "--json",
        "--no-cache",
    ])));
    let missing = r["missing_faces"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{r}");
    assert!(missing[0]["path"]
        .as_str()
        .unwrap()
        .ends_with(&meta.faces[0].0));
    assert_eq!(r["empty_templates"], 0);
    assert!(r["verification"]["auc"].as_f64().is_some());

    // A damaged metadata line: an error naming the file and the line.
    let points = set.join("meta/ijbc_name_5pts_score.txt");
    let text_before = std::fs::read_to_string(&points).unwrap();
    let mut lines: Vec<String> = text_before.lines().map(str::to_owned).collect();
    lines[2] = lines[2].replacen(' ', " x", 1);
    std::fs::write(&points, lines.join("\n")).unwrap();
    let out = run(smoothface().args(["eval", "ijbc", text(&set), "--no-cache"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ijbc_name_5pts_score.txt line 3"), "{err}");
    // A protocol asked for by name whose files are absent.
    std::fs::write(&points, text_before).unwrap();
    std::fs::remove_file(set.join("meta/ijbc_1N_probe_mixed.csv")).unwrap();
    let out = run(smoothface().args([
        "eval",
        "ijbc",
        text(&set),
        "--protocol",
        "1:N",
        "--no-cache",
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ijbc_1N_"));
}

/// The trainer's `eval ijbc` of a checkpoint gives the numbers the device gives for its export.
#[test]
fn the_trainer_and_the_device_agree_on_the_same_weights() {
    let Some(lfw) = faces(
        "the_trainer_and_the_device_agree_on_the_same_weights",
        "lfw-devtrain",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (set, _) = fixture(tmp.path(), &lfw);
    let ckpt = tmp.path().join("mfn.safetensors");
    let model = tmp.path().join("model");
    let train = || Command::new(binary("smoothface-train"));
    succeed(train().args([
        "import",
        text(&smoothface_tests::repo().join("models/mobilefacenet/fr_feature.onnx")),
        "--arch",
        "mobilefacenet",
        "--out",
        text(&ckpt),
    ]));
    succeed(train().args(["export", text(&ckpt), "--out", text(&model)]));
    let device = json(&succeed(smoothface().args([
        "--model",
        text(&model),
        "eval",
        "ijbc",
        text(&set),
        "--json",
        "--no-cache",
    ])));
    let trainer = json(&succeed(train().args([
        "eval",
        "ijbc",
        text(&set),
        "--checkpoint",
        text(&ckpt),
        "--device",
        "cpu",
        "--json",
        "--no-cache",
        "--quiet",
    ])));
    let num = |v: &serde_json::Value, path: &[&str]| {
        path.iter()
            .fold(v, |v, k| &v[*k])
            .as_f64()
            .unwrap_or_else(|| panic!("{path:?} in {v}"))
    };
    // libtorch and tract differ by ~1e-6 per feature: a pair or a probe may swap places where
    // two scores are that close, so the tolerance is one pair (one probe) of the smallest group.
    let one_pair = 1.0 / num(&device, &["verification", "mated"]);
    for far in ["1e-04", "1e-03", "1e-02", "1e-01"] {
        for key in ["tar_at_far", "tar_at_far_at_most"] {
            let (a, b) = (
                num(&device, &["verification", key, far]),
                num(&trainer, &["verification", key, far]),
            );
            assert!((a - b).abs() <= one_pair + 1e-12, "{key} {far}: {a} vs {b}");
        }
    }
    assert!(
        (num(&device, &["verification", "auc"]) - num(&trainer, &["verification", "auc"])).abs()
            < 1e-4
    );
    for g in ["g1", "g2"] {
        let one_probe = 1.0 / num(&device, &["identification", g, "mated"]);
        for k in ["rank1", "rank5", "rank10"] {
            let (a, b) = (
                num(&device, &["identification", g, k]),
                num(&trainer, &["identification", g, k]),
            );
            assert!((a - b).abs() <= one_probe + 1e-12, "{g} {k}: {a} vs {b}");
        }
    }
    let (a, b) = (
        num(&device, &["retrieval", "map"]),
        num(&trainer, &["retrieval", "map"]),
    );
    assert!((a - b).abs() < 1e-3, "mAP {a} vs {b}");
    assert_eq!(device["templates"], trainer["templates"]);
    assert_eq!(device["faces"], trainer["faces"]);
}
