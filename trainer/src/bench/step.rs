//! `smoothface-train bench-step`: images per second of a whole training step (forward in the
//! run's precision, Smooth-AP in float32, backward, Adam) of MobileFaceNet, mbf and IResNet-50,
//! the trainer's [`Trainee::step`] beside PyTorch's own step in Python (`bench/torch_step.py`,
//! built into this binary) on the same architecture, weights and batch.
//!
//! For each architecture and batch size the parent draws the weights and a batch once and writes
//! them to a temporary folder as safetensors; every configuration (threads, device, precision)
//! then runs in a fresh child process per implementation (this binary again, or the Python
//! script), so that each has its own libtorch thread pool and its own peak memory. Both take
//! one warm-up step, whose loss they report (the two must agree: the same model, weights,
//! batch and loss), then time up to `steps` steps within a time budget and report the median.

use super::{bytes_text, failure, machine, memory};
use crate::backbone::{Arch, Options, EMBEDDING_SIZE};
use crate::checkpoint;
use crate::config::{DeviceChoice, LossConfig, OptimizerConfig};
use crate::data::loader::{load_epoch, share_range, LoaderSettings, TrainingSet};
use crate::data::sampler::PkSampler;
use crate::dist::{Backend, Launch, ProcessGroup};
use crate::fit::{Objective, Trainee};
use crate::optim::Adam;
use crate::precision::{LossScaler, Precision};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

/// The PyTorch peer, written next to the weights and batch by [`prepare`].
pub const TORCH_STEP_PY: &str = include_str!("../../../bench/torch_step.py");

/// The peer's file name in the folder [`prepare`] writes.
const PEER_SCRIPT: &str = "torch_step.py";

/// Photos of each person in a batch, as `fit` trains by default.
pub const PER_CLASS: i64 = 4;

/// One configuration: what both implementations run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Config {
    /// The backbone.
    pub arch: Arch,
    /// Faces per step.
    pub batch: i64,
    /// libtorch CPU threads.
    pub threads: i32,
    /// `cpu` or `cuda`.
    pub device: DeviceName,
    /// Arithmetic of the forward and backward passes.
    pub precision: Precision,
}

/// A device by name, as the command line and the Python peer spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceName {
    /// The CPU.
    Cpu,
    /// The first CUDA device.
    Cuda,
}

impl DeviceName {
    /// Both, in the order the command line lists them.
    pub const ALL: [DeviceName; 2] = [DeviceName::Cpu, DeviceName::Cuda];

    /// `cpu` or `cuda`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceName::Cpu => "cpu",
            DeviceName::Cuda => "cuda",
        }
    }

    /// The libtorch device; an error for CUDA when libtorch sees none.
    pub fn resolve(self) -> Result<Device> {
        match self {
            DeviceName::Cpu => DeviceChoice::Cpu,
            DeviceName::Cuda => DeviceChoice::Cuda,
        }
        .resolve()
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        crate::parse_choice(s, &DeviceName::ALL, DeviceName::name, "device")
    }
}

/// What one implementation measured in one configuration (what a child prints as JSON).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepMeasurement {
    /// Median wall time of a step, seconds.
    pub seconds_per_step: f64,
    /// Batch size over that time.
    pub images_per_second: f64,
    /// The loss of the warm-up step, from the written weights and batch.
    pub first_loss: f64,
    /// Steps timed.
    pub steps: usize,
    /// The process's peak resident size (`VmHWM`), bytes.
    pub peak_bytes: u64,
    /// Data-parallel: the share of the timed steps' wall time this process spent in c10d's
    /// collectives (the all-gather of embeddings and labels, the all-reduce of gradients),
    /// waiting for the others included; 0 for one process.
    #[serde(default)]
    pub collective_share: f64,
}

/// What became of one implementation in one configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum StepOutcome {
    /// It ran.
    Measured(StepMeasurement),
    /// It did not (the reason: the child's exit status and the end of its error output).
    Failed {
        /// Why.
        reason: String,
    },
}

/// One configuration, both implementations.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// The configuration.
    #[serde(flatten)]
    pub config: Config,
    /// The trainer's step.
    pub smoothface: StepOutcome,
    /// PyTorch's step; absent when the peer was not run.
    pub pytorch: Option<StepOutcome>,
}

/// How long each child measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Steps timed after the warm-up step, at most.
    pub steps: usize,
    /// No new step is started after this long (one at least is timed).
    pub budget: Duration,
}

/// The labels of a batch of `batch` faces: consecutive groups of [`PER_CLASS`].
fn labels(batch: i64) -> Tensor {
    Tensor::arange(batch, (Kind::Int64, Device::Cpu)).floor_divide_scalar(PER_CLASS)
}

/// Writes `weights.safetensors` (a freshly initialised `arch`, seeded), `batch.safetensors`
/// (`input`: `batch` faces of uniform noise in the normalised range [-1, 1]; `labels`) and the
/// PyTorch peer `torch_step.py` to `dir`.
pub fn prepare(dir: &Path, arch: Arch, batch: i64) -> Result<()> {
    ensure!(
        batch >= 2 * PER_CLASS && batch % PER_CLASS == 0,
        "a batch of {batch} cannot hold two people of {PER_CLASS} faces"
    );
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let _backbone = arch.build(&vs.root(), Options::default());
    checkpoint::write(
        &checkpoint::variables(&vs, ""),
        &dir.join("weights.safetensors"),
    )?;
    let input = Tensor::rand([batch, 3, 112, 112], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    checkpoint::write(
        &[("input".into(), input), ("labels".into(), labels(batch))],
        &dir.join("batch.safetensors"),
    )?;
    let script = dir.join(PEER_SCRIPT);
    std::fs::write(&script, TORCH_STEP_PY)
        .with_context(|| format!("{}: cannot write the PyTorch peer", script.display()))
}

/// The child's side: loads what [`prepare`] wrote in `dir` and times [`Trainee::step`] in
/// `config` (whose batch must be the written one's).
pub fn measure(dir: &Path, config: &Config, timing: &Timing) -> Result<StepMeasurement> {
    measure_in(dir, config, timing, None)
}

/// [`measure`] as rank `launch.rank` of `launch.world` processes: each takes its share of the
/// written batch ([`share_range`]) and the step all-gathers the embeddings and all-reduces the
/// gradients, as `fit` does under torchrun; `config.batch` is the global batch.
pub fn measure_rank(
    dir: &Path,
    config: &Config,
    timing: &Timing,
    launch: &Launch,
) -> Result<StepMeasurement> {
    let mut device = config.device.resolve()?;
    if let Device::Cuda(_) = device {
        // Ranks beyond the host's GPUs share them (NCCL may refuse two ranks on one GPU: then
        // that is the measurement's error).
        let gpus = tch::Cuda::device_count().max(1) as usize;
        device = Device::Cuda(launch.local_rank % gpus);
    }
    let group = ProcessGroup::new(launch, Backend::for_device(device))?;
    measure_in(dir, config, timing, Some(&group))
}

fn measure_in(
    dir: &Path,
    config: &Config,
    timing: &Timing,
    group: Option<&ProcessGroup>,
) -> Result<StepMeasurement> {
    tch::set_num_threads(config.threads);
    let device = match group {
        Some(g) => g.device(),
        None => config.device.resolve()?,
    };
    config.precision.check(device)?;
    let vs = nn::VarStore::new(device);
    let backbone = config.arch.build(&vs.root(), Options::default());
    let weights = dir.join("weights.safetensors");
    checkpoint::load_into(&vs, "", &checkpoint::read(&weights)?, &weights)?;
    let loss = LossConfig::default();
    let objective = Objective::new(&loss, &vs.root(), 1, EMBEDDING_SIZE)?;
    let mut adam = Adam::new(&vs, &OptimizerConfig::default());
    let mut scaler = LossScaler::new(config.precision);
    let batch_path = dir.join("batch.safetensors");
    let batch = checkpoint::read(&batch_path)?;
    let (Some(input), Some(labels)) = (batch.get("input"), batch.get("labels")) else {
        bail!("{}: no `input` or `labels`", batch_path.display());
    };
    ensure!(
        input.size()[0] == config.batch,
        "{}: a batch of {}, the configuration says {}",
        batch_path.display(),
        input.size()[0],
        config.batch
    );
    let (input, labels) = match group {
        None => (input.shallow_clone(), labels.shallow_clone()),
        Some(g) => {
            let share = share_range(config.batch as usize, (g.rank(), g.world()));
            let (start, len) = (share.start as i64, share.len() as i64);
            (input.narrow(0, start, len), labels.narrow(0, start, len))
        }
    };
    let (input, labels) = (input.to_device(device), labels.to_device(device));
    let trainee = Trainee {
        backbone: backbone.as_ref(),
        objective: &objective,
        precision: config.precision,
        group,
        sync_batch_norm: false,
    };
    // Each step ends with the loss read back to the host: the device has finished the step.
    let first_loss = trainee.step(&mut adam, &mut scaler, &input, &labels)?.loss;
    let mut times = Vec::new();
    let started = Instant::now();
    let in_collectives = || group.map_or(Duration::ZERO, ProcessGroup::time_in_collectives);
    let collectives_before = in_collectives();
    while times.len() < timing.steps.max(1) {
        let t = Instant::now();
        trainee.step(&mut adam, &mut scaler, &input, &labels)?;
        times.push(t.elapsed().as_secs_f64());
        if started.elapsed() > timing.budget {
            break;
        }
    }
    let collective_share =
        (in_collectives() - collectives_before).as_secs_f64() / times.iter().sum::<f64>();
    times.sort_by(f64::total_cmp);
    let seconds_per_step = times[times.len() / 2];
    Ok(StepMeasurement {
        seconds_per_step,
        images_per_second: config.batch as f64 / seconds_per_step,
        first_loss,
        steps: times.len(),
        peak_bytes: memory::peak_bytes()?,
        collective_share,
    })
}

/// This binary's child command line for `config` on what [`prepare`] wrote in `dir`: `exe
/// bench-step --child DIR ...`, which calls [`measure`].
pub fn child_command(exe: &Path, dir: &Path, config: &Config, timing: &Timing) -> Command {
    let mut command = Command::new(exe);
    command.arg("bench-step").arg("--child").arg(dir);
    for (flag, value) in [
        ("--arch", config.arch.name().to_string()),
        ("--batches", config.batch.to_string()),
        ("--threads", config.threads.to_string()),
        ("--device", config.device.name().to_string()),
        ("--precision", config.precision.name().to_string()),
        ("--steps", timing.steps.to_string()),
        ("--max-seconds", timing.budget.as_secs_f64().to_string()),
    ] {
        command.args([flag, &value]);
    }
    command
}

/// The PyTorch peer's command line for `config` on what [`prepare`] wrote in `dir`, run by
/// `python`.
pub fn peer_command(python: &Path, dir: &Path, config: &Config, timing: &Timing) -> Command {
    let (loss, optimizer) = (LossConfig::default(), OptimizerConfig::default());
    let mut command = Command::new(python);
    // The allocator settings `fit` gives itself (mallopt in the trainer's main.rs), as glibc
    // tunables: without them PyTorch, on the same glibc, would lose time to page faults that the
    // trainer does not, and the comparison would measure the allocator.
    command.env(
        "GLIBC_TUNABLES",
        "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615",
    );
    command.arg(dir.join(PEER_SCRIPT));
    command.arg("--input").arg(dir);
    for (flag, value) in [
        ("--arch", config.arch.name().to_string()),
        ("--threads", config.threads.to_string()),
        ("--device", config.device.name().to_string()),
        ("--precision", config.precision.name().to_string()),
        ("--steps", timing.steps.to_string()),
        ("--max-seconds", timing.budget.as_secs_f64().to_string()),
        ("--lr", optimizer.lr.to_string()),
        ("--weight-decay", optimizer.weight_decay.to_string()),
        ("--tau", loss.tau.to_string()),
    ] {
        command.args([flag, &value]);
    }
    command
}

/// Runs a child and reads the [`StepMeasurement`] it prints.
pub fn run_child(mut command: Command) -> StepOutcome {
    let out = match command.output() {
        Ok(out) => out,
        Err(e) => {
            return StepOutcome::Failed {
                reason: format!("cannot start {:?}: {e}", command.get_program()),
            }
        }
    };
    if !out.status.success() {
        return StepOutcome::Failed {
            reason: failure(&out),
        };
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(m) => StepOutcome::Measured(m),
        Err(e) => StepOutcome::Failed {
            reason: format!("unreadable measurement ({e})"),
        },
    }
}

/// The rows as a markdown table, each configuration's two implementations side by side.
pub fn markdown(rows: &[StepRow], timing: &Timing) -> String {
    let mut out = format!(
        "Training step (forward, Smooth-AP paper mode in float32 at tau 0.01, backward, Adam), \
         {PER_CLASS} faces per person, images per second over the median of up to {} steps \
         after one warm-up step; peak is the process's peak resident size. Machine: {}.\n\n\
         | model | batch | threads | device | precision | smoothface img/s | PyTorch img/s | \
         ratio | peak smoothface / PyTorch | first loss smoothface / PyTorch |\n\
         |---|---:|---:|---|---|---:|---:|---:|---|---|\n",
        timing.steps,
        machine()
    );
    let speed = |o: &StepOutcome| match o {
        StepOutcome::Measured(m) => format!("{:.1}", m.images_per_second),
        StepOutcome::Failed { reason } => format!("failed ({reason})"),
    };
    let measured = |o: Option<&StepOutcome>| match o {
        Some(StepOutcome::Measured(m)) => Some(*m),
        _ => None,
    };
    for row in rows {
        let c = &row.config;
        let ours = measured(Some(&row.smoothface));
        let theirs = measured(row.pytorch.as_ref());
        let peer = row.pytorch.as_ref().map_or("not run".into(), speed);
        let (ratio, peak, loss) = match (ours, theirs) {
            (Some(a), Some(b)) => (
                format!("{:.2}x", a.images_per_second / b.images_per_second),
                format!(
                    "{} / {}",
                    bytes_text(a.peak_bytes),
                    bytes_text(b.peak_bytes)
                ),
                format!("{:.6} / {:.6}", a.first_loss, b.first_loss),
            ),
            (Some(a), None) => (
                "-".into(),
                format!("{} / -", bytes_text(a.peak_bytes)),
                format!("{:.6} / -", a.first_loss),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {peer} | {ratio} | {peak} | {loss} |\n",
            c.arch,
            c.batch,
            c.threads,
            c.device.name(),
            c.precision,
            speed(&row.smoothface)
        );
    }
    out
}

/// One way of spreading a global batch over a machine's cores: `processes` data-parallel
/// processes of `threads` libtorch threads each.
#[derive(Debug, Clone, Serialize)]
pub struct WorldRow {
    /// The configuration (its `threads` is each process's).
    #[serde(flatten)]
    pub config: Config,
    /// Processes.
    pub processes: usize,
    /// Whether they ran data-parallel through c10d (a world of one does too).
    pub c10d: bool,
    /// Rank 0's measurement (images per second of the global batch).
    pub outcome: StepOutcome,
}

/// A free TCP port on the loopback interface (for a store; another process could take it
/// before it is used, which the rendezvous then reports).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Runs `world` children of `exe` (bench-step --child on `dir`) as the ranks of one
/// data-parallel step, on the loopback interface, and returns rank 0's measurement.
pub fn run_world(
    exe: &Path,
    dir: &Path,
    config: &Config,
    timing: &Timing,
    world: usize,
) -> StepOutcome {
    let port = match free_port() {
        Ok(p) => p,
        Err(e) => {
            return StepOutcome::Failed {
                reason: format!("{e:#}"),
            }
        }
    };
    let mut children = Vec::new();
    for rank in 0..world {
        let mut command = child_command(exe, dir, config, timing);
        command
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("SMOOTHFACE_DIST_TIMEOUT", "120")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                return StepOutcome::Failed {
                    reason: format!("cannot start rank {rank}: {e}"),
                }
            }
        }
    }
    let mut first = None;
    for (rank, child) in children.into_iter().enumerate() {
        let outcome = match child.wait_with_output() {
            Ok(out) if out.status.success() => match serde_json::from_slice(&out.stdout) {
                Ok(m) => StepOutcome::Measured(m),
                Err(e) => StepOutcome::Failed {
                    reason: format!("rank {rank}: unreadable measurement ({e})"),
                },
            },
            Ok(out) => StepOutcome::Failed {
                reason: format!("rank {rank}: {}", failure(&out)),
            },
            Err(e) => StepOutcome::Failed {
                reason: format!("rank {rank}: {e}"),
            },
        };
        match (&first, &outcome) {
            (None, _) | (Some(StepOutcome::Measured(_)), StepOutcome::Failed { .. }) => {
                first = Some(outcome)
            }
            _ => {}
        }
    }
    first.unwrap_or(StepOutcome::Failed {
        reason: "no process ran".into(),
    })
}

/// For each architecture and batch in `configs` (their `threads` ignored): one process of
/// `world` threads, then `world` processes of one thread each, at the same global batch (for
/// `world` 1: one process without c10d, then one as a world of one, through c10d's
/// collectives).
pub fn world_rows(
    exe: &Path,
    configs: &[Config],
    timing: &Timing,
    world: usize,
) -> Result<Vec<WorldRow>> {
    ensure!(world >= 1, "--world-size must be 1 or more");
    let mut rows = Vec::new();
    for config in configs {
        ensure!(
            config.batch >= world as i64,
            "a batch of {} cannot be shared by {world} processes",
            config.batch
        );
        let dir = tempfile::tempdir().context("creating a folder for the weights and batch")?;
        prepare(dir.path(), config.arch, config.batch)?;
        let one = Config {
            threads: world as i32,
            ..*config
        };
        rows.push(WorldRow {
            config: one,
            processes: 1,
            c10d: false,
            outcome: run_child(child_command(exe, dir.path(), &one, timing)),
        });
        let many = Config {
            threads: 1,
            ..*config
        };
        rows.push(WorldRow {
            config: many,
            processes: world,
            c10d: true,
            outcome: run_world(exe, dir.path(), &many, timing, world),
        });
    }
    Ok(rows)
}

/// The world rows as a markdown table.
pub fn world_markdown(rows: &[WorldRow], timing: &Timing) -> String {
    let mut out = format!(
        "Data-parallel training step (c10d {} on loopback; forward, Smooth-AP over the global \
         batch, backward, all-reduce, Adam), {PER_CLASS} faces per person, images per second of \
         the global batch over the median of up to {} steps after one warm-up step; collectives \
         is rank 0's share of the step spent in the all-gather and all-reduce (waiting for the \
         other processes included). Machine: {}.\n\n\
         | model | global batch | processes x threads | device | img/s | s/step | collectives | \
         first loss | peak per process |\n|---|---:|---|---|---:|---:|---:|---:|---:|\n",
        if rows.iter().any(|r| r.config.device == DeviceName::Cuda) {
            "NCCL"
        } else {
            "Gloo"
        },
        timing.steps,
        machine()
    );
    for row in rows {
        let c = &row.config;
        let cells = match &row.outcome {
            StepOutcome::Measured(m) => format!(
                "{:.1} | {:.2} | {} | {:.6} | {}",
                m.images_per_second,
                m.seconds_per_step,
                if row.c10d {
                    format!("{:.0}%", 100.0 * m.collective_share)
                } else {
                    "-".into()
                },
                m.first_loss,
                bytes_text(m.peak_bytes)
            ),
            StepOutcome::Failed { reason } => format!("failed ({reason}) | - | - | - | -"),
        };
        out += &format!(
            "| {} | {} | {} x {}{} | {} | {cells} |\n",
            c.arch,
            c.batch,
            row.processes,
            c.threads,
            if row.c10d { " (c10d)" } else { "" },
            c.device.name()
        );
    }
    out
}

/// One loader measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LoaderRow {
    /// Worker threads.
    pub workers: usize,
    /// Faces per batch.
    pub batch: usize,
    /// Images per second, nothing consuming them.
    pub images_per_second: f64,
}

/// The loader's rows as a markdown table, under a line naming `folder` and whether the batches
/// were `pinned`.
pub fn loader_markdown(folder: &Path, pinned: bool, rows: &[LoaderRow]) -> String {
    let mut out = format!(
        "Loader alone on {} (decode, augment, stack{}):\n\n\
         | loader workers | batch | images/s |\n|---:|---:|---:|\n",
        folder.display(),
        if pinned { ", pinned" } else { "" }
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {:.0} |\n",
            r.workers, r.batch, r.images_per_second
        );
    }
    out
}

/// What the loader alone sustains: batches of `batch` faces of `folder` decoded, augmented and
/// stacked by `workers` threads (pinned for `device` when it is a GPU), nothing consuming them,
/// for about `budget`. Returns images per second.
pub fn loader_speed(
    set: &TrainingSet,
    batch: usize,
    workers: usize,
    device: Device,
    budget: Duration,
) -> Result<f64> {
    let sampler = PkSampler::new(set.labels(), PER_CLASS as usize, batch, 0)?;
    let spec = crate::backbone::input_spec(Arch::MobileFaceNet);
    let settings = LoaderSettings {
        workers,
        shift: 4,
        flip: 0.5,
        device,
        share: (0, 1),
    };
    let started = Instant::now();
    let mut images = 0;
    let mut epoch = 0;
    while started.elapsed() < budget {
        let batches = sampler.epoch(epoch);
        ensure!(!batches.is_empty(), "too few people for a batch of {batch}");
        load_epoch(set, &spec, &batches, epoch as u64, &settings, |b| {
            images += b.images;
            if started.elapsed() < budget {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        epoch += 1;
    }
    Ok(images as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child's measurement on a small MobileFaceNet batch: the loss of the warm-up step is
    /// the loss of the written weights and batch (computed here independently, without the
    /// step), and the step really trains (a second measurement from the same files starts
    /// from the same loss: nothing is carried over through the files).
    #[test]
    fn measures_a_step_from_the_written_weights_and_batch() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path(), Arch::MobileFaceNet, 8).unwrap();
        let config = Config {
            arch: Arch::MobileFaceNet,
            batch: 8,
            threads: 1,
            device: DeviceName::Cpu,
            precision: Precision::F32,
        };
        let timing = Timing {
            steps: 2,
            budget: Duration::from_secs(30),
        };
        let m = measure(dir.path(), &config, &timing).unwrap();
        assert!(m.steps == 2 && m.seconds_per_step > 0.0 && m.peak_bytes > 1 << 20);
        assert!((m.images_per_second - 8.0 / m.seconds_per_step).abs() < 1e-9);

        let vs = nn::VarStore::new(Device::Cpu);
        let backbone = Arch::MobileFaceNet.build(&vs.root(), Options::default());
        let weights = dir.path().join("weights.safetensors");
        checkpoint::load_into(&vs, "", &checkpoint::read(&weights).unwrap(), &weights).unwrap();
        let batch = checkpoint::read(&dir.path().join("batch.safetensors")).unwrap();
        let embeddings = tch::no_grad(|| backbone.forward_t(&batch["input"], true));
        let expected = crate::loss::SmoothAp::new(crate::loss::Mode::Paper, 0.01)
            .unwrap()
            .loss(&embeddings, &batch["labels"])
            .unwrap()
            .double_value(&[]);
        assert!(
            (m.first_loss - expected).abs() < 1e-6,
            "{m:?} vs {expected}"
        );
        let again = measure(dir.path(), &config, &timing).unwrap();
        assert_eq!(again.first_loss, m.first_loss);

        let wrong = Config {
            batch: 16,
            ..config
        };
        assert!(measure(dir.path(), &wrong, &timing).is_err());
        assert!(prepare(dir.path(), Arch::MobileFaceNet, 6).is_err());
    }

    #[test]
    fn the_table_puts_the_peer_beside_each_row() {
        let m = |ips: f64, loss| {
            StepOutcome::Measured(StepMeasurement {
                seconds_per_step: 64.0 / ips,
                images_per_second: ips,
                first_loss: loss,
                steps: 3,
                peak_bytes: 3 << 30,
                collective_share: 0.0,
            })
        };
        let config = Config {
            arch: Arch::MobileFaceNet,
            batch: 64,
            threads: 2,
            device: DeviceName::Cpu,
            precision: Precision::Bf16,
        };
        let rows = [
            StepRow {
                config,
                smoothface: m(60.0, 0.5),
                pytorch: Some(m(40.0, 0.5)),
            },
            StepRow {
                config: Config {
                    threads: 1,
                    ..config
                },
                smoothface: m(30.0, 0.25),
                pytorch: None,
            },
        ];
        let timing = Timing {
            steps: 3,
            budget: Duration::from_secs(60),
        };
        let table = markdown(&rows, &timing);
        let loader = [LoaderRow {
            workers: 2,
            batch: 48,
            images_per_second: 4254.4,
        }];
        let loader_table = loader_markdown(Path::new("faces"), true, &loader);
        assert!(
            loader_table.starts_with("Loader alone on faces (decode, augment, stack, pinned):\n\n")
                && loader_table.ends_with("|---:|---:|---:|\n| 2 | 48 | 4254 |\n"),
            "{loader_table}"
        );
        assert!(
            table.contains("| mobilefacenet | 64 | 2 | cpu | bf16 | 60.0 | 40.0 | 1.50x | 3.00 GiB / 3.00 GiB | 0.500000 / 0.500000 |"),
            "{table}"
        );
        assert!(
            table.contains("| mobilefacenet | 64 | 1 | cpu | bf16 | 30.0 | not run | - | 3.00 GiB / - | 0.250000 / - |"),
            "{table}"
        );
    }
}
