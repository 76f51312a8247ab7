//! `smoothface-train fit`: fine-tune a backbone on a folder of aligned faces.
//!
//! A run lives in one output folder:
//! - `config.toml`: the configuration it was started with (a resumed run must use the same);
//! - `last.safetensors`: the whole state after the last completed epoch (weights, ArcFace head,
//!   Adam's moments, position), written atomically; `--resume` continues from it;
//! - `best.safetensors`: the same at the epoch with the best validation mAP;
//! - `metrics.jsonl`: one [`EpochRecord`] per epoch, epoch 0 being the starting model;
//! - `metrics.png`: training loss and validation mAP per epoch.
//!
//! The batches and augmentations of an epoch depend only on the seed and the epoch number, so
//! a run killed and resumed trains on exactly what an uninterrupted run would have.
//!
//! Data-parallel (under torchrun, or any launcher that sets `RANK`, `WORLD_SIZE`,
//! `MASTER_ADDR` and `MASTER_PORT`: [`FitOptions::launch`]), every process draws the same global
//! batches, loads its share of each ([`LoaderSettings::share`]) and takes the step together with
//! the others ([`Trainee::group`]): `[train] batch_size` is the global batch, so a configuration
//! trains the same at any number of processes. Rank 0 alone validates and writes the run's
//! files; it broadcasts the starting state (the weights, and on `--resume` the whole state it
//! read) so that every process starts from the same one, whatever the number of processes the
//! checkpoint was written with.

mod objective;
mod plot;
mod record;
mod step;
mod validation;

pub use objective::{Objective, HEAD};
pub use record::{read_all as read_records, EpochRecord};
pub use step::{StepOutcome, Trainee};
pub use validation::ValidationSet;

use crate::backbone::{input_spec, Options, EMBEDDING_SIZE};
use crate::checkpoint;
use crate::config::TrainConfig;
use crate::data::folder::FaceFolder;
use crate::data::loader::{load_epoch, LoaderSettings, TrainingSet};
use crate::data::recordio::RecordIo;
use crate::data::sampler::PkSampler;
use crate::dist::{Backend, Launch, ProcessGroup};
use crate::optim::Adam;
use crate::precision::LossScaler;
use anyhow::{bail, ensure, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use smoothface_shared::atomic::write_atomically;
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

/// How `fit` was asked to run, besides the configuration.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// The run's folder.
    pub out: PathBuf,
    /// Continue the run in `out` instead of starting one.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// This process's place in a data-parallel run ([`Launch::from_env`]); None for one
    /// process.
    pub launch: Option<Launch>,
}

/// Opens the training and validation faces the configuration names.
fn open_data(config: &TrainConfig) -> Result<(TrainingSet, FaceFolder)> {
    let d = &config.data;
    let min_photos = d.min_photos.max(config.train.per_class);
    let (train, validation) = match (&d.folder, &d.recordio) {
        (Some(folder), _) => {
            let all = FaceFolder::open(folder, min_photos)?;
            ensure!(
                !all.is_empty(),
                "{}: no person with {min_photos} or more photos",
                folder.display()
            );
            match &d.validation_folder {
                Some(v) => (TrainingSet::Folder(all), FaceFolder::open(v, 2)?),
                None => {
                    let (train, val) = all.split_people(d.validation_fraction, d.split_seed);
                    (TrainingSet::Folder(train), val)
                }
            }
        }
        (None, Some(rec)) => {
            let pack = RecordIo::open(rec, &rec.with_extension("idx"))?;
            let labels = pack.labels()?;
            let validation = d.validation_folder.as_ref().expect("checked by the config");
            (
                TrainingSet::Pack(pack, labels),
                FaceFolder::open(validation, 2)?,
            )
        }
        (None, None) => bail!("[data] names no training faces"),
    };
    Ok((train, validation))
}

/// The progress bar over all the steps of the run.
fn progress_bar(total: usize, done: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} steps  eta {eta}  {msg}")
            .expect("valid template"),
    );
    bar.set_position(done as u64);
    bar
}

/// Trains as `config` says, in `options.out`, calling `on_epoch` with each new epoch record
/// (epoch 0 first on a fresh run). Returns every record of the run.
pub fn fit(
    config: &TrainConfig,
    config_text: &str,
    options: &FitOptions,
    mut on_epoch: impl FnMut(&EpochRecord),
) -> Result<Vec<EpochRecord>> {
    let out = &options.out;
    let (last_path, best_path) = (out.join("last.safetensors"), out.join("best.safetensors"));
    let (records_path, config_path) = (out.join("metrics.jsonl"), out.join("config.toml"));
    if let Some(threads) = config.train.threads {
        tch::set_num_threads(threads);
    }
    let mut device = config.train.device.resolve()?;
    // The process group first: from here on, a process that fails ends the others' next
    // collective with an error (its connections close) instead of leaving them waiting.
    let group = match &options.launch {
        None => None,
        Some(launch) => {
            if let Device::Cuda(_) = device {
                let gpus = tch::Cuda::device_count() as usize;
                ensure!(
                    launch.local_rank < gpus,
                    "LOCAL_RANK={} but this host has {gpus} CUDA device(s): start at most {gpus} \
                     processes per host",
                    launch.local_rank
                );
                device = Device::Cuda(launch.local_rank);
            }
            Some(ProcessGroup::new(launch, Backend::for_device(device))?)
        }
    };
    let group = group.as_ref();
    let lead = group.is_none_or(|g| g.rank() == 0);
    if lead {
        settle(
            group,
            prepare_folder(out, &last_path, &config_path, config_text, options.resume),
        )?;
    } else {
        settle(group, Ok(()))?;
    }
    config.train.precision.check(device)?;
    // Random initialisations (a backbone without `init`, the ArcFace head) from the run's seed,
    // so that a run can be repeated.
    tch::manual_seed(config.train.seed as i64);
    let spec = input_spec(config.model.arch);
    let (train, validation) = open_data(config)?;
    // Rank 0 alone validates.
    let validation = if lead {
        let validation = ValidationSet::load(&validation, spec.size);
        for skipped in &validation.skipped {
            eprintln!("smoothface-train: warning: validation face left out: {skipped}");
        }
        ensure!(
            validation.len() >= 2,
            "the validation split has fewer than 2 readable faces"
        );
        Some(validation)
    } else {
        None
    };

    // The model, its objective and the optimiser.
    let vs = nn::VarStore::new(device);
    let backbone_options = Options {
        frozen_batch_norm: config.model.frozen_batch_norm,
        dropout: 0.0,
    };
    let backbone = config.model.arch.build(&vs.root(), backbone_options);
    let classes = train.labels().iter().max().map_or(0, |&l| l + 1);
    let objective = Objective::new(&config.loss, &vs.root(), classes, EMBEDDING_SIZE)?;
    if let Some(init) = &config.model.init {
        checkpoint::load_into(
            &vs,
            config.model.arch.name(),
            &checkpoint::read(init)?,
            init,
        )?;
    }
    let mut adam = Adam::new(&vs, &config.optimizer);
    let mut scaler = LossScaler::new(config.train.precision);

    let t = &config.train;
    let sampler = PkSampler::new(train.labels(), t.per_class, t.batch_size, t.seed)?;
    let per_epoch = sampler.batches_per_epoch();
    ensure!(
        per_epoch > 0,
        "the training people cannot fill one batch of {} ({} per person): lower [train] batch_size",
        t.batch_size,
        t.per_class
    );
    let total_steps = (t.epochs * per_epoch).min(t.max_steps.unwrap_or(usize::MAX));

    // Every process must draw its batches from the same faces.
    if let Some(group) = group {
        same_training_set(group, train.labels())?;
    }

    // Where the run stands (rank 0's word; the others learn it from its broadcast below).
    let mut resume = || -> Result<(usize, usize, Vec<EpochRecord>)> {
        if !(lead && options.resume && last_path.exists()) {
            return Ok((0, 0, Vec::new()));
        }
        let state = checkpoint::read(&last_path)?;
        checkpoint::load_into(&vs, "", &state, &last_path)?;
        adam.load_state(&state)
            .with_context(|| format!("{}: cannot restore the optimiser", last_path.display()))?;
        scaler
            .load_state(&state)
            .with_context(|| format!("{}: cannot restore the loss scale", last_path.display()))?;
        let position = |key: &str| -> Result<usize> {
            let t = state
                .get(key)
                .with_context(|| format!("{}: no `{key}`", last_path.display()))?;
            // A tampered checkpoint may hold anything under the key: no panic on it.
            t.f_int64_value(&[0])
                .ok()
                .and_then(|v| usize::try_from(v).ok())
                .with_context(|| {
                    format!(
                        "{}: `{key}` is not one non-negative integer",
                        last_path.display()
                    )
                })
        };
        let (epoch, step) = (position("train.epoch")?, position("train.step")?);
        let mut records = record::read_all(&records_path)?;
        records.retain(|r| r.epoch <= epoch);
        Ok((epoch, step, records))
    };
    let resumed = resume();
    let (mut epoch, mut step, mut records) = settle(group, resumed)?;
    // Every process starts from rank 0's state: its initial weights, or what it resumed.
    if let Some(group) = group {
        let (e, s) = broadcast_state(group, &vs, &mut adam, &mut scaler, epoch, step)?;
        (epoch, step) = (e, s);
    }
    let started = Instant::now();
    let evaluate = |epoch: usize, step, loss, speed| -> Result<EpochRecord> {
        let validation = validation.as_ref().context("only rank 0 validates")?;
        let report = validation
            .evaluate(
                backbone.as_ref(),
                &spec,
                device,
                config.eval.batch_size,
                &config.eval.recall_at,
            )
            .with_context(|| match epoch {
                0 => "validating the starting model (epoch 0)".to_owned(),
                _ => format!("validating epoch {epoch}"),
            })?;
        Ok(EpochRecord {
            epoch,
            step,
            train_loss: loss,
            images_per_second: speed,
            val_map: report.map,
            val_recall: report.recall_at.into_iter().collect::<BTreeMap<_, _>>(),
            val_queries: report.queries,
            elapsed_seconds: started.elapsed().as_secs_f64(),
            skipped_steps: 0,
        })
    };
    if lead && records.is_empty() {
        let before = evaluate(0, 0, None, None)?;
        on_epoch(&before);
        records.push(before);
        record::write_all(&records, &records_path)?;
    }

    let bar = progress_bar(total_steps, step, options.progress && lead);
    // The best trained epoch: the starting model (epoch 0) is not a candidate.
    let mut best = records
        .iter()
        .filter(|r| r.epoch > 0)
        .map(|r| r.val_map)
        .fold(f64::NEG_INFINITY, f64::max);
    let trainee = Trainee {
        backbone: backbone.as_ref(),
        objective: &objective,
        precision: t.precision,
        group,
        sync_batch_norm: t.sync_batch_norm,
    };
    let loader = LoaderSettings {
        workers: t.loader_workers,
        shift: t.shift,
        flip: t.flip,
        device,
        share: group.map_or((0, 1), |g| (g.rank(), g.world())),
    };
    while epoch < t.epochs && step < total_steps {
        let epoch_started = Instant::now();
        let mut batches = sampler.epoch(epoch);
        batches.truncate(total_steps - step);
        let (mut loss_sum, mut losses, mut images, mut skipped) = (0.0, 0, 0, 0);
        let failed = load_epoch(
            &train,
            &spec,
            &batches,
            epoch_seed(t.seed, epoch),
            &loader,
            |batch| {
                let where_ = || format!("epoch {} step {}", epoch + 1, step + 1);
                // Asynchronous from pinned memory on a GPU; the step waits for it.
                let input = batch.input.to_device_(device, Kind::Float, true, false);
                let outcome = match trainee.step(
                    &mut adam,
                    &mut scaler,
                    &input,
                    &batch.labels.to_device(device),
                ) {
                    Ok(outcome) => outcome,
                    Err(e) => return ControlFlow::Break(anyhow::Error::new(e).context(where_())),
                };
                if outcome.loss.is_finite() {
                    (loss_sum, losses) = (loss_sum + outcome.loss, losses + 1);
                } else if !scaler.enabled() {
                    // Without a loss scaler nothing skips the step: the weights are now NaN.
                    return ControlFlow::Break(anyhow::anyhow!(
                        "{}: the loss is {}; lower [optimizer] lr",
                        where_(),
                        outcome.loss
                    ));
                }
                skipped += usize::from(!outcome.taken);
                images += outcome.images;
                step += 1;
                bar.set_position(step as u64);
                let speed = images as f64 / epoch_started.elapsed().as_secs_f64();
                let skips = if skipped > 0 {
                    format!("  {skipped} skipped (loss scale {})", scaler.scale())
                } else {
                    String::new()
                };
                bar.set_message(format!(
                    "epoch {}/{}  loss {:.4}  {speed:.1} img/s{skips}",
                    epoch + 1,
                    t.epochs,
                    loss_sum / losses.max(1) as f64
                ));
                ControlFlow::Continue(())
            },
        );
        if let Some(e) = failed {
            return Err(e);
        }
        epoch += 1;
        let speed = images as f64 / epoch_started.elapsed().as_secs_f64();
        if !lead {
            continue;
        }
        let mut record = evaluate(
            epoch,
            step,
            Some(loss_sum / losses.max(1) as f64),
            Some(speed),
        )?;
        record.skipped_steps = skipped;
        // The record first and the state last: a run killed in between redoes the epoch, and
        // its resumption drops the record of the epoch it redoes.
        let improved = record.val_map > best;
        best = best.max(record.val_map);
        records.push(record);
        record::write_all(&records, &records_path)?;
        plot::draw(&records, &out.join("metrics.png"))?;
        let state = run_state(&vs, &adam, &scaler, epoch, step);
        if improved {
            checkpoint::write(&state, &best_path)?;
        }
        checkpoint::write(&state, &last_path)?;
        bar.suspend(|| on_epoch(records.last().expect("just pushed")));
    }
    bar.finish_and_clear();
    Ok(records)
}

/// `result` where every process of the run succeeded; otherwise this process's own error, or
/// one saying that another process failed (which reports its own cause).
fn settle<T>(group: Option<&ProcessGroup>, result: Result<T>) -> Result<T> {
    let Some(group) = group else {
        return result;
    };
    let failed =
        Tensor::from_slice(&[f32::from(u8::from(result.is_err()))]).to_device(group.device());
    group.all_reduce_sum(&[&failed])?;
    let others = failed.double_value(&[0]) - f64::from(u8::from(result.is_err()));
    let value = result?;
    ensure!(
        others < 0.5,
        "{} other process(es) of the run failed to start (see their errors)",
        others.round()
    );
    Ok(value)
}

/// Checks that every process read the same training faces (their number and a hash of their
/// labels, in order), so that all draw the same batches.
fn same_training_set(group: &ProcessGroup, labels: &[i64]) -> Result<()> {
    // FNV-1a over the labels, kept to 62 bits so that it is exact in an int64 tensor.
    let hash = labels.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &l| {
        (h ^ l as u64).wrapping_mul(0x0100_0000_01b3)
    }) >> 2;
    let mine = Tensor::from_slice(&[labels.len() as i64, hash as i64]).to_device(group.device());
    let all = Vec::<i64>::try_from(group.all_gather(&mine)?.to_device(Device::Cpu))?;
    for (rank, other) in all.chunks(2).enumerate() {
        ensure!(
            other == &all[..2],
            "rank {rank} read other training faces than rank 0 ({} faces against {}, or other \
             people): every process must read the same [data]",
            other[0],
            all[0]
        );
    }
    Ok(())
}

/// Gives every process rank 0's run state (weights, Adam, loss scale, position); returns the
/// epoch and step.
fn broadcast_state(
    group: &ProcessGroup,
    vs: &nn::VarStore,
    adam: &mut Adam,
    scaler: &mut LossScaler,
    epoch: usize,
    step: usize,
) -> Result<(usize, usize)> {
    let device = group.device();
    let state: Vec<(String, Tensor)> = run_state(vs, adam, scaler, epoch, step)
        .into_iter()
        .map(|(name, t)| (name, t.detach().to_device(device).contiguous().copy()))
        .collect();
    let tensors: Vec<&Tensor> = state.iter().map(|(_, t)| t).collect();
    group.broadcast(&tensors, 0)?;
    if group.rank() == 0 {
        return Ok((epoch, step));
    }
    let state: std::collections::HashMap<String, Tensor> = state.into_iter().collect();
    let from = Path::new("rank 0's state");
    checkpoint::load_into(vs, "", &state, from)?;
    adam.load_state(&state)?;
    scaler.load_state(&state)?;
    let position = |key: &str| -> Result<usize> {
        let v = state[key].to_device(Device::Cpu).int64_value(&[0]);
        usize::try_from(v).with_context(|| format!("rank 0 sent {key} = {v}"))
    };
    Ok((position("train.epoch")?, position("train.step")?))
}

/// Creates the run folder, or checks that the one being resumed was started with this
/// configuration.
fn prepare_folder(
    out: &Path,
    last: &Path,
    config_path: &Path,
    config_text: &str,
    resume: bool,
) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create the run folder", out.display()))?;
    if resume {
        if let Ok(started_with) = std::fs::read_to_string(config_path) {
            ensure!(
                started_with == config_text,
                "{}: the run was started with another configuration (saved there); resume it \
                 with that one, or start a new run in another folder",
                config_path.display()
            );
        }
    } else {
        ensure!(
            !last.exists(),
            "{}: a run is already there; pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    // Atomically, as every file of the run: a half-written configuration would refuse the
    // resumption of its own run.
    write_atomically(config_path, |file| file.write_all(config_text.as_bytes()))
        .with_context(|| format!("{}: cannot write", config_path.display()))
}

/// The seed of epoch `epoch`'s augmentation: distinct per epoch, fixed per run.
fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    seed ^ (epoch as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Everything a resumed run needs, as named tensors.
fn run_state(
    vs: &nn::VarStore,
    adam: &Adam,
    scaler: &LossScaler,
    epoch: usize,
    step: usize,
) -> Vec<(String, Tensor)> {
    let mut state = checkpoint::variables(vs, "");
    state.extend(adam.state());
    state.extend(scaler.state());
    state.push(("train.epoch".into(), Tensor::from_slice(&[epoch as i64])));
    state.push(("train.step".into(), Tensor::from_slice(&[step as i64])));
    state
}
