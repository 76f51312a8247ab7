//! `smoothface people`: the people of the gallery, and the user's decisions about them.

use super::args::GroupingArgs;
use super::Global;
use anyhow::Result;
use clap::Subcommand;
use smoothface_device::people::decisions;
use smoothface_device::people::names::{self, printable};
use smoothface_device::people::store::{self as people_store, Whose};
use std::process::ExitCode;

/// The `people` subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Every person: id, name, faces, photos, the face that stands for them
    List {
        /// List the faces that belong to nobody instead
        #[arg(long)]
        unassigned: bool,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// A person's faces: face id, photo, box, score
    Show {
        /// Person id or name
        person: String,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Name a person (or rename)
    Name {
        /// Person id or name
        person: String,
        /// The name
        name: String,
    },
    /// These are the same person: the others' faces go to the first (which keeps its name)
    Merge {
        /// Person id or name that stays
        person: String,
        /// People merged into it
        #[arg(required = true)]
        others: Vec<String>,
    },
    /// These two are different people: a "Same person?" suggestion answered no (undo with
    /// `people undo`). No suggestion pairs them again
    #[command(name = "keep-apart")]
    KeepApart {
        /// Person id or name
        person: String,
        /// The other person's id or name
        other: String,
    },
    /// These faces are someone else: move them from a person to a new one, or to the named one
    Split {
        /// Person id or name the faces are taken from
        person: String,
        /// Face ids (see `people show`)
        #[arg(long, required = true, value_delimiter = ',', value_name = "ID,...")]
        faces: Vec<i64>,
        /// Name of the person they are: an existing one, or a new one of this name
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Move one face to a person
    Move {
        /// Face id (see `people show` or `people list --unassigned`)
        face: i64,
        /// Person id or name
        person: String,
    },
    /// These faces are not this person: they leave it, and no grouping puts them back
    Reject {
        /// Person id or name
        person: String,
        /// Face ids
        #[arg(long, required = true, value_delimiter = ',', value_name = "ID,...")]
        faces: Vec<i64>,
    },
    /// Pairs of people that may be one, best first: answer with `people merge A B` or
    /// `people keep-apart A B`
    #[command(
        long_about = "Pairs of people that may be one person, best first, for you to answer: \
        `smoothface people merge A B` (they are) or `smoothface people keep-apart A B` (they are \
        not; never suggested again). The score is how alike the two people's faces are, relative \
        to how alike each one's own faces are (1 at most). People with a face each in one photo \
        are never suggested."
    )]
    Suggest {
        /// How many pairs (0: every pair scoring above zero)
        #[arg(long, default_value_t = 20, value_name = "N")]
        top: usize,
        /// Print JSON: a, b, score, a_face, b_face
        #[arg(long)]
        json: bool,
    },
    /// Revert the last decision (repeat to go further back)
    Undo,
    /// Group the faces that belong to nobody (index does this after every run)
    Update {
        #[command(flatten)]
        grouping: GroupingArgs,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Every face of the gallery's model, one JSON object each: face, path, box, score, person
    Faces {
        /// Print JSON (the only format)
        #[arg(long, required = true)]
        json: bool,
        /// Include each face's embedding
        #[arg(long)]
        embeddings: bool,
    },
}

/// Lists, shows, suggests or regroups; or records a decision and prints what it did.
pub fn run(g: &Global, c: &Command) -> Result<ExitCode> {
    let mut conn = g.db()?;
    let (model_id, _) = g.gallery_model(&conn)?;
    let decided = match c {
        Command::List {
            unassigned: false,
            json,
        } => {
            let people = people_store::list(&conn, model_id)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&people)?);
            } else {
                for p in &people {
                    let face = p.representative.as_ref().map_or(String::new(), |r| {
                        format!("  e.g. face {} in {}", r.face, r.path)
                    });
                    println!(
                        "{:>5}  {:<24} {:>5} faces {:>5} photos{face}",
                        p.id,
                        p.name.as_deref().map_or("-".into(), names::printable),
                        p.faces,
                        p.media
                    );
                }
                eprintln!("{} people", people.len());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::List {
            unassigned: true,
            json,
        } => {
            let (faces, _) = people_store::faces(&conn, model_id, Whose::Nobody, false)?;
            print_faces(&faces, *json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Show { person, json } => {
            let id = decisions::resolve(&conn, model_id, person)?;
            let (faces, _) = people_store::faces(&conn, model_id, Whose::Person(id), false)?;
            print_faces(&faces, *json)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Suggest { top, json } => {
            let pairs = smoothface_device::people::suggest::for_gallery(&conn, model_id, *top)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&pairs)?);
            } else {
                let name = |id: i64| -> Result<String> {
                    Ok(people_store::summary(&conn, model_id, id)?
                        .and_then(|p| p.name)
                        .map_or(format!("{id}"), |n| format!("{id} ({})", printable(&n))))
                };
                for s in &pairs {
                    println!(
                        "{:.3}  {:<28} {:<28} faces {} and {}",
                        s.score,
                        name(s.a)?,
                        name(s.b)?,
                        s.a_face,
                        s.b_face
                    );
                }
                eprintln!(
                    "{} pairs; answer with `smoothface people merge A B` or `smoothface people keep-apart A B`",
                    pairs.len()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Faces { embeddings, .. } => {
            let (faces, damaged) = people_store::faces(&conn, model_id, Whose::All, *embeddings)?;
            if !damaged.is_empty() {
                eprintln!("warning: damaged faces {damaged:?} left out");
            }
            println!("{}", serde_json::to_string(&faces)?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Update { grouping, json } => {
            let thresholds = g.gallery_thresholds(&conn)?;
            let r = people_store::update(
                &mut conn,
                model_id,
                &grouping.eligibility(g.detector_group_min_score()?),
                &grouping.linkage(&thresholds)?,
            )?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_update(&r);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Name { person, name } => decisions::name(&mut conn, model_id, person, name)?,
        Command::Merge { person, others } => decisions::merge(&mut conn, model_id, person, others)?,
        Command::KeepApart { person, other } => {
            decisions::keep_apart(&mut conn, model_id, person, other)?
        }
        Command::Split {
            person,
            faces,
            name,
        } => decisions::split(&mut conn, model_id, person, faces, name.as_deref())?,
        Command::Move { face, person } => decisions::move_face(&mut conn, model_id, *face, person)?,
        Command::Reject { person, faces } => decisions::reject(&mut conn, model_id, person, faces)?,
        Command::Undo => decisions::undo(&mut conn, model_id)?,
    };
    println!("{}", decided.summary);
    Ok(ExitCode::SUCCESS)
}

fn print_faces(faces: &[people_store::FaceRow], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(faces)?);
    } else {
        for f in faces {
            let b = f.bbox;
            println!(
                "face {:>6}  score {:.3}  box ({:.0},{:.0})-({:.0},{:.0})  {}",
                f.face, f.score, b[0], b[1], b[2], b[3], f.path
            );
        }
        eprintln!("{} faces", faces.len());
    }
    Ok(())
}

/// What a grouping run did.
pub fn print_update(r: &people_store::UpdateReport) {
    println!(
        "people: {} faces joined people, {} new people ({} faces), {} faces unassigned; {} people in all",
        r.joined, r.new_people, r.faces_in_new_people, r.unassigned, r.people
    );
    if !r.damaged.is_empty() {
        eprintln!(
            "warning: damaged faces {:?} left out of the grouping; forget their photos and index them again",
            r.damaged
        );
    }
}
