//! The one test-support module of the workspace: where the real face photos, the models and the
//! freshly built binaries are, a small seeded generator, and how to run the binaries. The
//! end-to-end tests in `tests/` use it, and so do the other crates' tests (a dev-dependency).
//!
//! The crate `smoothface-tests` is the workspace's cross-crate tests: `tests/tests/*.rs` run the
//! built binaries on real faces (the gallery, people, videos, the service and its web app in a
//! browser, bundles, int8, IJB-C, trained models), check that the docs' flags exist
//! (`docs_flags.rs`) and that no crate's modules use each other round a circle (`house.rs`);
//! `tests/benches/serve_load.rs` is the service's load benchmark. Where to start reading: [`binary`] and [`faces`], which every test calls first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// The real face photos: `$SMOOTHFACE_FACES`, else `../shared/data/faces` beside the checkout.
///
/// When they are absent the test is skipped with a message naming the folder (`None`), as on a
/// user's fresh clone, unless `SMOOTHFACE_REQUIRE_DATA=1` (CI sets it), where a missing folder
/// fails the test: CI must never pass by skipping.
pub fn faces_root(test: &str) -> Option<PathBuf> {
    let root = std::env::var_os("SMOOTHFACE_FACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/faces"));
    if root.is_dir() {
        return Some(root);
    }
    if std::env::var_os("SMOOTHFACE_REQUIRE_DATA").is_some_and(|v| v == "1") {
        panic!(
            "{test}: no face photos at {} and SMOOTHFACE_REQUIRE_DATA=1: the data must be there",
            root.display()
        );
    }
    eprintln!(
        "SKIPPED {test}: no face photos at {} (set SMOOTHFACE_FACES to their folder)",
        root.display()
    );
    None
}

/// One set of the face photos (`lfw-devtrain`, `glint-aligned12`, ...), as [`faces_root`].
pub fn faces(test: &str, set: &str) -> Option<PathBuf> {
    let dir = faces_root(test)?.join(set);
    assert!(
        dir.is_dir(),
        "{test}: the face photos have no {} folder",
        dir.display()
    );
    Some(dir)
}

/// The source tree's `models/` folder with the pretrained models; panics saying what to run when
/// they are not installed (every test run installs them first: `scripts/test`).
pub fn models() -> PathBuf {
    let dir = repo().join("models");
    for file in [
        "w600k_mbf/w600k_mbf.onnx",
        "mobilefacenet/fr_feature.onnx",
        "mtcnn/pnet.onnx",
        "scrfd/scrfd_500m_bnkps.onnx",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: run scripts/setup (scripts/test does)",
            dir.join(file).display()
        );
    }
    dir
}

/// The target profile folder this test binary runs from (`target/<profile>/deps/..`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// Path of a workspace binary (`smoothface`, `smoothface-train`) built for this test run. The
/// first call runs `cargo build --workspace --bins` in this test's profile and target folder, so a
/// test never runs a stale binary left in `target/` by an earlier build. Inside `cargo test
/// --workspace` (scripts/test) that build has nothing left to do: the whole workspace is selected,
/// so its features are the test run's and every binary is already fresh (`cargo test` releases
/// the build lock while tests run).
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let profile = profile_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let profile_name = match profile.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_owned(),
            Some(other) => other.to_owned(),
            None => "release".to_owned(),
        };
        let out = Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--bins",
                "--profile",
                &profile_name,
            ])
            .arg("--target-dir")
            .arg(profile.parent().expect("target/"))
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
    });
    if let Err(e) = built {
        panic!("building the workspace's binaries for this test run failed:\n{e}");
    }
    let path = profile.join(name);
    assert!(
        path.exists(),
        "{} is not a binary of this workspace",
        path.display()
    );
    path
}

/// A `smoothface` command with its gallery in `db`, the source tree's models and no progress bars.
pub fn smoothface(db: &Path) -> Command {
    let mut c = Command::new(binary("smoothface"));
    c.env("SMOOTHFACE_MODELS", models())
        .arg("--db")
        .arg(db)
        .arg("--quiet");
    c
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("start command")
}

/// Runs a command that must succeed, returning its output; panics with the command and its
/// stderr when it fails.
pub fn succeed(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
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

/// The subcommands a clap `--help` page lists under `Commands:` (without `help`), parsed from
/// the page rather than searched for in it, so that a word of a description never counts.
pub fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags a clap `--help` page lists under `Options:` (each option's first `--name`).
pub fn flags(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Options:")
        .skip(1)
        .filter_map(|l| {
            let l = l.trim_start();
            // `-q, --quiet`: the long name follows the short one.
            let l = match l.starts_with('-') && !l.starts_with("--") {
                true => l.split_once(", ").map_or(l, |(_, long)| long),
                false => l,
            };
            l.starts_with("--").then(|| {
                l.split([' ', '=', '<'])
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .collect()
}

/// SplitMix64: a small seeded generator, so that tests need no `rand` and give the same data on
/// every platform.
pub struct Rng(u64);

impl Rng {
    /// A generator from its seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A small integer in `-spread..=spread`, as f32 (exact sums and many ties).
    pub fn small(&mut self, spread: u32) -> f32 {
        self.below(2 * u64::from(spread) + 1) as f32 - spread as f32
    }
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

/// A library (`dir/library`) of `people` people with `count` photos each, and one more photo of
/// the first person kept outside it (`dir/query.jpg`), to search with; returns the library, the
/// people and the query photo.
pub fn library_with_query(
    dir: &Path,
    src: &Path,
    people: usize,
    count: usize,
) -> (PathBuf, Vec<String>, PathBuf) {
    let lib = dir.join("library");
    let names = copy_people(src, &lib, people, count + 1);
    let last = |name: &str| {
        let mut files: Vec<PathBuf> = std::fs::read_dir(lib.join(name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.pop().unwrap()
    };
    let query = dir.join("query.jpg");
    std::fs::rename(last(&names[0]), &query).unwrap();
    for n in &names[1..] {
        std::fs::remove_file(last(n)).unwrap();
    }
    (lib, names, query)
}

/// `smoothface serve` on `db` over the library `lib`, on a free loopback port; killed when
/// dropped, however the test ends.
pub struct ServeProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`, from the service's first line.
    pub url: String,
}

impl ServeProcess {
    /// Starts it and waits for its first line (it listens from then on).
    pub fn start(db: &Path, lib: &Path) -> ServeProcess {
        ServeProcess::spawn(
            smoothface(db)
                .args(["serve", "--listen", "127.0.0.1:0", "--library"])
                .arg(lib),
        )
    }

    /// Starts a command that runs `smoothface serve` (itself, or through a wrapper that sets
    /// its limits) and waits for the service's first line.
    pub fn spawn(cmd: &mut Command) -> ServeProcess {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start smoothface serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("serve's first line");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve's first line: {line:?}"))
            .trim_end_matches('/')
            .to_string();
        ServeProcess { child, url }
    }
}

impl ServeProcess {
    /// The service's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET of a JSON route that must answer.
    pub fn get(&self, route: &str) -> serde_json::Value {
        let body = ureq::get(format!("{}{route}", self.url))
            .call()
            .unwrap_or_else(|e| panic!("GET {route}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {route}: {e}: {body}"))
    }

    /// POST of a JSON body to a route that must answer.
    pub fn post(&self, route: &str, body: &serde_json::Value) -> serde_json::Value {
        let body = ureq::post(format!("{}{route}", self.url))
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {route}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("POST {route}: {e}: {body}"))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes an H.264 clip of `size` ("WxH") showing each photo for its seconds, in order, with
/// `scripts/make-clip` (the ffmpeg command-line tool).
pub fn make_clip(out: &Path, size: &str, segments: &[(&Path, f64)]) {
    let mut cmd = Command::new(repo().join("scripts/make-clip"));
    cmd.arg(out).args(["--size", size]);
    for (photo, secs) in segments {
        cmd.arg(format!("{}:{secs}", photo.display()));
    }
    let out = cmd
        .output()
        .expect("run scripts/make-clip (needs ffmpeg: scripts/setup installs it)");
    assert!(
        out.status.success(),
        "scripts/make-clip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`, at any depth, sorted by path.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.expect("read a test folder"))
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

/// Runs `smoothface-train` with `args`, which must succeed, and returns its last line of output
/// as JSON (each subcommand ends with one).
pub fn train(args: &[&str]) -> serde_json::Value {
    let out = succeed(Command::new(binary("smoothface-train")).args(args));
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

/// A path as a command-line argument (test paths are UTF-8).
pub fn text(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &str = "Find faces\n\nUsage: x [OPTIONS] <COMMAND>\n\nCommands:\n  index   Add the photos (search them later)\n  search  Rank\n  help    Print this message\n\nOptions:\n      --models <DIR>  Folder of folders, searched first\n  -q, --quiet         No bars\n  -h, --help          Print help\n";

    #[test]
    fn help_pages_are_parsed_not_searched() {
        assert_eq!(subcommands(HELP), ["index", "search"]);
        assert_eq!(flags(HELP), ["--models", "--quiet", "--help"]);
    }

    #[test]
    fn the_generator_is_seeded_and_in_range() {
        let (mut a, mut b) = (Rng::new(3), Rng::new(3));
        assert_eq!(a.next_u64(), b.next_u64());
        assert!((0..1000).all(|_| (-2.0..=2.0).contains(&a.small(2))));
        assert!((0..1000).all(|_| a.below(7) < 7));
    }
}
