//! `smoothface-train bench-loss`: time and peak memory of Smooth-AP's forward and backward pass,
//! the scalable [`SmoothAp`] beside the authors' `[B, B, B]` form (`authors`).
//!
//! Each configuration (form, batch size, threads) runs in a fresh child process, so that its
//! peak memory is its own: the child builds its batch, warms libtorch up on a small batch,
//! notes its resident size, resets its peak (`memory::reset_peak`) and reports how far the
//! peak rose above that baseline while it ran forward and backward. The parent estimates the
//! authors' form's memory first and skips the batches where it would exceed a limit.

mod authors;
mod memory;
pub mod step;

use crate::loss::{Mode, SmoothAp};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Which implementation of Smooth-AP a configuration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// This crate's [`SmoothAp`]: `[queries, P, B]` differences, chunked.
    Scalable,
    /// The authors' code: `[B, B, B]` difference tensors.
    Authors,
}

impl Form {
    /// Both forms, in the order the command line lists them.
    pub const ALL: [Form; 2] = [Form::Scalable, Form::Authors];

    /// The form's name on the command line and in the JSON rows (`scalable`, `authors`).
    pub fn name(self) -> &'static str {
        match self {
            Form::Scalable => "scalable",
            Form::Authors => "authors",
        }
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Form {
    type Err = String;

    /// Parses a form's [`Form::name`].
    fn from_str(s: &str) -> Result<Self, String> {
        crate::parse_choice(s, &Form::ALL, Form::name, "form")
    }
}

/// What every configuration shares.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Setup {
    /// Samples per identity; the batch is `B / per_identity` identities in consecutive groups.
    pub per_identity: i64,
    /// Embedding dimension.
    pub dim: i64,
    /// The scalable form's mode ([`Mode::Official`] computes what the authors' form computes).
    pub mode: Mode,
    /// Sigmoid temperature.
    pub tau: f64,
}

/// One configuration's measurement, as a child reports it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Measurement {
    /// Median wall time of one forward and backward pass, in seconds.
    pub seconds: f64,
    /// Passes timed.
    pub runs: usize,
    /// Rise of the peak resident size over the resident size before the first pass, in bytes.
    pub peak_bytes: u64,
    /// The loss the first pass computed.
    pub loss: f64,
}

/// What became of one configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum Outcome {
    /// It ran.
    Measured(Measurement),
    /// The authors' form was not run: its estimated memory exceeds the limit.
    Skipped {
        /// The estimate, in bytes.
        estimated_bytes: u64,
    },
    /// The child failed (killed for memory, for instance).
    Failed {
        /// The child's exit status and the end of its error output.
        reason: String,
    },
}

/// One configuration and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Batch size `B`.
    pub batch: i64,
    /// libtorch CPU threads.
    pub threads: i32,
    /// Which implementation.
    pub form: Form,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Passes stop repeating once this much time has been spent (after the first) ...
const TIME_BUDGET: Duration = Duration::from_secs(3);
/// ... or after this many.
const MAX_RUNS: usize = 5;

/// The seeded batch of `batch` embeddings (uniform in [-1, 1)) and its consecutive-group labels.
/// They come from a generator of their own: torch's is one per process, and whatever else runs
/// in it (another test, a network's initialisation) can draw from it between a seed and its use.
fn inputs(setup: &Setup, batch: i64) -> (Tensor, Tensor) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let values: Vec<f32> = (0..batch * setup.dim)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let embeddings = Tensor::from_slice(&values).view([batch, setup.dim]);
    let labels =
        Tensor::arange(batch, (Kind::Int64, Device::Cpu)).floor_divide_scalar(setup.per_identity);
    (embeddings, labels)
}

/// One forward and backward pass of `form`; returns the loss.
fn pass(form: Form, setup: &Setup, embeddings: &Tensor, labels: &Tensor) -> Result<f64> {
    let x = embeddings.detach().set_requires_grad(true);
    let loss = match form {
        Form::Scalable => SmoothAp::new(setup.mode, setup.tau)?.loss(&x, labels)?,
        Form::Authors => {
            let identities = x.size()[0] / setup.per_identity;
            authors::smooth_ap(&x, identities, setup.tau).sum(Kind::Float)
        }
    };
    loss.backward();
    Ok(loss.double_value(&[]))
}

/// Runs one configuration in this process (the child's side): `threads` libtorch threads, a
/// warm-up on a small batch, then timed passes at `batch`.
pub fn measure(form: Form, setup: &Setup, batch: i64, threads: i32) -> Result<Measurement> {
    if setup.per_identity < 1 || batch < setup.per_identity || batch % setup.per_identity != 0 {
        bail!(
            "the batch ({batch}) must be a positive multiple of the samples per identity ({})",
            setup.per_identity
        );
    }
    tch::set_num_threads(threads);
    let (small, small_labels) = inputs(setup, 4 * setup.per_identity);
    pass(form, setup, &small, &small_labels)?;
    let (embeddings, labels) = inputs(setup, batch);
    let baseline = memory::resident_bytes()?;
    memory::reset_peak()?;
    let mut times = vec![];
    let mut loss = f64::NAN;
    let started = Instant::now();
    while times.is_empty() || (times.len() < MAX_RUNS && started.elapsed() < TIME_BUDGET) {
        let start = Instant::now();
        let value = pass(form, setup, &embeddings, &labels)?;
        times.push(start.elapsed().as_secs_f64());
        if loss.is_nan() {
            loss = value;
        }
    }
    let peak_bytes = memory::peak_bytes()?.saturating_sub(baseline);
    times.sort_by(f64::total_cmp);
    Ok(Measurement {
        seconds: times[times.len() / 2],
        runs: times.len(),
        peak_bytes,
        loss,
    })
}

/// The authors' form's estimated peak memory at `batch`, in bytes (float32).
pub fn authors_estimate(batch: i64) -> u64 {
    (authors::CUBES_AT_PEAK * (batch as f64).powi(3) * 4.0) as u64
}

/// Runs every configuration, each in a child process that `child(form, batch, threads)` builds
/// (a command that calls [`measure`] and prints its [`Measurement`] as JSON on stdout), and
/// calls `progress` with each row as it completes. The authors' form is skipped where
/// [`authors_estimate`] exceeds `authors_limit_bytes`.
pub fn run(
    batches: &[i64],
    threads: &[i32],
    authors_limit_bytes: u64,
    child: impl Fn(Form, i64, i32) -> Command,
    mut progress: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let mut rows = vec![];
    for &batch in batches {
        for &threads in threads {
            for form in Form::ALL {
                let estimated_bytes = authors_estimate(batch);
                let outcome = if form == Form::Authors && estimated_bytes > authors_limit_bytes {
                    Outcome::Skipped { estimated_bytes }
                } else {
                    run_child(child(form, batch, threads))?
                };
                let row = Row {
                    batch,
                    threads,
                    form,
                    outcome,
                };
                progress(&row);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

fn run_child(mut command: Command) -> Result<Outcome> {
    let out = command
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        return Ok(Outcome::Failed {
            reason: failure(&out),
        });
    }
    let measurement = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("reading the measurement of {command:?}"))?;
    Ok(Outcome::Measured(measurement))
}

/// Why a child failed, for a table cell: its exit status and the last lines of its error output.
fn failure(out: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!("{}: {}", out.status, tail.join(" / "))
}

fn time_text(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

fn bytes_text(bytes: u64) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    if mib < 1024.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{:.2} GiB", mib / 1024.0)
    }
}

/// The CPU's model name (from `/proc/cpuinfo`) and the number of hardware threads.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_owned())
            })
        });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{}, {cores} hardware threads",
        model.unwrap_or_else(|| "unknown CPU".into())
    )
}

/// The rows as a markdown table: per batch size and thread count, the scalable form beside the
/// authors' form, with the speed-up, the memory ratio and both losses.
pub fn markdown(setup: &Setup, rows: &[Row]) -> String {
    let mode = setup.mode;
    let mut out = format!(
        "Smooth-AP forward + backward, float32, D = {}, {} samples per identity, tau = {}, scalable \
         form in {mode} mode; median of up to {MAX_RUNS} passes; peak memory is the rise of the \
         child process's peak RSS above its RSS before the first pass. Machine: {}.\n\n\
         | B | threads | scalable: time | scalable: peak memory | authors' [B,B,B]: time | \
         authors': peak memory | speed-up | memory ratio | loss scalable / authors' |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
        setup.dim,
        setup.per_identity,
        setup.tau,
        machine()
    );
    for pair in rows.chunks(2) {
        let [ours, theirs] = pair else { continue };
        let cells = |outcome: &Outcome| match outcome {
            Outcome::Measured(m) => [time_text(m.seconds), bytes_text(m.peak_bytes)],
            Outcome::Skipped { estimated_bytes } => [
                format!("skipped: needs ~{}", bytes_text(*estimated_bytes)),
                "-".into(),
            ],
            Outcome::Failed { reason } => [format!("failed ({reason})"), "-".into()],
        };
        let [our_time, our_memory] = cells(&ours.outcome);
        let [their_time, their_memory] = cells(&theirs.outcome);
        let (ratios, losses) = match (&ours.outcome, &theirs.outcome) {
            (Outcome::Measured(a), Outcome::Measured(b)) => (
                [
                    format!("{:.0}x", b.seconds / a.seconds),
                    format!("{:.0}x", b.peak_bytes as f64 / a.peak_bytes.max(1) as f64),
                ],
                format!("{:.6} / {:.6}", a.loss, b.loss),
            ),
            (Outcome::Measured(a), _) => (["-".into(), "-".into()], format!("{:.6} / -", a.loss)),
            _ => (["-".into(), "-".into()], "-".into()),
        };
        out += &format!(
            "| {} | {} | {our_time} | {our_memory} | {their_time} | {their_memory} | {} | {} | {losses} |\n",
            ours.batch, ours.threads, ratios[0], ratios[1]
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms run in-process on a small batch and compute the same loss.
    #[test]
    fn measures_both_forms() {
        let setup = Setup {
            per_identity: 4,
            dim: 16,
            mode: Mode::Official,
            tau: 0.01,
        };
        let ours = measure(Form::Scalable, &setup, 32, 1).unwrap();
        let theirs = measure(Form::Authors, &setup, 32, 1).unwrap();
        assert!(
            (ours.loss - theirs.loss).abs() < 1e-5,
            "{ours:?} {theirs:?}"
        );
        assert!(ours.runs >= 1 && ours.seconds > 0.0);
        assert!(measure(Form::Scalable, &setup, 30, 1).is_err());
    }

    #[test]
    fn table_pairs_the_forms() {
        let setup = Setup {
            per_identity: 4,
            dim: 512,
            mode: Mode::Official,
            tau: 0.01,
        };
        let m = |seconds, peak_bytes| {
            Outcome::Measured(Measurement {
                seconds,
                runs: 1,
                peak_bytes,
                loss: 0.5,
            })
        };
        let rows = [
            Row {
                batch: 384,
                threads: 1,
                form: Form::Scalable,
                outcome: m(0.01, 10 << 20),
            },
            Row {
                batch: 384,
                threads: 1,
                form: Form::Authors,
                outcome: m(9.0, 2400 << 20),
            },
            Row {
                batch: 4096,
                threads: 2,
                form: Form::Scalable,
                outcome: m(2.5, 900 << 20),
            },
            Row {
                batch: 4096,
                threads: 2,
                form: Form::Authors,
                outcome: Outcome::Skipped {
                    estimated_bytes: authors_estimate(4096),
                },
            },
        ];
        let table = markdown(&setup, &rows);
        assert!(table.contains("| 384 | 1 | 10.0 ms | 10 MiB | 9.00 s | 2.34 GiB | 900x | 240x | 0.500000 / 0.500000 |"), "{table}");
        assert!(table.contains("| 4096 | 2 | 2.50 s | 900 MiB | skipped: needs ~2816.00 GiB | - | - | - | 0.500000 / - |"), "{table}");
    }
}
