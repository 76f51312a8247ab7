//! Helpers for the end-to-end tests in `tests/`: where the real face photos and the built
//! binaries are, and how to run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The real face photos (`../shared/data/faces` beside the checkout, or `$SMOOTHFACE_FACES`).
/// `None`, with a message saying the test is skipped, when they are absent: a user's fresh clone
/// does not have them.
pub fn faces_root(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("SMOOTHFACE_FACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/faces"));
    if root.is_dir() {
        Some(root)
    } else {
        eprintln!(
            "SKIPPED {test}: no face photos at {} (set SMOOTHFACE_FACES)",
            root.display()
        );
        None
    }
}

/// The workspace's target profile folder holding the built binaries (the test runs from
/// `target/<profile>/deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary; panics with what to run when it has not been built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests with `cargo test --release --workspace` (scripts/test), which builds it",
        path.display()
    );
    path
}

/// A `smoothface` command with its gallery in `db` and no progress bars.
pub fn smoothface(db: &Path) -> Command {
    let mut c = Command::new(binary("smoothface"));
    c.arg("--db").arg(db).arg("--quiet");
    c
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("start command")
}

/// Stdout as JSON; panics with both streams when it is not.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): status {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Copies `count` photos of each of the first people (sorted by name) of an LFW-layout folder
/// who have at least `count` photos, into `dest/<person>/`; returns the people copied.
pub fn copy_people(src: &Path, dest: &Path, people: usize, count: usize) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(src)
        .expect("read faces")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            std::fs::read_dir(e.path())
                .map(|d| d.count() >= count)
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.truncate(people);
    for name in &names {
        let mut files: Vec<_> = std::fs::read_dir(src.join(name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        std::fs::create_dir_all(dest.join(name)).unwrap();
        for f in files.iter().take(count) {
            std::fs::copy(f, dest.join(name).join(f.file_name().unwrap())).unwrap();
        }
    }
    names
}
