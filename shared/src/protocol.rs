//! Readers of evaluation protocols and face datasets.
//!
//! * **LFW pairs files** ([`parse_lfw_pairs`], [`read_lfw_pairs`]): the list of face pairs that
//!   the verification protocol scores, with each pair's cross-validation fold. Both official
//!   layouts are read: View 2's `pairs.txt` (header `F N`: F folds, each N matched then N
//!   mismatched pairs) and View 1's `pairsDevTrain.txt`/`pairsDevTest.txt` (header `N`: N matched
//!   then N mismatched pairs, spread over ten folds by position so the same k-fold code applies).
//! * **Folder-per-person trees** ([`folder_per_person`]): the layout of LFW, the Yale faces and
//!   most small identity datasets, used for retrieval evaluation.
//!
//! Dataset files are edited, truncated and re-downloaded by hand, so every error names the file
//! and line and says what was expected there: a bad evaluation file should fail loudly, never
//! silently shift every pair after it into the wrong fold.

use std::fs;
use std::path::{Path, PathBuf};

/// Why a protocol file or dataset tree could not be read.
///
/// The underlying error is part of the message (a `cause` field, not an error `source`), so a
/// chain printed with `{:#}` shows it once, not twice.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying failure.
        cause: std::io::Error,
    },
    /// A line of a protocol file does not have the expected form.
    #[error("{file} line {line}: {message}")]
    Parse {
        /// The file's path, or `<text>` when parsing a string.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// A person directory's name is not UTF-8, so it cannot become an identity name.
    #[error("{}: directory name is not valid UTF-8", path.display())]
    NonUtf8Name {
        /// The directory.
        path: PathBuf,
    },
}

/// One face of an LFW pair: a person and the 1-based number of their image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSide {
    /// The person's name as in the dataset, e.g. `Abel_Pacheco`.
    pub person: String,
    /// The image number, e.g. 1 for `Abel_Pacheco_0001.jpg`.
    pub index: u32,
}

/// A verification pair from an LFW pairs file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// First face.
    pub a: PairSide,
    /// Second face.
    pub b: PairSide,
    /// Whether both faces show the same person (a "matched" pair).
    pub same: bool,
    /// Cross-validation fold, `0..10` for the official files.
    pub fold: usize,
}

/// Folds that View 1's single block of pairs is spread over, matching View 2's ten.
const VIEW1_FOLDS: usize = 10;

/// The layout promised by a pairs file's header line.
enum Header {
    /// View 2: `folds` blocks, each `per_fold` matched then `per_fold` mismatched pairs.
    Folds { folds: usize, per_fold: usize },
    /// View 1: `pairs` matched then `pairs` mismatched pairs.
    Single { pairs: usize },
}

impl Header {
    /// Number of blocks and matched (= mismatched) pairs per block.
    fn blocks(&self) -> (usize, usize) {
        match *self {
            Header::Folds { folds, per_fold } => (folds, per_fold),
            Header::Single { pairs } => (1, pairs),
        }
    }

    /// Fold of the pair at `position` among the matched (or mismatched) pairs of `block`.
    fn fold(&self, block: usize, position: usize) -> usize {
        match *self {
            Header::Folds { .. } => block,
            Header::Single { pairs } => position * VIEW1_FOLDS / pairs,
        }
    }

    /// Where a pair sits, for error messages.
    fn describe(&self, block: usize, position: usize, same: bool) -> String {
        let (_, per_block) = self.blocks();
        let kind = if same { "matched" } else { "mismatched" };
        match self {
            Header::Folds { .. } => format!(
                "{kind} pair {} of {per_block} in fold {}",
                position + 1,
                block + 1
            ),
            Header::Single { .. } => format!("{kind} pair {} of {per_block}", position + 1),
        }
    }
}

/// Parses the text of an LFW pairs file (View 1 or View 2, told apart by the header). Errors name
/// the file as `<text>`; use [`read_lfw_pairs`] to have them name the real file.
pub fn parse_lfw_pairs(text: &str) -> Result<Vec<Pair>, ProtocolError> {
    parse_pairs(text, "<text>")
}

/// Reads and parses an LFW pairs file such as `pairs.txt` or `pairsDevTrain.txt`.
pub fn read_lfw_pairs(path: &Path) -> Result<Vec<Pair>, ProtocolError> {
    let text = fs::read_to_string(path).map_err(|source| ProtocolError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    parse_pairs(&text, &path.display().to_string())
}

/// The path of one LFW image: `root/person/person_0001.jpg`.
pub fn lfw_image_path(root: &Path, side: &PairSide) -> PathBuf {
    root.join(&side.person)
        .join(format!("{}_{:04}.jpg", side.person, side.index))
}

/// [`parse_lfw_pairs`] with `file` naming the source in error messages.
fn parse_pairs(text: &str, file: &str) -> Result<Vec<Pair>, ProtocolError> {
    let error = |line: usize, message: String| ProtocolError::Parse {
        file: file.to_owned(),
        line,
        message,
    };
    // A byte-order mark from a Windows editor would otherwise spoil the header with an invisible
    // character.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Blank lines (a trailing newline, a stray empty line) carry nothing; skip them but keep the
    // real line numbers for messages. `lines` also drops the `\r` of CRLF line ends.
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.trim().is_empty());

    const HEADER_FORMS: &str = "header `folds pairs_per_fold` (View 2) or `pairs` (View 1)";
    let Some((header_line, header_text)) = lines.next() else {
        return Err(error(1, format!("expected {HEADER_FORMS}, found no lines")));
    };
    let numbers: Option<Vec<usize>> = header_text
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect();
    let header = match numbers.as_deref() {
        Some(&[folds, per_fold]) => Header::Folds { folds, per_fold },
        Some(&[pairs]) => Header::Single { pairs },
        _ => {
            return Err(error(
                header_line,
                format!("expected {HEADER_FORMS}, found `{}`", header_text.trim()),
            ))
        }
    };

    let (blocks, per_block) = header.blocks();
    let Some(total) = blocks
        .checked_mul(per_block)
        .and_then(|pairs| pairs.checked_mul(2))
    else {
        return Err(error(
            header_line,
            format!("header `{}` promises too many pairs", header_text.trim()),
        ));
    };
    // Count errors quote the header, since either it or the list of pairs may be the mistake.
    let promise = format!("header `{}` promises {total} pairs", header_text.trim());

    let mut pairs = Vec::new();
    let mut last_line = header_line;
    for k in 0..total {
        let (block, within) = (k / (2 * per_block), k % (2 * per_block));
        let same = within < per_block;
        let position = within % per_block;
        let Some((line_number, line)) = lines.next() else {
            return Err(error(
                last_line + 1,
                format!("{promise}, but the file ends after {k}"),
            ));
        };
        last_line = line_number;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (a, b) = parse_pair_line(&fields, same).map_err(|problem| {
            error(
                line_number,
                format!("{problem} ({})", header.describe(block, position, same)),
            )
        })?;
        pairs.push(Pair {
            a,
            b,
            same,
            fold: header.fold(block, position),
        });
    }
    if let Some((line_number, _)) = lines.next() {
        return Err(error(
            line_number,
            format!("{promise}, but more lines follow"),
        ));
    }
    Ok(pairs)
}

/// The two faces of a matched (`name i j`) or mismatched (`name1 i name2 j`) line; the error says
/// what was expected and what was found.
fn parse_pair_line(fields: &[&str], same: bool) -> Result<(PairSide, PairSide), String> {
    let side = |person: &str, index: &str| -> Result<PairSide, String> {
        match index.parse::<u32>() {
            // LFW numbers images from 1; a 0 would name a file that cannot exist.
            Ok(0) => Err("expected an image number from 1, found `0`".to_owned()),
            Ok(index) => Ok(PairSide {
                person: person.to_owned(),
                index,
            }),
            Err(_) => Err(format!("expected an image number, found `{index}`")),
        }
    };
    match (same, fields) {
        (true, &[person, i, j]) => Ok((side(person, i)?, side(person, j)?)),
        (false, &[person_a, i, person_b, j]) => Ok((side(person_a, i)?, side(person_b, j)?)),
        (true, _) => Err(format!(
            "expected `name i j`, found {} fields",
            fields.len()
        )),
        (false, _) => Err(format!(
            "expected `name1 i name2 j`, found {} fields",
            fields.len()
        )),
    }
}

/// One person of a folder-per-person dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The directory name, e.g. `Abel_Pacheco` or `yaleB01`.
    pub name: String,
    /// The person's image files, sorted by file name.
    pub images: Vec<PathBuf>,
}

/// Lists a folder-per-person dataset: each sub-directory of `root` is one person, and its
/// regular files are that person's images.
///
/// Files are taken whatever their extension, or without one (the Yale faces have none); hidden
/// entries (names starting with `.`, such as `.DS_Store`) are skipped, as are nested directories
/// and files at the top level (`pairs.txt`, a README). Symbolic links are followed. Identities
/// are sorted by name and images by file name, so the listing is the same on every machine; a
/// person directory without images is still listed, with no images. An entry that cannot be
/// inspected, such as a broken symbolic link, is an error naming it.
pub fn folder_per_person(root: &Path) -> Result<Vec<Identity>, ProtocolError> {
    let mut identities = Vec::new();
    for person_dir in visible_entries(root)? {
        if !metadata(&person_dir)?.is_dir() {
            continue;
        }
        let name = person_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ProtocolError::NonUtf8Name {
                path: person_dir.clone(),
            })?
            .to_owned();
        let mut images = Vec::new();
        for image in visible_entries(&person_dir)? {
            if metadata(&image)?.is_file() {
                images.push(image);
            }
        }
        // All share one parent, so path order is file-name order.
        images.sort();
        identities.push(Identity { name, images });
    }
    identities.sort_by(|x, y| x.name.cmp(&y.name));
    Ok(identities)
}

/// Paths of the entries of `dir` whose names do not start with `.`.
fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>, ProtocolError> {
    let io_error = |source| ProtocolError::Io {
        path: dir.to_path_buf(),
        cause: source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let entry = entry.map_err(io_error)?;
        if !entry.file_name().as_encoded_bytes().starts_with(b".") {
            paths.push(entry.path());
        }
    }
    Ok(paths)
}

/// Metadata following symbolic links, so linked person directories and images count.
fn metadata(path: &Path) -> Result<fs::Metadata, ProtocolError> {
    fs::metadata(path).map_err(|source| ProtocolError::Io {
        path: path.to_path_buf(),
        cause: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(person: &str, index: u32) -> PairSide {
        PairSide {
            person: person.to_owned(),
            index,
        }
    }

    fn matched(person: &str, i: u32, j: u32, fold: usize) -> Pair {
        Pair {
            a: side(person, i),
            b: side(person, j),
            same: true,
            fold,
        }
    }

    fn mismatched(a: &str, i: u32, b: &str, j: u32, fold: usize) -> Pair {
        Pair {
            a: side(a, i),
            b: side(b, j),
            same: false,
            fold,
        }
    }

    fn parse_error(text: &str) -> String {
        parse_lfw_pairs(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_view2_folds() {
        // 2 folds of 2 matched then 2 mismatched; tabs and spaces mixed, trailing newline.
        let text = "2\t2\n\
                    Ann\t1\t2\n\
                    Bob 3 4\n\
                    Ann\t1\tBob\t2\n\
                    Cid  1  Dee  7\n\
                    Eve\t1\t3\n\
                    Fay\t2\t5\n\
                    Eve\t2\tFay\t1\n\
                    Gus\t10\tHal\t1234\n";
        let pairs = parse_lfw_pairs(text).unwrap();
        assert_eq!(
            pairs,
            [
                matched("Ann", 1, 2, 0),
                matched("Bob", 3, 4, 0),
                mismatched("Ann", 1, "Bob", 2, 0),
                mismatched("Cid", 1, "Dee", 7, 0),
                matched("Eve", 1, 3, 1),
                matched("Fay", 2, 5, 1),
                mismatched("Eve", 2, "Fay", 1, 1),
                mismatched("Gus", 10, "Hal", 1234, 1),
            ]
        );
    }

    #[test]
    fn parses_view1_with_ten_positional_folds() {
        // N = 4 matched then 4 mismatched: pair i goes to fold i * 10 / 4 = 0, 2, 5, 7.
        let mut text = String::from("4\n");
        for i in 1..=4 {
            text.push_str(&format!("P{i}\t1\t2\n"));
        }
        for i in 1..=4 {
            text.push_str(&format!("P{i}\t1\tQ{i}\t3\n"));
        }
        let pairs = parse_lfw_pairs(&text).unwrap();
        let folds: Vec<usize> = pairs.iter().map(|p| p.fold).collect();
        assert_eq!(folds, [0, 2, 5, 7, 0, 2, 5, 7]);
        assert_eq!(pairs[3], matched("P4", 1, 2, 7));
        assert_eq!(pairs[5], mismatched("P2", 1, "Q2", 3, 2));
        // The official pairsDevTrain.txt has 1100 of each: pair 109 is in fold 0, 110 in fold 1,
        // 1099 in fold 9 (109 * 10 / 1100 = 0, 110 * 10 / 1100 = 1, 10990 / 1100 = 9).
        let mut text = String::from("1100\n");
        for _ in 0..1100 {
            text.push_str("A 1 2\n");
        }
        for _ in 0..1100 {
            text.push_str("A 1 B 1\n");
        }
        let pairs = parse_lfw_pairs(&text).unwrap();
        assert_eq!(pairs.len(), 2200);
        assert_eq!(
            [pairs[109].fold, pairs[110].fold, pairs[1099].fold],
            [0, 1, 9]
        );
        assert_eq!(
            [
                pairs[1100 + 109].fold,
                pairs[1100 + 110].fold,
                pairs[2199].fold
            ],
            [0, 1, 9]
        );
    }

    #[test]
    fn blank_lines_crlf_and_bom_are_tolerated() {
        let text = "\n1 1\n\nAnn 1 2\n\nAnn 1 Bob 1\n\n";
        assert_eq!(parse_lfw_pairs(text).unwrap().len(), 2);
        // Windows line ends and a byte-order mark.
        let text = "\u{feff}1 1\r\nAnn 1 2\r\nAnn 1 Bob 1\r\n";
        assert_eq!(
            parse_lfw_pairs(text).unwrap(),
            [matched("Ann", 1, 2, 0), mismatched("Ann", 1, "Bob", 1, 0)]
        );
        // The bad line is the 6th line of the text, blank lines included.
        let text = "\n1 1\n\nAnn 1 2\n\nAnn 1 Bob\n";
        assert_eq!(
            parse_error(text),
            "<text> line 6: expected `name1 i name2 j`, found 3 fields \
             (mismatched pair 1 of 1 in fold 1)"
        );
    }

    #[test]
    fn bad_lines_are_reported_with_line_and_expectation() {
        assert_eq!(
            parse_error("1 2\nAnn 1 2\nBob 1\n"),
            "<text> line 3: expected `name i j`, found 2 fields (matched pair 2 of 2 in fold 1)"
        );
        // A mismatched line where a matched one belongs.
        assert_eq!(
            parse_error("2\nAnn 1 2\nAnn 1 Bob 2\n"),
            "<text> line 3: expected `name i j`, found 4 fields (matched pair 2 of 2)"
        );
        assert_eq!(
            parse_error("1\nAnn 1 x\nAnn 1 Bob 2\n"),
            "<text> line 2: expected an image number, found `x` (matched pair 1 of 1)"
        );
        assert_eq!(
            parse_error("1\nAnn 1 2\nAnn 0 Bob 2\n"),
            "<text> line 3: expected an image number from 1, found `0` (mismatched pair 1 of 1)"
        );
        assert_eq!(
            parse_error("ten 300\n"),
            "<text> line 1: expected header `folds pairs_per_fold` (View 2) or `pairs` (View 1), \
             found `ten 300`"
        );
        assert_eq!(
            parse_error("1 2 3\n"),
            "<text> line 1: expected header `folds pairs_per_fold` (View 2) or `pairs` (View 1), \
             found `1 2 3`"
        );
        assert_eq!(
            parse_error(""),
            "<text> line 1: expected header `folds pairs_per_fold` (View 2) or `pairs` (View 1), \
             found no lines"
        );
    }

    #[test]
    fn counts_that_disagree_with_the_header_are_errors() {
        assert_eq!(
            parse_error("2 1\nAnn 1 2\nAnn 1 Bob 2\nCid 1 2\n"),
            "<text> line 5: header `2 1` promises 4 pairs, but the file ends after 3"
        );
        assert_eq!(
            parse_error("1\nAnn 1 2\nAnn 1 Bob 2\nCid 1 2\n"),
            "<text> line 4: header `1` promises 2 pairs, but more lines follow"
        );
        assert_eq!(parse_lfw_pairs("0\n").unwrap(), []);
    }

    #[test]
    fn read_lfw_pairs_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.txt");
        fs::write(&path, "1 1\nAnn 1 2\nAnn 1 Bob\n").unwrap();
        let message = read_lfw_pairs(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{} line 3: expected `name1 i name2 j`, found 3 fields \
                 (mismatched pair 1 of 1 in fold 1)",
                path.display()
            )
        );
        fs::write(&path, "1 1\nAnn 1 2\nAnn 1 Bob 4\n").unwrap();
        assert_eq!(read_lfw_pairs(&path).unwrap().len(), 2);

        let missing = dir.path().join("absent.txt");
        let message = read_lfw_pairs(&missing).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", missing.display())),
            "{message}"
        );
    }

    #[test]
    fn lfw_image_paths_are_zero_padded() {
        let root = Path::new("/data/lfw");
        assert_eq!(
            lfw_image_path(root, &side("Abel_Pacheco", 1)),
            Path::new("/data/lfw/Abel_Pacheco/Abel_Pacheco_0001.jpg")
        );
        assert_eq!(
            lfw_image_path(root, &side("George_W_Bush", 530)),
            Path::new("/data/lfw/George_W_Bush/George_W_Bush_0530.jpg")
        );
        // Wider numbers are not truncated.
        assert_eq!(
            lfw_image_path(root, &side("X", 12345)),
            Path::new("/data/lfw/X/X_12345.jpg")
        );
    }

    #[test]
    fn folder_per_person_lists_visible_files_of_each_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let touch = |relative: &str| {
            let path = root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"x").unwrap();
        };
        touch("pairs.txt");
        touch("README");
        touch("yaleB02/yaleB02_P00A+000E+00");
        touch("yaleB02/b.pgm");
        touch("yaleB02/.DS_Store");
        touch("Abel/Abel_0002.jpg");
        touch("Abel/Abel_0001.jpg");
        touch("Abel/nested/ignored.jpg");
        touch(".hidden_person/face.jpg");
        fs::create_dir(root.join("Empty")).unwrap();

        let identities = folder_per_person(root).unwrap();
        assert_eq!(
            identities,
            [
                Identity {
                    name: "Abel".to_owned(),
                    images: vec![
                        root.join("Abel/Abel_0001.jpg"),
                        root.join("Abel/Abel_0002.jpg")
                    ],
                },
                Identity {
                    name: "Empty".to_owned(),
                    images: vec![],
                },
                Identity {
                    name: "yaleB02".to_owned(),
                    images: vec![
                        root.join("yaleB02/b.pgm"),
                        root.join("yaleB02/yaleB02_P00A+000E+00")
                    ],
                },
            ]
        );
    }

    #[test]
    fn folder_per_person_reports_a_missing_root() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no_such_dataset");
        let message = folder_per_person(&missing).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("cannot read {}: ", missing.display())),
            "{message}"
        );
    }
}
