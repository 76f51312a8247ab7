//! `smoothface-train fit` end to end on a small synthetic face folder written here: the run
//! folder it leaves, that it learns, that a killed run resumes to the very weights of an
//! uninterrupted one, and its errors; and a short fine-tuning of w600k_mbf on real faces with
//! every loss.

mod common;

use common::{payload, write_records};
use image::{Rgb, RgbImage};
use smoothface_tests::Rng;
use smoothface_trainer::backbone::{Arch, Options};
use smoothface_trainer::checkpoint;
use smoothface_trainer::fit::EpochRecord;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tch::{nn, Device, Tensor};

const PEOPLE: usize = 6;
const PHOTOS: usize = 5;
/// Floor of w600k_mbf's validation mAP on the 3 held-out people of 8 of the real aligned faces
/// (measured: 1.0; a model imported wrong, or fed wrong, ranks far worse).
const MBF_GLINT_MAP: f64 = 0.99;

/// A folder per "person": 112x112 PNGs whose colour and stripe direction depend on the person
/// and whose noise depends on the photo, so that people are learnable and photos differ.
fn write_faces(root: &Path) {
    for person in 0..PEOPLE {
        let dir = root.join(format!("person{person}"));
        std::fs::create_dir_all(&dir).unwrap();
        for photo in 0..PHOTOS {
            let mut rng = Rng::new((person * 31 + photo * 7 + 1) as u64);
            let image = RgbImage::from_fn(112, 112, |x, y| {
                let noise = rng.below(32) as u8;
                let stripe = if person % 2 == 0 { x / 8 } else { y / 8 };
                let on = (stripe + person as u32 / 2).is_multiple_of(2);
                let base = [(person * 40) as u8, 200 - (person * 30) as u8, 90];
                let v = |c: u8| if on { c } else { c / 3 }.saturating_add(noise);
                Rgb([v(base[0]), v(base[1]), v(base[2])])
            });
            image.save(dir.join(format!("{photo}.png"))).unwrap();
        }
    }
    // Not a face: the run must warn about it, leave it out and go on.
    std::fs::write(root.join("person0").join("broken.png"), b"not a png").unwrap();
}

/// A configuration for the faces in `faces`, with `extra` appended.
fn write_config(dir: &Path, faces: &Path, extra: &str) -> PathBuf {
    let path = dir.join("train.toml");
    let text = format!(
        "[data]\nfolder = \"{}\"\nvalidation_fraction = 0.34\n\n[train]\nbatch_size = 8\n\
         per_class = 4\nthreads = 1\n{extra}",
        faces.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A temporary folder holding the synthetic faces and a configuration for them with `extra`.
fn faces_and_config(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    write_faces(&faces);
    let config = write_config(dir.path(), &faces, extra);
    (dir, config)
}

fn fit(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_smoothface-train"));
    command
        .args(["fit", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .args(extra);
    command
}

fn run(command: &mut Command) -> Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn records(out: &Path) -> Vec<EpochRecord> {
    smoothface_trainer::fit::read_records(&out.join("metrics.jsonl")).unwrap()
}

/// The backbone's weights in a checkpoint, by name.
fn backbone(checkpoint: &Path) -> Vec<(String, Tensor)> {
    let mut weights: Vec<_> = Tensor::read_safetensors(checkpoint)
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name.starts_with("mobilefacenet."))
        .collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    weights
}

#[test]
fn a_run_records_every_epoch_learns_and_leaves_its_files() {
    let (dir, config) =
        faces_and_config("epochs = 4\n[optimizer]\nlr = 1e-3\n[loss]\nname = \"smooth-ap\"\n");
    let out = dir.path().join("run");
    let output = run(&mut fit(&config, &out, &["--quiet"]));

    // Four people train (two batches of two people per epoch), two validate.
    let stdout: Vec<EpochRecord> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logged = records(&out);
    assert_eq!(
        stdout, logged,
        "stdout and metrics.jsonl hold the same records"
    );
    let epochs: Vec<(usize, usize)> = logged.iter().map(|r| (r.epoch, r.step)).collect();
    assert_eq!(epochs, [(0, 0), (1, 2), (2, 4), (3, 6), (4, 8)]);
    assert!(logged[0].train_loss.is_none() && logged[1].train_loss.is_some());
    // 2 validation people x 5 readable photos, each a query.
    assert_eq!(logged[0].val_queries, 10);
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken.png"));

    // It learns: the training loss falls from the first epoch to the last.
    let first = logged[1].train_loss.unwrap();
    let last = logged[4].train_loss.unwrap();
    assert!(last < first, "training loss went from {first} to {last}");

    for file in ["config.toml", "last.safetensors", "best.safetensors"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let plot = image::open(out.join("metrics.png")).unwrap();
    assert_eq!((plot.width(), plot.height()), (1000, 420));
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        // The atomic writer's temporary files are hidden (`.metrics.jsonl.XXXXXX.jsonl`).
        .filter(|name| name.starts_with('.') || name.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // The same folder again without --resume is refused, saying what to do.
    let again = fit(&config, &out, &["--quiet"]).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
}

/// The loader's worker threads change the speed only: runs with 1 and 3 workers end with the
/// same weights (each batch's augmentation is seeded by its position, not by who made it).
#[test]
fn loader_workers_change_nothing_but_the_speed() {
    let (dir, one) = faces_and_config("epochs = 2\nloader_workers = 1\n[optimizer]\nlr = 1e-3\n");
    run(&mut fit(&one, &dir.path().join("one"), &["--quiet"]));
    let three = write_config(
        dir.path(),
        &dir.path().join("faces"),
        "epochs = 2\nloader_workers = 3\n[optimizer]\nlr = 1e-3\n",
    );
    run(&mut fit(&three, &dir.path().join("three"), &["--quiet"]));
    let (a, b) = (
        backbone(&dir.path().join("one/last.safetensors")),
        backbone(&dir.path().join("three/last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x.equal(y), "{name} differs");
    }
    let losses = |run: &str| -> Vec<Option<f64>> {
        records(&dir.path().join(run))
            .iter()
            .map(|r| r.train_loss)
            .collect()
    };
    assert_eq!(losses("one"), losses("three"));
}

/// `precision = "bf16"` trains on the CPU (the loss falls, nothing is skipped: bfloat16 needs
/// no loss scaling); `"f16"` is refused there, saying what to use instead.
#[test]
fn bf16_trains_on_the_cpu_and_f16_is_refused_there() {
    let (dir, config) = faces_and_config(
        "epochs = 4\nprecision = \"bf16\"\ndevice = \"cpu\"\n[optimizer]\nlr = 1e-3\n",
    );
    let out = dir.path().join("bf16");
    run(&mut fit(&config, &out, &["--quiet"]));
    let logged = records(&out);
    let (first, last) = (logged[1].train_loss.unwrap(), logged[4].train_loss.unwrap());
    assert!(
        last < first,
        "bf16 training loss went from {first} to {last}"
    );
    assert!(logged.iter().all(|r| r.skipped_steps == 0));

    let f16 = write_config(
        dir.path(),
        &dir.path().join("faces"),
        "precision = \"f16\"\ndevice = \"cpu\"\n",
    );
    let out = fit(&f16, &dir.path().join("f16"), &["--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("needs a CUDA device") && stderr.contains("bf16"),
        "{stderr}"
    );
}

#[test]
fn a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one() {
    let (dir, config) = faces_and_config(
        "epochs = 3\n[optimizer]\nlr = 1e-3\n[loss]\nname = \"arcface+smooth-ap\"\n",
    );
    let straight = dir.path().join("straight");
    run(&mut fit(&config, &straight, &["--quiet"]));

    // Kill the second run as soon as its first epoch is saved, then resume it.
    let killed = dir.path().join("killed");
    let mut child = fit(&config, &killed, &["--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !killed.join("last.safetensors").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = records(&killed).last().unwrap().epoch;
    assert!(saved < 3, "the run finished before it was killed");
    run(&mut fit(&config, &killed, &["--quiet", "--resume"]));

    let epochs: Vec<usize> = records(&killed).iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [0, 1, 2, 3], "every epoch once");
    let (a, b) = (
        backbone(&straight.join("last.safetensors")),
        backbone(&killed.join("last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let diff = (x - y).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name}: differs by {diff}");
    }
    // The ArcFace head (4 training people) and Adam's state are in the checkpoint too.
    let all = Tensor::read_safetensors(killed.join("last.safetensors")).unwrap();
    let head = all.iter().find(|(n, _)| n == "head.weight").unwrap();
    assert_eq!(head.1.size(), [4, 512]);
    assert!(all.iter().any(|(n, _)| n == "adam.step"));
}

#[test]
fn bad_configurations_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    write_faces(&faces);
    for (extra, expected) in [
        ("epoch = 3\n", "unknown field"),
        ("flip = 2.0\n", "flip is a probability"),
        ("[loss]\nname = \"nope\"\n", "unknown variant"),
    ] {
        let config = write_config(dir.path(), &faces, extra);
        let out = fit(&config, &dir.path().join("never"), &["--quiet"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("train.toml") && stderr.contains(expected),
            "{extra:?}: {stderr}"
        );
    }
    // Starting weights of another architecture: the missing variable is named.
    let wrong = dir.path().join("wrong.safetensors");
    Tensor::write_safetensors(
        &[("iresnet50.conv1.weight", Tensor::from_slice(&[1f32]))],
        &wrong,
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &faces,
        &format!("[model]\ninit = \"{}\"\n", wrong.display()),
    );
    let out = fit(&config, &dir.path().join("wrong-run"), &["--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("wrong.safetensors")
            && stderr.contains("mobilefacenet."),
        "{stderr}"
    );
}

/// Starting weights that are NaN (a model that diverged) stop the run at its first validation
/// with an error saying so and naming the epoch, not a panic.
#[test]
fn a_diverged_model_is_an_error_naming_the_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    write_faces(&faces);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Arch::MobileFaceNet.build(&vs.root(), Options::default());
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            let _ = var.fill_(f64::NAN);
        }
    });
    let diverged = dir.path().join("diverged.safetensors");
    checkpoint::write(&checkpoint::variables(&vs, ""), &diverged).unwrap();
    let config = write_config(
        dir.path(),
        &faces,
        &format!("[model]\ninit = \"{}\"\n", diverged.display()),
    );
    let out = fit(&config, &dir.path().join("run"), &["--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("epoch 0") && stderr.contains("diverged") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

/// A run's checkpoint cut short (a full disk) or edited stops `--resume` with an error naming
/// the file and what is wrong, not a panic or an abort in libtorch.
#[test]
fn a_damaged_checkpoint_stops_the_resumption_naming_it() {
    let (dir, config) = faces_and_config("epochs = 1\n");
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    let last = out.join("last.safetensors");
    let state = [
        ("train.epoch".to_string(), Tensor::from_slice(&[0i64])),
        ("train.step".to_string(), Tensor::from_slice(&[0i64])),
        (
            "head.weight".to_string(),
            Tensor::zeros([4, 512], tch::kind::FLOAT_CPU),
        ),
    ];
    checkpoint::write(&state, &last).unwrap();
    let whole = std::fs::read(&last).unwrap();
    let header = u64::from_le_bytes(whole[..8].try_into().unwrap()) as usize;
    let mut tampered = whole.clone();
    // The header's first shape, made to claim more bytes than the file holds.
    let text = String::from_utf8(whole[8..8 + header].to_vec()).unwrap();
    let bigger = text.replacen("\"shape\":[", "\"shape\":[9", 1);
    assert_ne!(bigger, text);
    tampered.splice(8..8 + header, bigger.bytes());
    tampered[..8].copy_from_slice(&(bigger.len() as u64).to_le_bytes());
    for (damaged, expected) in [
        (whole[..whole.len() / 2].to_vec(), "truncated"),
        (tampered, "tampered"),
    ] {
        std::fs::write(&last, damaged).unwrap();
        let run = fit(&config, &out, &["--quiet", "--resume"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&last.display().to_string()) && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn a_recordio_pack_trains_with_a_validation_folder() {
    let dir = tempfile::tempdir().unwrap();
    let faces = dir.path().join("faces");
    write_faces(&faces);
    // The first four people as a pack without a header record (every record an image), the
    // last two as the validation folder.
    let mut payloads = Vec::new();
    for person in 0..4 {
        for photo in 0..PHOTOS {
            let png = std::fs::read(faces.join(format!("person{person}/{photo}.png"))).unwrap();
            payloads.push(payload(person as f32, &[], &png));
        }
    }
    let pack = dir.path().join("pack");
    std::fs::create_dir(&pack).unwrap();
    let (rec, _, _) = write_records(&pack, &payloads);
    let validation = dir.path().join("validation");
    std::fs::create_dir(&validation).unwrap();
    for person in 4..PEOPLE {
        let name = format!("person{person}");
        std::fs::rename(faces.join(&name), validation.join(&name)).unwrap();
    }
    let config = dir.path().join("pack.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nrecordio = \"{}\"\nvalidation_folder = \"{}\"\n[train]\nbatch_size = 8\n\
             threads = 1\nepochs = 2\n[loss]\nname = \"arcface\"\n",
            rec.display(),
            validation.display()
        ),
    )
    .unwrap();
    let out = dir.path().join("run");
    run(&mut fit(&config, &out, &["--quiet"]));
    let logged = records(&out);
    // Four classes of 5 photos: one group of 4 per class, two batches of two classes per epoch.
    let steps: Vec<usize> = logged.iter().map(|r| r.step).collect();
    assert_eq!(steps, [0, 2, 4]);
    // Two validation people x 5 photos, all queries.
    assert_eq!(logged[2].val_queries, 10);
    let all = Tensor::read_safetensors(out.join("last.safetensors")).unwrap();
    let head = all.iter().find(|(n, _)| n == "head.weight").unwrap();
    assert_eq!(
        head.1.size(),
        [4, 512],
        "one ArcFace class per label in the pack"
    );
}

/// mbf fine-tunes from insightface's w600k_mbf with every loss, on real aligned faces: the
/// imported model ranks the held-out people's photos well before training (so the import and
/// the input normalisation `fit` uses are right), each run takes its steps with a finite loss,
/// and what it saves is an mbf checkpoint that exports to a model folder.
#[test]
fn mbf_fine_tunes_from_w600k_mbf_with_every_loss() {
    let test = "mbf_fine_tunes_from_w600k_mbf_with_every_loss";
    let Some(all) = smoothface_tests::faces(test, common::ALIGNED) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 8 people of 12 photos: 3 validate (36 queries), 5 train; few enough to embed quickly.
    let faces = dir.path().join("faces");
    smoothface_tests::copy_people(&all, &faces, 8, 12);
    let init = dir.path().join("w600k_mbf.safetensors");
    let onnx = smoothface_tests::models().join("w600k_mbf/w600k_mbf.onnx");
    smoothface_trainer::import::import(&onnx, Arch::Mbf, &init).unwrap();
    let mut before = None;
    for loss in [
        "smooth-ap",
        "triplet",
        "contrastive",
        "arcface",
        "arcface+smooth-ap",
    ] {
        let extra = format!(
            "max_steps = 2\n[model]\narch = \"mbf\"\ninit = \"{}\"\n[loss]\nname = \"{loss}\"\n",
            init.display()
        );
        let config = write_config(dir.path(), &faces, &extra);
        let out = dir.path().join(loss);
        run(&mut fit(&config, &out, &["--quiet"]));
        let logged = records(&out);
        let steps: Vec<usize> = logged.iter().map(|r| r.step).collect();
        assert_eq!(steps, [0, 2], "{loss}");
        let loss_value = logged[1].train_loss.unwrap();
        assert!(loss_value.is_finite(), "{loss}: {loss_value}");
        // Every run starts from the same weights on the same validation people.
        let map = logged[0].val_map;
        assert_eq!(*before.get_or_insert(map), map, "{loss}");
        eprintln!(
            "{loss}: validation mAP {map:.4} before, {:.4} after 2 steps; loss {loss_value:.4}",
            logged[1].val_map
        );
        let names: Vec<String> = Tensor::read_safetensors(out.join("best.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("mbf.") || name.starts_with("mobilefacenet."))
            .collect();
        assert!(names.iter().all(|n| n.starts_with("mbf.")), "{names:?}");
        assert!(names.iter().any(|n| n == "mbf.fc.weight"), "{names:?}");
    }
    assert!(before.unwrap() > MBF_GLINT_MAP, "validation mAP {before:?}");
    let exported = smoothface_trainer::export::export(
        &dir.path().join("smooth-ap/best.safetensors"),
        &dir.path().join("model"),
        None,
    )
    .unwrap();
    assert_eq!(exported.arch, "mbf");
}
