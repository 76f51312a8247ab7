//! Help and docs cannot drift: every `--flag` that README.md, hardware.md and docs/*.md show on a
//! `smoothface` or `smoothface-train` command exists in that command's `--help`, and every
//! subcommand they name exists.
//!
//! What is read, after HTML comments are removed (the `<!-- TODO(...) -->` placeholders may name
//! features that do not exist yet):
//! - every line of a fenced code block (continuation lines joined, shell comments cut) that runs
//!   `smoothface` or `smoothface-train` (`target/release/smoothface`, `./smoothface` too), each
//!   command of a line separated by `|`, `&&`, `||` or `;`;
//! - every inline code span that holds such a command, or that starts with a subcommand of either
//!   binary (`` `bench --compare DIR` ``, tried on both binaries);
//! - every inline code span that starts with a bare `--flag`: that flag must exist somewhere in
//!   either binary, or be one of [`OTHER_TOOLS`], the flags of cargo and the scripts that the docs
//!   name on their own.
//!
//! A command is walked as clap walks it: words choose subcommands while the command has them, a
//! flag is looked up on the page of the subcommand reached so far (global options are listed on
//! every page), and a flag that takes a value (`--db <FILE>`) consumes the next word. The
//! `--help` pages are run, never the models, so the test needs no models and no data.

use smoothface_tests::{binary, repo, subcommands};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// The documents checked, relative to the repository's root; every `docs/*.md` is added.
const DOCS: [&str; 2] = ["README.md", "hardware.md"];

/// Flags of other tools that the docs may write on their own, in a code span without their
/// command: each must not be a flag of ours by accident, so each is listed with its tool.
const OTHER_TOOLS: [(&str, &str); 2] = [
    // cargo build / cargo install
    ("--features", "cargo"),
    ("--no-default-features", "cargo"),
];

/// Words that run the command after them, skipped before a code span's binary.
const WRAPPERS: [&str; 5] = ["time", "/usr/bin/time", "nice", "env", "sudo"];

/// The binaries whose commands are checked.
const BINARIES: [&str; 2] = ["smoothface", "smoothface-train"];

/// One `--help` page: its long options (and whether each takes a value) and its subcommands.
#[derive(Debug, Default)]
struct Page {
    options: BTreeMap<String, bool>,
    subcommands: Vec<String>,
}

/// Every `--help` page of one binary, by subcommand path (the root is the empty path).
#[derive(Debug)]
struct Cli {
    name: &'static str,
    pages: BTreeMap<Vec<String>, Page>,
}

/// The long options of a clap `--help` page, each with whether it takes a value: the option
/// lines of its `Options:` section (`  -q, --quiet`, `      --db <FILE>`), not its descriptions.
fn options(help: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let section = help
        .lines()
        .skip_while(|l| l.trim_end() != "Options:")
        .skip(1);
    for line in section {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim_start();
        if indent > 6 || !text.starts_with('-') {
            continue;
        }
        // `-q, --quiet`: the long name follows the short one.
        let text = match text.starts_with("--") {
            true => text,
            false => match text.split_once(", ") {
                Some((_, long)) => long,
                None => continue,
            },
        };
        if !text.starts_with("--") {
            continue;
        }
        // The option's header ends where its description starts (two spaces), if on one line.
        let header = text.split("  ").next().unwrap_or_default();
        let name = header
            .split([' ', '=', '<', '['])
            .next()
            .unwrap_or_default();
        out.insert(name.to_owned(), header.contains('<'));
    }
    out
}

impl Cli {
    /// Runs `NAME [SUBCOMMAND...] --help` for the binary and every subcommand under it, the
    /// pages of one level at once (the trainer takes seconds to load libtorch).
    fn load(name: &'static str) -> Cli {
        let exe = binary(name);
        let help = |path: &Vec<String>| -> Page {
            let out = Command::new(&exe)
                .args(path)
                .arg("--help")
                .output()
                .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
            let help = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "`{name} {} --help` failed: {}",
                path.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            let page = Page {
                options: options(&help),
                subcommands: subcommands(&help),
            };
            assert!(
                page.options.contains_key("--help"),
                "`{name} {} --help` lists no options: is this a clap help page?\n{help}",
                path.join(" ")
            );
            page
        };
        let mut pages = BTreeMap::new();
        let mut level = vec![Vec::<String>::new()];
        while !level.is_empty() {
            let found: Vec<Page> = std::thread::scope(|s| {
                let running: Vec<_> = level.iter().map(|p| s.spawn(|| help(p))).collect();
                running.into_iter().map(|t| t.join().unwrap()).collect()
            });
            let mut next = Vec::new();
            for (path, page) in level.into_iter().zip(found) {
                for sub in &page.subcommands {
                    let mut deeper = path.clone();
                    deeper.push(sub.clone());
                    next.push(deeper);
                }
                pages.insert(path, page);
            }
            level = next;
        }
        Cli { name, pages }
    }

    /// Whether any page of this binary has the option.
    fn has_anywhere(&self, flag: &str) -> bool {
        self.pages.values().any(|p| p.options.contains_key(flag))
    }

    /// Walks `args` as clap would and returns what does not exist, or the number of flags
    /// checked.
    fn check(&self, args: &[String]) -> Result<usize, String> {
        let mut path: Vec<String> = Vec::new();
        let mut checked = 0;
        let mut skip_value = false;
        let mut at_leaf = false;
        for arg in args {
            if std::mem::take(&mut skip_value) {
                continue;
            }
            let page = &self.pages[&path];
            let command = || {
                format!(
                    "`{}`",
                    [self.name]
                        .into_iter()
                        .chain(path.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            };
            if arg == "--" {
                break;
            } else if let Some(flag) = arg
                .strip_prefix("--")
                .map(|_| arg.split('=').next().unwrap_or(arg))
            {
                let Some(&takes_value) = page.options.get(flag) else {
                    return Err(format!("no {flag} in {} --help", command()));
                };
                checked += 1;
                skip_value = takes_value && !arg.contains('=');
            } else if arg.starts_with('-') && arg.len() > 1 {
                // A short flag (`-q`): not checked, and none of ours takes a value.
            } else if !page.subcommands.is_empty() && !at_leaf {
                if !page.subcommands.contains(arg) {
                    return Err(format!(
                        "no subcommand `{arg}` in {} --help (it has: {})",
                        command(),
                        page.subcommands.join(", ")
                    ));
                }
                path.push(arg.clone());
            } else {
                at_leaf = true;
            }
        }
        Ok(checked)
    }
}

/// Both binaries' help pages, loaded once.
fn clis() -> &'static [Cli] {
    static CLIS: OnceLock<Vec<Cli>> = OnceLock::new();
    CLIS.get_or_init(|| {
        std::thread::scope(|s| {
            let loading: Vec<_> = BINARIES
                .iter()
                .map(|&name| s.spawn(move || Cli::load(name)))
                .collect();
            loading.into_iter().map(|t| t.join().unwrap()).collect()
        })
    })
}

/// A piece of a document that may hold a command: a code block's line, or a code span.
#[derive(Debug, PartialEq)]
struct Snippet {
    line: usize,
    text: String,
    in_block: bool,
}

/// Runs of whitespace as one space, the ends trimmed.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text without its HTML comments, newlines kept so that line numbers stay right.
fn without_comments(doc: &str) -> String {
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("-->")
            .map_or(rest.len(), |e| start + e + 3);
        out.extend(rest[start..end].chars().filter(|&c| c == '\n'));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The code spans of a paragraph (CommonMark: a run of n backticks up to the next run of exactly
/// n), each with the line it starts on.
fn spans(paragraph: &str, first_line: usize, out: &mut Vec<Snippet>) {
    let bytes = paragraph.as_bytes();
    let run = |at: usize| bytes[at..].iter().take_while(|&&b| b == b'`').count();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run(i);
        let start = i + n;
        let mut j = start;
        let mut end = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run(j);
                if m == n {
                    end = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        let Some(end) = end else {
            // An unmatched run is literal backticks.
            i = start;
            continue;
        };
        let line = first_line + paragraph[..i].matches('\n').count();
        out.push(Snippet {
            line,
            text: squeeze(&paragraph[start..end].replace("\\|", "|")),
            in_block: false,
        });
        i = end + n;
    }
}

/// Every code block line (continuations joined, shell comments cut) and code span of a document.
fn snippets(doc: &str) -> Vec<Snippet> {
    let doc = without_comments(doc);
    let mut out = Vec::new();
    let mut fence: Option<&str> = None;
    let mut pending: Option<(usize, String)> = None;
    let mut paragraph = String::new();
    let mut paragraph_line = 0;
    for (n, line) in doc.lines().enumerate() {
        let number = n + 1;
        let trimmed = line.trim_start();
        if let Some(f) = fence {
            if trimmed.starts_with(f) {
                fence = None;
                continue;
            }
            let code = cut_comment(line);
            let (start, mut text) = pending.take().unwrap_or((number, String::new()));
            match code.trim_end().strip_suffix('\\') {
                Some(head) => {
                    text.push_str(head);
                    text.push(' ');
                    pending = Some((start, text));
                }
                None => {
                    text.push_str(code);
                    out.push(Snippet {
                        line: start,
                        text: squeeze(&text),
                        in_block: true,
                    });
                }
            }
            continue;
        }
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") || trimmed.is_empty() {
            spans(&paragraph, paragraph_line, &mut out);
            paragraph.clear();
            if !trimmed.is_empty() {
                fence = Some(&trimmed[..3]);
            }
            continue;
        }
        if paragraph.is_empty() {
            paragraph_line = number;
        } else {
            paragraph.push('\n');
        }
        paragraph.push_str(line);
    }
    spans(&paragraph, paragraph_line, &mut out);
    out
}

/// A code line without its shell comment (`#` at the start or after a space).
fn cut_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// The words of one command of a snippet, quotes, backticks and brackets taken off.
fn words(command: &str) -> Vec<String> {
    command
        .split_whitespace()
        .map(|w| w.trim_matches(|c| matches!(c, '\'' | '"' | '`' | '[' | ']' | '(' | ')')))
        .take_while(|w| !w.starts_with('>') && !w.starts_with("2>") && !w.starts_with('<'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The commands of a snippet: split at `|`, `&&`, `||`, `;` (with spaces around a lone `|`, so
/// that `paper|official` stays a word).
fn commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for part in text
        .split("&&")
        .flat_map(|p| p.split("||"))
        .flat_map(|p| p.split(';'))
    {
        for command in part.split(" | ") {
            out.push(words(command));
        }
    }
    out
}

/// Which binary a word runs: `smoothface`, `target/release/smoothface-train`, `./smoothface`.
fn runs(word: &str) -> Option<usize> {
    let base = word.rsplit('/').next().unwrap_or(word);
    BINARIES.iter().position(|&b| b == base)
}

/// Where a command's binary is: in a code block, wherever a word runs one; in a code span, only
/// as its first word after environment settings (`SMOOTHFACE_DB=g.sqlite`) and wrappers
/// (`/usr/bin/time -v`), so that prose such as an error message that mentions smoothface is not
/// taken for a command.
fn binary_at(command: &[String], in_block: bool) -> Option<usize> {
    if in_block {
        return command.iter().position(|w| runs(w).is_some());
    }
    let first = command.iter().position(|w| {
        let setting = w.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        });
        let wrapper =
            WRAPPERS.contains(&w.as_str()) || (w.starts_with('-') && !w.starts_with("--"));
        !setting && !wrapper
    })?;
    runs(&command[first]).map(|_| first)
}

/// What one document shows that the binaries do not have, and how many flags it checked.
fn check_doc(name: &str, doc: &str, clis: &[Cli]) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut checked = 0;
    for snippet in snippets(doc) {
        for command in commands(&snippet.text) {
            let at = |what: String| format!("{name}:{}: `{}`: {what}", snippet.line, snippet.text);
            if let Some(i) = binary_at(&command, snippet.in_block) {
                let cli = &clis[runs(&command[i]).expect("found above")];
                match cli.check(&command[i + 1..]) {
                    Ok(n) => checked += n,
                    Err(e) => problems.push(at(e)),
                }
                continue;
            }
            if snippet.in_block {
                continue;
            }
            let Some(first) = command.first() else {
                continue;
            };
            if first.starts_with("--") {
                for flag in command.iter().filter(|w| w.starts_with("--")) {
                    let flag = flag.split('=').next().unwrap_or(flag);
                    let ours = clis.iter().any(|c| c.has_anywhere(flag));
                    let other = OTHER_TOOLS.iter().any(|(f, _)| *f == flag);
                    match (ours, other) {
                        (true, false) => checked += 1,
                        (false, true) => {}
                        (true, true) => problems.push(at(format!(
                            "{flag} is listed in OTHER_TOOLS but is also a flag of ours"
                        ))),
                        (false, false) => problems.push(at(format!(
                            "no {flag} in any `smoothface` or `smoothface-train` --help page \
                             (a flag of another tool: write its command, or list it in OTHER_TOOLS)"
                        ))),
                    }
                }
            } else if clis
                .iter()
                .any(|c| c.pages[&Vec::new()].subcommands.contains(first))
            {
                // A command without its binary's name: it must hold on one of them.
                let tries: Vec<Result<usize, String>> = clis
                    .iter()
                    .filter(|c| c.pages[&Vec::new()].subcommands.contains(first))
                    .map(|c| c.check(&command))
                    .collect();
                match tries.iter().find_map(|t| t.as_ref().ok()) {
                    Some(n) => checked += n,
                    None => {
                        let why: Vec<&str> = tries
                            .iter()
                            .filter_map(|t| t.as_ref().err())
                            .map(String::as_str)
                            .collect();
                        problems.push(at(why.join("; ")));
                    }
                }
            }
        }
    }
    (problems, checked)
}

/// README.md, hardware.md and every docs/*.md, with their names.
fn documents() -> Vec<(String, String)> {
    let root = repo();
    let mut names: Vec<String> = DOCS.iter().map(|d| d.to_string()).collect();
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(root.join(Path::new(&name)))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect()
}

#[test]
fn every_flag_the_docs_show_exists() {
    let clis = clis();
    let docs = documents();
    let names: BTreeSet<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "docs/guide.md",
        "docs/api.md",
        "docs/training.md",
        "docs/evaluation.md",
        "docs/benchmarks.md",
        "docs/design.md",
    ] {
        assert!(names.contains(expected), "{expected} is missing");
    }
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, text) in &docs {
        let (p, n) = check_doc(name, text, clis);
        problems.extend(p);
        checked += n;
    }
    assert!(
        problems.is_empty(),
        "{} flag(s) or subcommand(s) in the docs that the binaries do not have:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!("{checked} flags checked in {} documents", docs.len());
    // Not vacuous: the docs show hundreds of flags; a parser that found none would pass above.
    assert!(
        checked >= 200,
        "only {checked} flags checked: is the parser broken?"
    );
}

#[test]
fn a_missing_flag_or_subcommand_is_named_with_its_file_and_command() {
    let clis = clis();
    let doc = "Intro `smoothface search --no-such-flag` and `--nor-this`.\n\n\
               ```sh\nsmoothface --db g.sqlite people frobnicate 3   # a comment --not-read\n\
               smoothface-train fit --config a.toml \\\n    --not-a-fit-flag\n```\n\n\
               <!-- TODO(x): `smoothface models warp --later` is a placeholder -->\n\
               `--features cuda` and `smoothface index ~/P --video-fps 1`.\n\
               `SMOOTHFACE_DB=g.sqlite /usr/bin/time -v smoothface stats --jsn`, but\n\
               ``an error: this smoothface was built --without `video` ``.\n";
    let (problems, checked) = check_doc("docs/x.md", doc, clis);
    let expect = [
        "docs/x.md:1: `smoothface search --no-such-flag`: no --no-such-flag in `smoothface search` --help",
        "docs/x.md:1: `--nor-this`: no --nor-this in any",
        "docs/x.md:4: `smoothface --db g.sqlite people frobnicate 3`: no subcommand `frobnicate` in `smoothface people` --help",
        "docs/x.md:5: `smoothface-train fit --config a.toml --not-a-fit-flag`: no --not-a-fit-flag in `smoothface-train fit` --help",
        "docs/x.md:11: `SMOOTHFACE_DB=g.sqlite /usr/bin/time -v smoothface stats --jsn`: no --jsn in `smoothface stats` --help",
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for (p, e) in problems.iter().zip(expect) {
        assert!(p.starts_with(e), "{p}\ndoes not start with\n{e}");
    }
    // Only the commands that hold count (here `--video-fps`); the comment's flag, the
    // placeholder's command, `--features` (cargo's) and the error message's prose were not
    // checked.
    assert_eq!(checked, 1, "{problems:#?}");
}

#[test]
fn spans_blocks_and_comments_are_read_as_markdown_reads_them() {
    let doc = "a `x` b ``y `z` w`` c\n`multi\nline`\n\n```toml\nk = 1   # `smoothface --x`\n```\n<!-- `hidden` -->`after`";
    let got: Vec<(usize, String, bool)> = snippets(doc)
        .into_iter()
        .map(|s| (s.line, s.text, s.in_block))
        .collect();
    assert_eq!(
        got,
        [
            (1, "x".to_owned(), false),
            (1, "y `z` w".to_owned(), false),
            (2, "multi line".to_owned(), false),
            (6, "k = 1".to_owned(), true),
            (8, "after".to_owned(), false),
        ]
    );
    assert_eq!(
        commands("a 'b c' && d [--m p|q] | e; f"),
        [
            vec!["a", "b", "c"],
            vec!["d", "--m", "p|q"],
            vec!["e"],
            vec!["f"]
        ]
    );
}
