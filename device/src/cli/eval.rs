//! `smoothface eval`: accuracy on labelled photos (retrieval, people, IJB-B/C, LFW pairs) and
//! the embedder's calibrated thresholds.

use super::args::{face_pick, GroupingArgs};
use super::Global;
use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use smoothface_device::embedder::Embedder;
use smoothface_device::eval::ijbc_fixture::{self, FixtureOptions};
use smoothface_device::eval::{self, ijbc, RECALL_KS};
use smoothface_device::people::ente::EnteConfig;
use smoothface_device::people::evaluation;
use smoothface_device::people::immich::ImmichConfig;
use smoothface_device::people::store::Eligibility;
use smoothface_device::pipeline::FacePick;
use smoothface_shared::ijb::cli::IjbcArgs;
use smoothface_shared::manifest::ModelManifest;
use std::path::PathBuf;
use std::process::ExitCode;

/// The `eval` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Every face a query against all others in a folder-per-person tree: mAP and Recall@1/4/16
    Retrieval {
        /// Folder with one sub-folder of photos per person
        dir: PathBuf,
        /// Which face stands for a photo: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Leave out people with fewer photos than this
        #[arg(long, default_value_t = 2, value_name = "N")]
        min_per_person: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Group a folder-per-person tree's faces, ours beside the Immich rule and Ente's HDBSCAN:
    /// BCubed and pairwise F, same-photo pairs, and the "Same person?" suggestions
    People {
        /// Folder with one sub-folder of photos per person
        dir: PathBuf,
        /// Which face of each photo is labelled: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        #[command(flatten)]
        grouping: GroupingArgs,
        /// Immich's maxDistance (cosine distance)
        #[arg(long, default_value_t = ImmichConfig::default().max_distance, value_name = "D")]
        immich_max_distance: f32,
        /// Immich's minFaces
        #[arg(long, default_value_t = ImmichConfig::default().min_faces, value_name = "N")]
        immich_min_faces: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// IJB-B/C 1:1 TAR@FAR, 1:N rank-k and TPIR@FPIR, retrieval mAP, as insightface computes them
    #[command(
        long_about = "Evaluate the embedder on IJB-C (or IJB-B) in the layout \
        insightface's tools read: DIR/meta/ijbc_face_tid_mid.txt, ijbc_name_5pts_score.txt, \
        ijbc_template_pair_label.txt, ijbc_1N_gallery_G1.csv, ijbc_1N_gallery_G2.csv, \
        ijbc_1N_probe_mixed.csv, and DIR/loose_crop/. Each crop is aligned from its five \
        points and embedded with its mirror image (flip test); features keep their norm and are \
        weighted by the faceness score; a media's faces are averaged and a template is the sum \
        of its media, normalised.\n\n\
        1:1: TAR at FAR 1e-6 ... 1e-1 at the ROC point nearest each FAR (as insightface's \
        table), and AUC. 1:N: rank-1/5/10 and TPIR at FPIR 0.01/0.1 of the mixed probes against \
        G1 and against G2 each on its own (NIST's open-set way), and insightface ijb_1n.py's \
        joined-gallery figures, labelled as such. map: every template a query against all \
        others, identities with fewer than 5 templates left out (the Smooth-AP paper).\n\n\
        Features are cached under --cache by the model's sha256 and each image, so a killed run \
        resumes and a second protocol embeds nothing. Make a small set in this layout from a \
        folder-per-person tree with `smoothface eval ijbc-fixture`.\n\n  \
        smoothface eval ijbc /data/IJB_release/IJBC\n  \
        smoothface eval ijbc fixture/ --protocol 1:1 --roc roc.csv --json"
    )]
    Ijbc {
        #[command(flatten)]
        args: IjbcArgs,
    },
    /// Make an IJB-C-layout set from a folder-per-person tree, to check a model with `eval ijbc`
    #[command(
        long_about = "Make an IJB-C-layout set (meta/ and loose_crop/) from a \
        folder-per-person tree: the detector finds each photo's largest face (its landmarks and \
        score become the 5-point file); each person's photos become templates of \
        --photos-per-template photos, the first two of a template sharing one media as a \
        video's frames do; every pair of templates is a 1:1 pair; each person's first template \
        is in gallery G1 or G2 (alternately), the others are mixed probes. People with fewer \
        than two templates' worth of photos are left out. The photos are copied, not cut.\n\n  \
        smoothface eval ijbc-fixture ../shared/data/faces/lfw-devtrain /tmp/lfw-ijbc \\\n      \
        --max-people 50\n  smoothface eval ijbc /tmp/lfw-ijbc"
    )]
    IjbcFixture {
        /// Folder with one sub-folder of photos per person
        src: PathBuf,
        /// The new set's folder (must not exist)
        out: PathBuf,
        /// Photos per template
        #[arg(long, default_value_t = FixtureOptions::default().photos_per_template, value_name = "N")]
        photos_per_template: usize,
        /// Most templates from one person
        #[arg(long, default_value_t = FixtureOptions::default().max_templates_per_person, value_name = "N")]
        max_templates_per_person: usize,
        /// Most people, in name order
        #[arg(long, default_value_t = FixtureOptions::default().max_people, value_name = "N")]
        max_people: usize,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Measure the embedder's similarity thresholds on labelled sets (for its manifest)
    #[command(
        long_about = "Measure the embedder's similarity thresholds on labelled sets, every \
        threshold chosen on all of them at once and reported per set, the worst first.\n\n\
        Each DIR (one sub-folder of photos per person) is indexed into a temporary gallery as a \
        user's would be. link, link_relative and link_floor (people grouping): the grouping with the \
        best worst-set BCubed F whose BCubed precision is at least 0.97 on every set, among one \
        pass at 0.20-0.80 and two passes (a first pass at 0.36-0.56, then whole groups merged at \
        a relative link of 0.45-0.80 and a plain one of at least 0.15 or 0.25). identify (the camera \
        naming a face) and track_strong (a video track continuing anywhere): the strictest set's \
        threshold at a false-match rate of 1e-4 among different people's faces; track \
        (continuing where the boxes overlap): at 1e-2.\n\n\
        --write stores them in the model's manifest.json, where every command reads them; a \
        model without them gets conservative ones, with a warning.",
        after_help = "Examples:\n  smoothface eval calibrate ../shared/data/faces/*/\n  \
        smoothface --model ~/exports/finetuned eval calibrate ~/labelled/* --write"
    )]
    Calibrate {
        /// Folders with one sub-folder of photos per person
        #[arg(required = true, value_name = "DIR")]
        dirs: Vec<PathBuf>,
        /// Which face of each photo is labelled: largest, or central (nearest the image centre)
        #[arg(long, default_value = "central", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Write the thresholds into the model's manifest.json
        #[arg(long)]
        write: bool,
        /// Keep each set's gallery in this folder (SET.sqlite, one folder per model), so that
        /// a second run indexes nothing again
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Print JSON (with every set's grouping curve)
        #[arg(long)]
        json: bool,
    },
    /// Verification accuracy on LFW-format pairs (10-fold, or threshold chosen on --dev)
    Pairs {
        /// Folder with one sub-folder of photos per person (LFW layout)
        dir: PathBuf,
        /// Pairs file (`pairs.txt` of LFW View 2, or a View 1 file)
        pairs: PathBuf,
        /// Choose the threshold on this pairs file instead of 10-fold cross-validation
        #[arg(long, value_name = "PAIRS_DEV.txt")]
        dev: Option<PathBuf>,
        /// Which face stands for a photo: largest, or central (nearest the image centre)
        #[arg(long, default_value = "largest", value_parser = face_pick, value_name = "PICK")]
        face: FacePick,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Runs the evaluation and prints its report.
pub fn run(g: &Global, c: &Command) -> Result<ExitCode> {
    match c {
        Command::Retrieval {
            dir,
            face,
            min_per_person,
            json,
        } => {
            let pipeline = g.pipeline()?;
            let r = eval::retrieval(&pipeline, dir, *face, *min_per_person, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("skipped: {}: {}", m.path, m.reason);
                }
                println!(
                    "{} people, {} photos ({} without a usable face)",
                    r.people,
                    r.photos,
                    r.missing.len()
                );
                println!("mAP        {:.4}", r.metrics.map);
                for (k, v) in &r.metrics.recall_at {
                    println!("Recall@{k:<3} {v:.4}");
                }
            }
            debug_assert_eq!(r.metrics.recall_at.len(), RECALL_KS.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Calibrate {
            dirs,
            face,
            write,
            keep,
            json,
        } => {
            let pipeline = g.pipeline()?;
            if let Some(k) = keep {
                std::fs::create_dir_all(k)
                    .with_context(|| format!("--keep {}: cannot create it", k.display()))?;
            }
            let c = smoothface_device::eval::calibrate::calibrate(
                &pipeline,
                dirs,
                *face,
                &Eligibility {
                    min_score: pipeline.group_min_score,
                    ..Eligibility::default()
                },
                keep.as_deref(),
                g.progress(),
            )?;
            let written = match write {
                true => Some(smoothface_device::eval::calibrate::write_thresholds(
                    &g.model_dir()?,
                    &c.thresholds,
                )?),
                false => None,
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                print_calibration(&c);
            }
            if let Some(path) = written {
                eprintln!("thresholds written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::People {
            dir,
            face,
            grouping,
            immich_max_distance,
            immich_min_faces,
            json,
        } => {
            let pipeline = g.pipeline()?;
            let immich = ImmichConfig {
                max_distance: *immich_max_distance,
                min_faces: *immich_min_faces,
            };
            let options = evaluation::PeopleEvalOptions {
                pick: *face,
                eligibility: grouping.eligibility(pipeline.group_min_score),
                linkage: grouping.linkage(&pipeline.embedder.thresholds)?,
                immich,
                ente: EnteConfig::default(),
            };
            let r = evaluation::people(&pipeline, dir, g.db.as_deref(), &options, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("no labelled face: {}: {}", m.path, m.reason);
                }
                println!(
                "{} photos, {} labelled faces of {} people; {} faces in the gallery, {} grouped",
                r.photos, r.labelled_faces, r.true_people, r.gallery_faces, r.grouped_faces
            );
                println!("| grouping | BCubed F | BCubed P | BCubed R | pairwise F | NMI | people found | unassigned | same-photo pairs | time |");
                println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
                for (what, s) in [
                    ("ours (average linkage)", &r.ours),
                    ("Immich rule", &r.immich),
                    ("Ente's HDBSCAN", &r.ente),
                ] {
                    println!(
                    "| {what} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {:.1}% | {} | {:.0} ms |",
                    s.bcubed_f,
                    s.scores.bcubed_precision,
                    s.scores.bcubed_recall,
                    s.pairwise_f,
                    s.scores.nmi,
                    s.people_found,
                    100.0 * s.unassigned_share,
                    s.same_photo_pairs,
                    s.ms
                );
                }
                for s in &r.suggestions {
                    println!(
                        "\"same person?\" suggestions, best {}: {} of {} right (precision {:.3}), \
                     {} of our {} split pairs (recall {:.3})",
                        s.top, s.right, s.suggested, s.precision, s.right, s.split_pairs, s.recall
                    );
                }
                println!(
                    "\nsearch --person, mAP over {} people by fusion:",
                    r.fusion_queries
                );
                for (name, map) in &r.fusion_map {
                    println!("  {name:<15} {map:.4}");
                }
                println!("\nvideo track pooling (the same faces as one vector), mAP:");
                for (name, map) in &r.pooling_map {
                    println!("  {name:<15} {map:.4}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ijbc { args } => {
            let embedder = Embedder::load(&ModelManifest::load(&g.model_dir()?)?)?;
            let r = ijbc::run(&embedder, &args.dir, &args.options(), g.progress())?;
            args.finish(&r, &embedder.name).map_err(|e| anyhow!(e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::IjbcFixture {
            src,
            out,
            photos_per_template,
            max_templates_per_person,
            max_people,
            json,
        } => {
            let options = FixtureOptions {
                photos_per_template: *photos_per_template,
                max_templates_per_person: *max_templates_per_person,
                max_people: *max_people,
            };
            let r = ijbc_fixture::build(&g.pipeline()?, src, out, &options, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.skipped {
                    eprintln!("left out: {}: {}", m.path, m.reason);
                }
                println!(
                "{}: {} people, {} templates, {} faces; {} pairs ({} mated); galleries {} + {}, {} probes",
                r.dir.display(),
                r.people,
                r.templates,
                r.faces,
                r.pairs,
                r.mated_pairs,
                r.gallery[0],
                r.gallery[1],
                r.probes
            );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pairs {
            dir,
            pairs,
            dev,
            face,
            json,
        } => {
            let pipeline = g.pipeline()?;
            let r = eval::pairs(&pipeline, dir, pairs, dev.as_deref(), *face, g.progress())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for m in &r.missing {
                    eprintln!("no embedding: {}: {}", m.path, m.reason);
                }
                match (&r.kfold, r.dev_threshold) {
                    (Some(k), _) => println!(
                        "{} pairs, 10-fold accuracy {:.4} ± {:.4}",
                        r.pairs, k.mean_accuracy, k.std_accuracy
                    ),
                    (None, Some(t)) => println!(
                        "{} pairs, accuracy {:.4} at the dev threshold {t:.4}",
                        r.pairs, r.accuracy
                    ),
                    (None, None) => unreachable!("pairs evaluation has a fold or a dev threshold"),
                }
                println!("TAR@FAR=1e-2 {:.4}", r.tar_at_far_1e2);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The thresholds and every set's figures, the worst set first.
fn print_calibration(c: &smoothface_device::eval::calibrate::Calibration) {
    let t = &c.thresholds;
    let second = match (t.link_relative, t.link_floor) {
        (Some(r), Some(f)) => format!(" then relative {r:.2} over {f:.2}"),
        _ => String::new(),
    };
    println!(
        "{}: link {:.2}{second}, identify {:.4}, track {:.4}, track_strong {:.4}",
        c.model, t.link, t.identify, t.track, t.track_strong
    );
    println!("| set (worst first) | photos | people | BCubed F | P | R | at FMR 1e-4 | at FMR 1e-2 | same-person pairs at identify |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in &c.sets {
        println!(
            "| {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.1}% |",
            s.set,
            s.photos,
            s.people,
            s.grouping.bcubed_f,
            s.grouping.scores.bcubed_precision,
            s.grouping.scores.bcubed_recall,
            s.strict,
            s.loose,
            100.0 * s.identify_tmr
        );
    }
}
