//! Readers of the IJB-B and IJB-C metadata in the layout insightface's evaluation tools read
//! (`recognition/_evaluation_/ijb`, `arcface_torch/eval_ijbc.py`):
//!
//! ```text
//! DIR/meta/ijbc_face_tid_mid.txt          image_name template_id media_id
//! DIR/meta/ijbc_name_5pts_score.txt       image_name x1 y1 ... x5 y5 faceness_score
//! DIR/meta/ijbc_template_pair_label.txt   template_id template_id label
//! DIR/meta/ijbc_1N_gallery_G1.csv         TEMPLATE_ID,SUBJECT_ID,FILENAME,... (header line)
//! DIR/meta/ijbc_1N_gallery_G2.csv
//! DIR/meta/ijbc_1N_probe_mixed.csv
//! DIR/loose_crop/IMAGE
//! ```
//!
//! IJB-B is the same with `ijbb_` names (its galleries are `S1` and `S2`). Every error names the
//! file and the 1-based line, as the LFW readers do.

use crate::protocol::ProtocolError;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One face crop of the benchmark: a row of `*_face_tid_mid.txt` joined with the same row of
/// `*_name_5pts_score.txt` (insightface pairs the two files by row).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceRecord {
    /// File name under `loose_crop/`.
    pub image: String,
    /// The template the face belongs to.
    pub template: u32,
    /// The media (a still, or one video) the face comes from.
    pub media: u32,
    /// Left eye, right eye, nose, left and right mouth corner, in the crop's pixels.
    pub landmarks: [[f32; 2]; 5],
    /// The detector's confidence that this is a face.
    pub faceness: f32,
}

/// A 1:1 verification pair of templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatePair {
    /// First template.
    pub a: u32,
    /// Second template.
    pub b: u32,
    /// Same subject.
    pub same: bool,
}

/// A template of a 1:N gallery or probe set with its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SubjectTemplate {
    /// The template.
    pub template: u32,
    /// The person.
    pub subject: u32,
}

/// The 1:N protocol: two disjoint galleries and the mixed probes.
#[derive(Debug, Clone, PartialEq)]
pub struct Identification {
    /// Gallery 1 (`G1`, IJB-B's `S1`), one entry per template, sorted by template.
    pub g1: Vec<SubjectTemplate>,
    /// Gallery 2 (`G2`, IJB-B's `S2`).
    pub g2: Vec<SubjectTemplate>,
    /// The mixed probes (stills and video frames).
    pub probes: Vec<SubjectTemplate>,
}

/// Which benchmark a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// IJB-B: `ijbb_` files, galleries `S1` and `S2`.
    IjbB,
    /// IJB-C: `ijbc_` files, galleries `G1` and `G2`.
    IjbC,
}

impl Benchmark {
    /// The prefix of its metadata files.
    pub fn prefix(self) -> &'static str {
        match self {
            Benchmark::IjbB => "ijbb",
            Benchmark::IjbC => "ijbc",
        }
    }

    /// The names of its two galleries.
    fn galleries(self) -> [&'static str; 2] {
        match self {
            Benchmark::IjbB => ["S1", "S2"],
            Benchmark::IjbC => ["G1", "G2"],
        }
    }

    /// `IJB-B` or `IJB-C`.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::IjbB => "IJB-B",
            Benchmark::IjbC => "IJB-C",
        }
    }
}

/// An IJB-B or IJB-C folder, read.
#[derive(Debug, Clone)]
pub struct IjbSet {
    /// The folder.
    pub root: PathBuf,
    /// Which benchmark it is.
    pub benchmark: Benchmark,
    /// Every face, in file order.
    pub faces: Vec<FaceRecord>,
    /// The 1:1 pairs, when the pairs file is there.
    pub pairs: Option<Vec<TemplatePair>>,
    /// The 1:N protocol, when its three files are there.
    pub identification: Option<Identification>,
}

impl IjbSet {
    /// Reads the metadata of `root`: IJB-C when `meta/ijbc_face_tid_mid.txt` exists, else IJB-B.
    /// The face lists are required; the pairs and the 1:N files are read when present.
    pub fn open(root: &Path) -> Result<IjbSet, ProtocolError> {
        let meta = root.join("meta");
        let benchmark = if meta.join("ijbb_face_tid_mid.txt").is_file()
            && !meta.join("ijbc_face_tid_mid.txt").is_file()
        {
            Benchmark::IjbB
        } else {
            Benchmark::IjbC
        };
        let p = benchmark.prefix();
        let file = |name: String| meta.join(name);
        let faces = read_faces(
            &file(format!("{p}_face_tid_mid.txt")),
            &file(format!("{p}_name_5pts_score.txt")),
        )?;
        let pairs_path = file(format!("{p}_template_pair_label.txt"));
        let pairs = pairs_path
            .is_file()
            .then(|| read_pairs(&pairs_path))
            .transpose()?;
        let [s1, s2] = benchmark.galleries();
        let lists = [
            file(format!("{p}_1N_gallery_{s1}.csv")),
            file(format!("{p}_1N_gallery_{s2}.csv")),
            file(format!("{p}_1N_probe_mixed.csv")),
        ];
        let identification = if lists.iter().all(|l| l.is_file()) {
            Some(Identification {
                g1: read_subject_templates(&lists[0])?,
                g2: read_subject_templates(&lists[1])?,
                probes: read_subject_templates(&lists[2])?,
            })
        } else {
            None
        };
        Ok(IjbSet {
            root: root.to_path_buf(),
            benchmark,
            faces,
            pairs,
            identification,
        })
    }

    /// Where a face's crop is.
    pub fn image_path(&self, face: &FaceRecord) -> PathBuf {
        self.root.join("loose_crop").join(&face.image)
    }
}

/// The text of `path`, or an error naming it.
fn read_text(path: &Path) -> Result<String, ProtocolError> {
    fs::read_to_string(path).map_err(|source| ProtocolError::Io {
        path: path.to_path_buf(),
        cause: source,
    })
}

/// The non-empty lines of `text` with their 1-based numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

fn parse_error(path: &Path, line: usize, message: impl Into<String>) -> ProtocolError {
    ProtocolError::Parse {
        file: path.display().to_string(),
        line,
        message: message.into(),
    }
}

/// Parses `field` as `T`, or says which column of which line held what.
fn field<T: std::str::FromStr>(
    path: &Path,
    line: usize,
    what: &str,
    field: &str,
) -> Result<T, ProtocolError> {
    field
        .parse()
        .map_err(|_| parse_error(path, line, format!("{what} `{field}` is not a number")))
}

/// Reads the face list from `*_face_tid_mid.txt` and `*_name_5pts_score.txt`, which must list
/// the same images in the same order.
pub fn read_faces(tid_mid: &Path, five_points: &Path) -> Result<Vec<FaceRecord>, ProtocolError> {
    let ids = read_text(tid_mid)?;
    let points = read_text(five_points)?;
    let mut faces = Vec::new();
    let mut id_lines = lines(&ids);
    for (point_line, text) in lines(&points) {
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 12 {
            return Err(parse_error(
                five_points,
                point_line,
                format!(
                    "expected `image x1 y1 ... x5 y5 faceness` (12 fields), found {} fields",
                    f.len()
                ),
            ));
        }
        let mut landmarks = [[0.0f32; 2]; 5];
        for (k, point) in landmarks.iter_mut().enumerate() {
            for (c, v) in point.iter_mut().enumerate() {
                *v = field(five_points, point_line, "landmark", f[1 + 2 * k + c])?;
            }
        }
        let faceness: f32 = field(five_points, point_line, "faceness score", f[11])?;
        if !faceness.is_finite() || landmarks.iter().flatten().any(|v| !v.is_finite()) {
            return Err(parse_error(
                five_points,
                point_line,
                "NaN or infinite value",
            ));
        }
        let Some((id_line, id_text)) = id_lines.next() else {
            return Err(parse_error(
                five_points,
                point_line,
                format!("{} has fewer faces than this file", tid_mid.display()),
            ));
        };
        let g: Vec<&str> = id_text.split_whitespace().collect();
        if g.len() != 3 {
            return Err(parse_error(
                tid_mid,
                id_line,
                format!(
                    "expected `image template_id media_id`, found {} fields",
                    g.len()
                ),
            ));
        }
        if g[0] != f[0] {
            return Err(parse_error(
                tid_mid,
                id_line,
                format!(
                    "image `{}` here but `{}` on line {point_line} of {}: the two lists must \
                     name the same images in the same order",
                    g[0],
                    f[0],
                    five_points.display()
                ),
            ));
        }
        faces.push(FaceRecord {
            image: f[0].to_owned(),
            template: field(tid_mid, id_line, "template id", g[1])?,
            media: field(tid_mid, id_line, "media id", g[2])?,
            landmarks,
            faceness,
        });
    }
    if let Some((line, _)) = id_lines.next() {
        return Err(parse_error(
            tid_mid,
            line,
            format!("more faces than {} lists", five_points.display()),
        ));
    }
    Ok(faces)
}

/// Reads `*_template_pair_label.txt`: `template template label` with label 1 (same) or 0.
pub fn read_pairs(path: &Path) -> Result<Vec<TemplatePair>, ProtocolError> {
    let text = read_text(path)?;
    lines(&text)
        .map(|(line, l)| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 {
                return Err(parse_error(
                    path,
                    line,
                    format!(
                        "expected `template template label`, found {} fields",
                        f.len()
                    ),
                ));
            }
            let same = match f[2] {
                "1" => true,
                "0" => false,
                other => {
                    return Err(parse_error(
                        path,
                        line,
                        format!("label `{other}` is neither 1 (same) nor 0 (different)"),
                    ))
                }
            };
            Ok(TemplatePair {
                a: field(path, line, "template id", f[0])?,
                b: field(path, line, "template id", f[1])?,
                same,
            })
        })
        .collect()
}

/// Reads a 1:N list (`TEMPLATE_ID,SUBJECT_ID,FILENAME,...` after a header line, one row per
/// image) into its templates, sorted by id. A template listed with two subjects is an error.
pub fn read_subject_templates(path: &Path) -> Result<Vec<SubjectTemplate>, ProtocolError> {
    let text = read_text(path)?;
    let mut subjects: BTreeMap<u32, (u32, usize)> = BTreeMap::new();
    for (line, l) in lines(&text).skip(1) {
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        if f.len() < 2 {
            return Err(parse_error(
                path,
                line,
                "expected `TEMPLATE_ID,SUBJECT_ID,...`",
            ));
        }
        let template = field(path, line, "template id", f[0])?;
        let subject = field(path, line, "subject id", f[1])?;
        match subjects.get(&template) {
            Some(&(s, first)) if s != subject => {
                return Err(parse_error(
                    path,
                    line,
                    format!(
                        "template {template} has subject {subject} here but {s} on line {first}"
                    ),
                ))
            }
            Some(_) => {}
            None => {
                subjects.insert(template, (subject, line));
            }
        }
    }
    Ok(subjects
        .into_iter()
        .map(|(template, (subject, _))| SubjectTemplate { template, subject })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    const POINTS: &str =
        "1.jpg 1 2 3 4 5 6 7 8 9 10 0.9\n2.jpg 11 12 13 14 15 16 17 18 19 20 0.5\n";

    #[test]
    fn joins_the_two_face_lists_by_row() {
        let dir = tempfile::tempdir().unwrap();
        let ids = write(dir.path(), "tid.txt", "1.jpg 7 70\n2.jpg 8 80\n");
        let pts = write(dir.path(), "pts.txt", POINTS);
        let faces = read_faces(&ids, &pts).unwrap();
        assert_eq!(faces.len(), 2);
        assert_eq!(faces[1].image, "2.jpg");
        assert_eq!((faces[1].template, faces[1].media), (8, 80));
        assert_eq!(faces[1].landmarks[4], [19.0, 20.0]);
        assert_eq!(faces[0].faceness, 0.9);
    }

    #[test]
    fn mismatched_face_lists_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let pts = write(dir.path(), "pts.txt", POINTS);
        let swapped = write(dir.path(), "a.txt", "1.jpg 7 70\n3.jpg 8 80\n");
        let e = read_faces(&swapped, &pts).unwrap_err().to_string();
        assert!(e.contains("a.txt line 2") && e.contains("`3.jpg`"), "{e}");
        let short = write(dir.path(), "b.txt", "1.jpg 7 70\n");
        let e = read_faces(&short, &pts).unwrap_err().to_string();
        assert!(
            e.contains("pts.txt line 2") && e.contains("fewer faces"),
            "{e}"
        );
        let long = write(dir.path(), "c.txt", "1.jpg 7 70\n2.jpg 8 80\n4.jpg 9 9\n");
        let e = read_faces(&long, &pts).unwrap_err().to_string();
        assert!(
            e.contains("c.txt line 3") && e.contains("more faces"),
            "{e}"
        );
        let fields = write(dir.path(), "d.txt", "1.jpg 7\n2.jpg 8 80\n");
        let e = read_faces(&fields, &pts).unwrap_err().to_string();
        assert!(e.contains("d.txt line 1") && e.contains("2 fields"), "{e}");
        let bad_pts = write(dir.path(), "e.txt", "1.jpg 1 2 3 4 5 6 7 8 9 x 0.9\n");
        let e = read_faces(&swapped, &bad_pts).unwrap_err().to_string();
        assert!(e.contains("e.txt line 1") && e.contains("`x`"), "{e}");
    }

    #[test]
    fn pairs_need_a_zero_or_one_label() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(dir.path(), "p.txt", "1 2 1\n\n1 3 0\n");
        let pairs = read_pairs(&ok).unwrap();
        assert_eq!(
            pairs,
            [
                TemplatePair {
                    a: 1,
                    b: 2,
                    same: true
                },
                TemplatePair {
                    a: 1,
                    b: 3,
                    same: false
                }
            ]
        );
        let bad = write(dir.path(), "q.txt", "1 2 1\n1 3 2\n");
        let e = read_pairs(&bad).unwrap_err().to_string();
        assert!(e.contains("q.txt line 2") && e.contains("label `2`"), "{e}");
    }

    #[test]
    fn subject_lists_keep_one_row_per_template() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(
            dir.path(),
            "g.csv",
            "TEMPLATE_ID,SUBJECT_ID,FILENAME\n5,50,a.jpg\n3,30,b.jpg\n5,50,c.jpg\n",
        );
        let t = read_subject_templates(&ok).unwrap();
        assert_eq!(
            t,
            [
                SubjectTemplate {
                    template: 3,
                    subject: 30
                },
                SubjectTemplate {
                    template: 5,
                    subject: 50
                }
            ]
        );
        let bad = write(dir.path(), "h.csv", "T,S\n5,50,a\n5,51,b\n");
        let e = read_subject_templates(&bad).unwrap_err().to_string();
        assert!(
            e.contains("h.csv line 3") && e.contains("but 50 on line 2"),
            "{e}"
        );
    }

    #[test]
    fn an_ijbb_folder_is_read_with_its_own_names() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("meta");
        fs::create_dir_all(&meta).unwrap();
        write(&meta, "ijbb_face_tid_mid.txt", "1.jpg 7 70\n2.jpg 8 80\n");
        write(&meta, "ijbb_name_5pts_score.txt", POINTS);
        write(&meta, "ijbb_template_pair_label.txt", "7 8 0\n");
        let header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n";
        write(
            &meta,
            "ijbb_1N_gallery_S1.csv",
            &format!("{header}7,1,1.jpg\n"),
        );
        write(
            &meta,
            "ijbb_1N_gallery_S2.csv",
            &format!("{header}8,2,2.jpg\n"),
        );
        // Without the probe list the 1:N protocol is absent, not an error.
        let set = IjbSet::open(dir.path()).unwrap();
        assert_eq!(set.benchmark, Benchmark::IjbB);
        assert_eq!(set.faces.len(), 2);
        assert_eq!(
            set.pairs.as_deref(),
            Some(
                &[TemplatePair {
                    a: 7,
                    b: 8,
                    same: false
                }][..]
            )
        );
        assert!(set.identification.is_none());
        write(
            &meta,
            "ijbb_1N_probe_mixed.csv",
            &format!("{header}7,1,1.jpg\n"),
        );
        let id = IjbSet::open(dir.path()).unwrap().identification.unwrap();
        assert_eq!(
            id.g2,
            [SubjectTemplate {
                template: 8,
                subject: 2
            }]
        );
        assert_eq!(
            set.image_path(&set.faces[1]),
            dir.path().join("loose_crop").join("2.jpg")
        );
        // No face list at all: the error names the file looked for.
        let empty = tempfile::tempdir().unwrap();
        let e = IjbSet::open(empty.path()).unwrap_err().to_string();
        assert!(e.contains("ijbc_face_tid_mid.txt"), "{e}");
    }
}
