//! `smoothface-train`: the trainer's command line.
//!
//! The clap definitions (every `--help` page; `docs/training.md` shows them and
//! `tests/tests/docs_flags.rs` checks that every flag the docs show exists here) and the glue
//! that calls the `smoothface_trainer` library, where the work lives (start at its `lib.rs`).

// The doc comments below are clap's --help text (`[B]` shapes, `<name>` placeholders), not
// rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use smoothface_shared::ijb::cli::IjbcArgs;
use smoothface_trainer::backbone::Arch;
use smoothface_trainer::bench::step::{self, DeviceName};
use smoothface_trainer::bench::{self, Form, Setup};
use smoothface_trainer::config::{DeviceChoice, TrainConfig};
use smoothface_trainer::eval::TorchEmbedder;
use smoothface_trainer::export::quantize::{Format, QuantizeOptions};
use smoothface_trainer::fit::FitOptions;
use smoothface_trainer::loss::{
    Contrastive, Mode, SmoothAp, Triplet, DEFAULT_CONTRASTIVE_MARGIN, DEFAULT_TAU,
    DEFAULT_TRIPLET_MARGIN,
};
use smoothface_trainer::npy;
use smoothface_trainer::precision::Precision;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

#[derive(Parser)]
#[command(
    name = "smoothface-train",
    version,
    about = "Train, export and quantize the Smoothface embedder on libtorch",
    long_about = "Train, export and quantize the Smoothface embedder on libtorch (through tch).\n\n\
        The embedder maps an aligned face to a vector; training pulls vectors of the same person \
        together so that a search ranks that person's photos first. Smooth-AP optimises that \
        ranking directly (a smoothed average precision); triplet, contrastive and ArcFace are the \
        baselines.\n\n\
        The usual path: import a pretrained model, fit it on aligned faces, export the result to \
        a model folder (quantize it to int8 if wanted), and give that folder to the device with \
        `smoothface --model DIR`.\n\n\
        Exit status: 0 success, 1 error (the message names the file and the cause), 2 bad usage."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute a loss (and its gradient) on a batch of embeddings saved with numpy
    #[command(
        long_about = "Compute a loss on one batch of embeddings saved with numpy.save, and \
        print it as JSON: {\"loss\", \"loss_name\", \"mode\", \"tau\", \"margin\", \"batch\", \
        \"dim\"} (mode and tau are null for the baselines, margin for Smooth-AP).\n\n\
        Use it to check a Python implementation against this one, or to look at a batch:\n\n  \
        python -c 'import numpy as np; np.save(\"e.npy\", np.random.randn(8, 4).astype(np.float32)); \
        np.save(\"l.npy\", np.array([0,0,1,1,2,2,3,3]))'\n  \
        smoothface-train loss --embeddings e.npy --labels l.npy --grad-out g.npy"
    )]
    Loss(LossArgs),
    /// Benchmark Smooth-AP's forward and backward pass against the authors' [B,B,B] form
    #[command(
        long_about = "Benchmark Smooth-AP's forward and backward pass: this crate's \
        scalable form beside the authors' [B,B,B] difference-tensor form, at each batch size and \
        thread count, with time and peak memory. Each configuration runs in a fresh child process \
        (this binary again) so that its peak memory is its own. The authors' form is skipped where \
        its estimated memory exceeds --authors-limit-gb. Prints a markdown table (or --json).\n\n  \
        smoothface-train bench-loss\n  \
        smoothface-train bench-loss --batches 224,384 --threads 1 --json"
    )]
    BenchLoss(BenchArgs),
    /// Benchmark a whole training step (forward, loss, backward, Adam) against PyTorch's
    #[command(
        long_about = "Benchmark a whole training step of MobileFaceNet, mbf and IResNet-50 \
        (forward in the chosen precision, Smooth-AP in float32, backward, Adam), this trainer beside \
        PyTorch's own step in Python on the same architecture, weights and batch, side by side \
        in one run. For each model and batch the weights and a batch are drawn once and written \
        as safetensors; each configuration then runs in a fresh child process per \
        implementation: this binary again, and bench/torch_step.py (built into this binary) \
        under --python. Both report the loss of their warm-up step, which must agree. Prints a \
        markdown table (or --json).\n\n\
        With --faces, also measures the data loader alone (decode, augment, stack; pinned \
        memory for a GPU) on that folder of aligned crops at each --loader-workers count: the \
        ceiling of images per second that the loader can feed a step.\n\n  \
        smoothface-train bench-step\n  \
        smoothface-train bench-step --arch mobilefacenet --batches 64 --threads 2 --precision f32,bf16\n  \
        smoothface-train bench-step --device cuda --threads 8 --precision f32,bf16,f16 --json\n  \
        smoothface-train bench-step --arch mobilefacenet --batches 224 --faces ../shared/data/faces/glint-aligned12"
    )]
    BenchStep(BenchStepArgs),
    /// Build a checkpoint from a pretrained ONNX embedder
    #[command(
        long_about = "Build a checkpoint (safetensors) from a pretrained ONNX embedder, to \
        fine-tune it. The weights are matched by graph structure: the nodes are walked in order \
        and each Conv, BatchNormalization, PRelu and Gemm fills the next layer of the \
        architecture; every shape and convolution setting is checked, and a mismatch names the \
        node. Prints {\"checkpoint\", \"arch\", \"layers\", \"folded_batch_norms\", \
        \"batch_norms_folded_into_linear\"} as JSON.\n\n\
        Batch norms the exporter folded into convolutions are imported as identity plus bias: \
        fine-tune such a model with frozen batch norm. A batch norm the graph keeps after a \
        fully connected layer where the architecture has none (w600k_mbf's last node) is folded \
        into that layer, which computes the same.\n\n  \
        smoothface-train import models/w600k_mbf/w600k_mbf.onnx --arch mbf --out mbf.safetensors\n  \
        smoothface-train import models/mobilefacenet/fr_feature.onnx --arch mobilefacenet \
        --out mobilefacenet.safetensors"
    )]
    Import(ImportArgs),
    /// Fine-tune a backbone as a TOML configuration says
    #[command(
        long_about = "Fine-tune a backbone on aligned faces as a TOML configuration says, \
        evaluating on held-out people after every epoch.\n\n\
        The run folder (--out) receives config.toml, last.safetensors (the whole state after the \
        last epoch, written atomically), best.safetensors (the epoch with the best validation \
        mAP), metrics.jsonl (one JSON object per epoch; epoch 0 is the starting model) and \
        metrics.png (loss and mAP per epoch). Each epoch's record is also printed on stdout. A \
        killed run continues with --resume, on the very batches it would have seen.\n\n\
        A minimal configuration (every other setting has the Smooth-AP paper's default: Adam, \
        lr 1e-5, weight decay 4e-4, batch 224 of 4 photos per person, tau 0.01):\n\n  \
        [data]\n  folder = \"faces-aligned\"   # a folder per person, from `smoothface align`\n  \
        [model]\n  init = \"mobilefacenet.safetensors\"   # from `smoothface-train import`\n\n\
        trainer/configs/every-setting.toml lists every setting with its default.\n\n  \
        smoothface-train fit --config train.toml --out runs/smooth-ap\n  \
        smoothface-train fit --config train.toml --out runs/smooth-ap --resume\n\n\
        Data-parallel over processes, GPUs and hosts (c10d: Gloo on CPU, NCCL on CUDA) when RANK, \
        WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set, as torchrun sets them; [train] \
        batch_size stays the global batch (docs/training.md):\n\n  \
        torchrun --nproc-per-node 8 --no-python smoothface-train fit --config train.toml"
    )]
    Fit(FitArgs),
    /// Turn a checkpoint into a model folder the device runs (ONNX + manifest)
    #[command(
        long_about = "Turn a checkpoint (from fit or import) into a model folder that every \
        smoothface command takes with --model DIR: model.onnx (opset 13, symbolic batch, batch \
        norms folded into the convolutions) and manifest.json (input layout and normalisation, \
        embedding size, the ONNX file's sha256, and the origin: checkpoint hash and, for a fit \
        checkpoint, the training configuration saved beside it).\n\n\
        Before the folder appears, tract runs the graph on random faces and its output is \
        compared with libtorch's on the checkpoint; the export fails if they differ. Prints \
        {\"dir\", \"arch\", \"onnx_sha256\", \"max_abs_diff\"} as JSON.\n\n  \
        smoothface-train export runs/lfw-smooth-ap/best.safetensors --out models/lfw-smooth-ap\n  \
        smoothface --model models/lfw-smooth-ap index ~/Pictures"
    )]
    Export(ExportArgs),
    /// Make an int8 model folder from a float one, calibrated on aligned faces
    #[command(
        long_about = "Make an int8 model folder from a float one (from export): weights int8 \
        per output channel, activations uint8 per tensor with ranges measured on calibration \
        faces (a few hundred aligned 112x112 crops, e.g. from `smoothface align`). Writes the \
        graph with QuantizeLinear/DequantizeLinear pairs around the convolutions (the default, \
        more accurate and faster in tract) or with QLinearConv integer convolutions (--format \
        qlinear), and a manifest recording the float model, the \
        calibration and the choices. Then compares float and int8 embeddings on --check faces \
        (default: the calibration faces) and prints {\"mean_cosine\", \"min_cosine\", sizes, \
        ...} as JSON.\n\n  \
        smoothface-train quantize models/mine --calibration faces-aligned --out models/mine-int8\n  \
        smoothface --model models/mine-int8 index ~/Pictures"
    )]
    Quantize(QuantizeArgs),
    /// Evaluate a checkpoint on a benchmark (IJB-B/C), as `smoothface eval` does an exported model
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Subcommand)]
enum EvalCommand {
    /// IJB-B/C 1:1 TAR@FAR, 1:N rank-k and TPIR@FPIR, retrieval mAP, as insightface computes them
    #[command(
        long_about = "Evaluate a checkpoint on IJB-C (or IJB-B) in the layout \
        insightface's tools read (DIR/meta/ijbc_*.txt and .csv, DIR/loose_crop/), with the very \
        code `smoothface eval ijbc` runs for an exported model: the same alignment, flip test, \
        norm and faceness weighting, pooling and metrics, so the checkpoint and its export give \
        the same numbers. Faces are embedded --batch at a time on the GPU when there is one \
        (--device), and cached under --cache by the checkpoint's sha256, so a killed run \
        resumes. Prints the tables, or --json with the keys `smoothface eval ijbc --json` \
        writes.\n\n  \
        smoothface-train eval ijbc /data/IJB_release/IJBC --checkpoint runs/sap/best.safetensors\n  \
        smoothface-train eval ijbc fixture/ --checkpoint ckpt.safetensors --device cpu --json"
    )]
    Ijbc(EvalIjbcArgs),
}

#[derive(Args)]
struct EvalIjbcArgs {
    #[command(flatten)]
    common: IjbcArgs,
    /// The checkpoint (.safetensors from fit or import)
    #[arg(long, value_name = "CKPT")]
    checkpoint: PathBuf,
    /// Where to run: `auto` (CUDA when available), `cpu` or `cuda`
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceChoice,
    /// Crops per forward pass (with the flip test each face is two crops) [default: 128 on a
    /// GPU, 16 on the CPU, where larger batches ran slower: see hardware.md]
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// No progress bar
    #[arg(long, short)]
    quiet: bool,
}

fn eval_ijbc(args: &EvalIjbcArgs) -> Result<()> {
    let device = args.device.resolve()?;
    let batch = args
        .batch
        .unwrap_or(if device.is_cuda() { 128 } else { 16 });
    let model = TorchEmbedder::load(&args.checkpoint, device, batch)?;
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let c = &args.common;
    let report = smoothface_trainer::eval::ijbc(&model, &c.dir, &c.options(), progress)?;
    c.finish(&report, &args.checkpoint.display().to_string())
        .map_err(|e| anyhow!(e))
}

/// The losses `loss` can compute.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum LossName {
    /// Smooth-AP (Brown et al., ECCV 2020): 1 - smoothed average precision of each query
    SmoothAp,
    /// Batch-hard triplet: hardest positive vs hardest negative distance, per anchor
    Triplet,
    /// Pairwise: same-person similarities pulled to 1, others pushed below the margin
    Contrastive,
}

#[derive(Args)]
struct LossArgs {
    /// Embeddings: a float32 [B, D] .npy array (float64 also accepted; the loss then computes in
    /// float64). Rows are L2-normalised by the loss, so any scale will do
    #[arg(long, value_name = "E.npy")]
    embeddings: PathBuf,
    /// Identity labels: an int64 [B] .npy array, one per embedding row. Any values, any number of
    /// samples per identity, any order
    #[arg(long, value_name = "L.npy")]
    labels: PathBuf,
    /// Which loss
    #[arg(long, value_enum, default_value_t = LossName::SmoothAp)]
    loss: LossName,
    /// Smooth-AP only, one of `paper`, `official`. `paper`: the query is left out of its own
    /// retrieval and positive sets, as the paper defines it. `official`: the authors' released
    /// code, where each query also retrieves itself [default: paper]
    #[arg(long, value_name = "MODE", value_parser = Mode::from_str)]
    mode: Option<Mode>,
    /// Smooth-AP only: temperature of the sigmoid that smooths the ranking; smaller is closer to
    /// the true AP but gives gradients to fewer pairs [default: 0.01]
    #[arg(long, value_name = "T")]
    tau: Option<f64>,
    /// Triplet and contrastive only: for triplet, the distance margin between hardest positive
    /// and hardest negative [default: 0.2]; for contrastive, the similarity that negative pairs
    /// are pushed below [default: 0.5]
    #[arg(long, value_name = "M")]
    margin: Option<f64>,
    /// Also write d loss / d embeddings (with respect to the raw rows as given, before
    /// normalisation) to this .npy file, [B, D], in the embeddings' dtype
    #[arg(long, value_name = "G.npy")]
    grad_out: Option<PathBuf>,
    /// CPU threads for libtorch [default: libtorch's choice, one per core]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..))]
    threads: Option<i32>,
}

/// What `loss` prints.
#[derive(Serialize)]
struct LossReport {
    loss: f64,
    loss_name: LossName,
    mode: Option<Mode>,
    tau: Option<f64>,
    margin: Option<f64>,
    batch: i64,
    dim: i64,
}

fn loss(args: &LossArgs) -> Result<()> {
    let smooth_ap = args.loss == LossName::SmoothAp;
    if smooth_ap && args.margin.is_some() {
        anyhow::bail!("--margin applies to triplet and contrastive, not smooth-ap (see --tau)");
    }
    if !smooth_ap && (args.mode.is_some() || args.tau.is_some()) {
        anyhow::bail!("--mode and --tau apply to smooth-ap only (see --margin)");
    }
    if let Some(threads) = args.threads {
        tch::set_num_threads(threads);
    }
    let embeddings = npy::read_embeddings(&args.embeddings)?.set_requires_grad(true);
    let (batch, dim) = (embeddings.size()[0], embeddings.size()[1]);
    let labels = npy::read_labels(&args.labels, batch)?;
    let mut report = LossReport {
        loss: f64::NAN,
        loss_name: args.loss,
        mode: None,
        tau: None,
        margin: None,
        batch,
        dim,
    };
    let value = match args.loss {
        LossName::SmoothAp => {
            let (mode, tau) = (
                args.mode.unwrap_or_default(),
                args.tau.unwrap_or(DEFAULT_TAU),
            );
            (report.mode, report.tau) = (Some(mode), Some(tau));
            SmoothAp::new(mode, tau)?.loss(&embeddings, &labels)
        }
        LossName::Triplet => {
            let margin = args.margin.unwrap_or(DEFAULT_TRIPLET_MARGIN);
            report.margin = Some(margin);
            Triplet::new(margin)?.loss(&embeddings, &labels)
        }
        LossName::Contrastive => {
            let margin = args.margin.unwrap_or(DEFAULT_CONTRASTIVE_MARGIN);
            report.margin = Some(margin);
            Contrastive::new(margin)?.loss(&embeddings, &labels)
        }
    }
    .with_context(|| {
        format!(
            "{} with {}",
            args.embeddings.display(),
            args.labels.display()
        )
    })?;
    report.loss = value.double_value(&[]);
    if let Some(path) = &args.grad_out {
        value.backward();
        npy::write(&embeddings.grad(), path)?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[derive(Args)]
struct BenchArgs {
    /// Batch sizes B, comma-separated; each a multiple of --per-identity
    #[arg(long, value_name = "B,...", value_delimiter = ',', default_values_t = [224, 384, 1024, 4096])]
    batches: Vec<i64>,
    /// libtorch CPU thread counts, comma-separated [default: 1 and every hardware thread]
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(1..))]
    threads: Vec<i32>,
    /// Samples per identity (P); the batch is B/P identities
    #[arg(long, value_name = "P", default_value_t = 4, value_parser = clap::value_parser!(i64).range(1..))]
    per_identity: i64,
    /// Embedding dimension
    #[arg(long, value_name = "D", default_value_t = 512, value_parser = clap::value_parser!(i64).range(1..))]
    dim: i64,
    /// The scalable form's mode, `paper` or `official`. `official` computes exactly what the
    /// authors' form computes, so the two losses in the table must agree
    #[arg(long, value_name = "MODE", value_parser = Mode::from_str, default_value_t = Mode::Official)]
    mode: Mode,
    /// Sigmoid temperature
    #[arg(long, value_name = "T", default_value_t = DEFAULT_TAU)]
    tau: f64,
    /// Skip the authors' form where its estimated memory (11·B³ float32 numbers) exceeds this
    /// many GB
    #[arg(long, value_name = "GB", default_value_t = 12.0)]
    authors_limit_gb: f64,
    /// Print the setup and one object per configuration as JSON instead of the markdown table
    #[arg(long)]
    json: bool,
    /// Measure one configuration of the form `scalable` or `authors` in this process (the first
    /// --batches and --threads values) and print it as JSON: what the benchmark runs in each child
    #[arg(long, hide = true, value_name = "FORM", value_parser = Form::from_str)]
    child: Option<Form>,
}

/// The benchmarks' thread counts: those given, else 1 and every hardware thread.
fn thread_counts(given: &[i32]) -> Vec<i32> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let all = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
    if all > 1 {
        vec![1, all]
    } else {
        vec![1]
    }
}

fn bench_loss(args: &BenchArgs) -> Result<()> {
    SmoothAp::new(args.mode, args.tau)?;
    let setup = Setup {
        per_identity: args.per_identity,
        dim: args.dim,
        mode: args.mode,
        tau: args.tau,
    };
    if let Some(form) = args.child {
        let threads = args.threads.first().copied().unwrap_or(1);
        let measurement = bench::measure(form, &setup, args.batches[0], threads)?;
        println!("{}", serde_json::to_string(&measurement)?);
        return Ok(());
    }
    if let Some(b) = args
        .batches
        .iter()
        .find(|&&b| b < 1 || b % args.per_identity != 0)
    {
        anyhow::bail!(
            "--batches: {b} is not a positive multiple of --per-identity {}",
            args.per_identity
        );
    }
    let threads = thread_counts(&args.threads);
    let exe = std::env::current_exe().context("finding this binary to run the children")?;
    let child = |form: Form, batch: i64, threads: i32| {
        let mut command = std::process::Command::new(&exe);
        command.args([
            "bench-loss",
            "--child",
            form.name(),
            "--mode",
            args.mode.name(),
        ]);
        for (flag, value) in [
            ("--batches", batch.to_string()),
            ("--threads", threads.to_string()),
            ("--per-identity", args.per_identity.to_string()),
            ("--dim", args.dim.to_string()),
            ("--tau", args.tau.to_string()),
        ] {
            command.args([flag, &value]);
        }
        command
    };
    let limit = (args.authors_limit_gb * 1e9) as u64;
    let rows = bench::run(&args.batches, &threads, limit, child, |row| {
        eprintln!(
            "bench-loss: B={} threads={} {}: {:?}",
            row.batch, row.threads, row.form, row.outcome
        );
    })?;
    if args.json {
        let report =
            serde_json::json!({ "setup": setup, "machine": bench::machine(), "rows": rows });
        println!("{report}");
    } else {
        print!("{}", bench::markdown(&setup, &rows));
    }
    Ok(())
}

#[derive(Args)]
struct BenchStepArgs {
    /// Backbones, comma-separated: `mobilefacenet`, `mbf`, `iresnet50`
    #[arg(long, value_name = "ARCH,...", value_delimiter = ',', value_parser = Arch::from_str,
          default_values_t = Arch::ALL)]
    arch: Vec<Arch>,
    /// Batch sizes, comma-separated; each a multiple of 4 (faces per person)
    #[arg(long, value_name = "B,...", value_delimiter = ',', default_values_t = [64, 224])]
    batches: Vec<i64>,
    /// libtorch CPU thread counts, comma-separated [default: 1 and every hardware thread]
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(1..))]
    threads: Vec<i32>,
    /// Devices, comma-separated: `cpu`, `cuda`
    #[arg(long, value_name = "DEVICE,...", value_delimiter = ',', value_parser = DeviceName::from_str,
          default_values_t = [DeviceName::Cpu])]
    device: Vec<DeviceName>,
    /// Precisions, comma-separated: `f32`, `bf16`, `f16` (f16 on cuda only)
    #[arg(long, value_name = "P,...", value_delimiter = ',', value_parser = Precision::from_str,
          default_values_t = [Precision::F32])]
    precision: Vec<Precision>,
    /// Steps timed after the warm-up step, at most
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    steps: u32,
    /// No new step is timed after this many seconds in a configuration (one is, at least)
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    max_seconds: f64,
    /// The Python with torch (2.13, the trainer's libtorch) and safetensors that runs the peer
    /// [default: $SMOOTHFACE_TORCH_PYTHON, else .venv-torch/bin/python when it exists here, else
    /// python3]
    #[arg(long, value_name = "PYTHON")]
    python: Option<PathBuf>,
    /// Measure this trainer only
    #[arg(long)]
    no_peer: bool,
    /// Also measure the data loader alone on this folder of aligned crops (a folder per person)
    #[arg(long, value_name = "DIR")]
    faces: Option<PathBuf>,
    /// Loader thread counts for --faces, comma-separated
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1, 2])]
    loader_workers: Vec<usize>,
    /// Print the configurations and measurements as JSON instead of markdown tables
    #[arg(long)]
    json: bool,
    /// Data-parallel: time 1 process of N threads against N processes of 1 thread (c10d on
    /// loopback) at each global batch, and the collectives' share of the step
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    world_size: Option<u32>,
    /// Measure one configuration (the first value of each list) in this process on the weights
    /// and batch in DIR, and print it as JSON: what the benchmark runs in each child
    #[arg(long, hide = true, value_name = "DIR")]
    child: Option<PathBuf>,
}

/// The Python that runs bench-step's PyTorch peer.
fn torch_python(flag: Option<&PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("SMOOTHFACE_TORCH_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(".venv-torch/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

fn bench_step(args: &BenchStepArgs) -> Result<()> {
    let timing = step::Timing {
        steps: args.steps as usize,
        budget: std::time::Duration::from_secs_f64(args.max_seconds.max(0.0)),
    };
    let threads = thread_counts(&args.threads);
    if let Some(dir) = &args.child {
        // The step as `fit` takes it, with its allocator settings.
        keep_freed_memory();
        let config = step::Config {
            arch: args.arch[0],
            batch: args.batches[0],
            threads: threads[0],
            device: args.device[0],
            precision: args.precision[0],
        };
        let m = match smoothface_trainer::dist::Launch::from_env()? {
            Some(launch) => step::measure_rank(dir, &config, &timing, &launch)?,
            None => step::measure(dir, &config, &timing)?,
        };
        println!("{}", serde_json::to_string(&m)?);
        return Ok(());
    }
    if let Some(b) = args
        .batches
        .iter()
        .find(|&&b| b < 2 * step::PER_CLASS || b % step::PER_CLASS != 0)
    {
        anyhow::bail!(
            "--batches: {b} is not a multiple of {0} holding two people",
            step::PER_CLASS
        );
    }
    let exe = std::env::current_exe().context("finding this binary to run the children")?;
    if let Some(world) = args.world_size {
        let mut configs = Vec::new();
        for &arch in &args.arch {
            for &batch in &args.batches {
                configs.push(step::Config {
                    arch,
                    batch,
                    threads: 1,
                    device: args.device[0],
                    precision: args.precision[0],
                });
            }
        }
        let rows = step::world_rows(&exe, &configs, &timing, world as usize)?;
        if args.json {
            let report = serde_json::json!({ "machine": bench::machine(), "world": rows });
            println!("{report}");
        } else {
            print!("{}", step::world_markdown(&rows, &timing));
        }
        return Ok(());
    }
    let python = torch_python(args.python.as_ref());
    let mut rows = Vec::new();
    for &arch in &args.arch {
        for &batch in &args.batches {
            let dir = tempfile::tempdir().context("creating a folder for the weights and batch")?;
            step::prepare(dir.path(), arch, batch)?;
            for &device in &args.device {
                for &precision in &args.precision {
                    for &threads in &threads {
                        let config = step::Config {
                            arch,
                            batch,
                            threads,
                            device,
                            precision,
                        };
                        let smoothface = step::run_child(step::child_command(
                            &exe,
                            dir.path(),
                            &config,
                            &timing,
                        ));
                        let pytorch = (!args.no_peer).then(|| {
                            step::run_child(step::peer_command(
                                &python,
                                dir.path(),
                                &config,
                                &timing,
                            ))
                        });
                        let row = step::StepRow {
                            config,
                            smoothface,
                            pytorch,
                        };
                        eprintln!("bench-step: {}", serde_json::to_string(&row)?);
                        rows.push(row);
                    }
                }
            }
        }
    }
    let mut loader = Vec::new();
    if let Some(faces) = &args.faces {
        let folder =
            smoothface_trainer::data::folder::FaceFolder::open(faces, step::PER_CLASS as usize)?;
        let set = smoothface_trainer::data::loader::TrainingSet::Folder(folder);
        let device = args.device[0].resolve()?;
        // The first batch size, or as many people as the folder has when they are fewer.
        let people = set.labels().iter().max().map_or(0, |&l| l as usize + 1);
        let batch = (args.batches[0] as usize).min(people * step::PER_CLASS as usize);
        for &workers in &args.loader_workers {
            let speed = step::loader_speed(
                &set,
                batch,
                workers.max(1),
                device,
                std::time::Duration::from_secs(10),
            )?;
            eprintln!("bench-step: loader, {workers} workers, batch {batch}: {speed:.0} images/s");
            loader.push(step::LoaderRow {
                workers,
                batch,
                images_per_second: speed,
            });
        }
    }
    if args.json {
        let report =
            serde_json::json!({ "machine": bench::machine(), "rows": rows, "loader": loader });
        println!("{report}");
    } else {
        print!("{}", step::markdown(&rows, &timing));
        if let Some(faces) = &args.faces {
            let pinned = args.device[0] == DeviceName::Cuda;
            print!("\n{}", step::loader_markdown(faces, pinned, &loader));
        }
    }
    Ok(())
}

#[derive(Args)]
struct ImportArgs {
    /// The ONNX model
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// The architecture the graph is: `mobilefacenet` (MobileFaceNet with batch norm folded into
    /// its convolutions: models/mobilefacenet/fr_feature.onnx), `mbf` (insightface's wider
    /// MobileFaceNet, batch norm folded: models/w600k_mbf/w600k_mbf.onnx) or `iresnet50`
    /// (insightface arcface_torch's IResNet-50, with real batch norm)
    #[arg(long, value_name = "ARCH", value_parser = Arch::from_str)]
    arch: Arch,
    /// Where to write the checkpoint; the name must end in .safetensors. Written under a
    /// temporary name and renamed, so it is complete or absent
    #[arg(long, value_name = "CKPT.safetensors")]
    out: PathBuf,
}

fn import(args: &ImportArgs) -> Result<()> {
    let imported = smoothface_trainer::import::import(&args.model, args.arch, &args.out)?;
    let report = serde_json::json!({
        "checkpoint": args.out,
        "arch": args.arch.name(),
        "layers": imported.layers,
        "folded_batch_norms": imported.folded_batch_norms,
        "batch_norms_folded_into_linear": imported.batch_norms_folded_into_linear,
    });
    println!("{report}");
    Ok(())
}

#[derive(Args)]
struct FitArgs {
    /// The training configuration (TOML); relative paths in it are relative to its folder
    #[arg(long, value_name = "TRAIN.toml")]
    config: PathBuf,
    /// The run folder [default: runs/<name of the configuration file>]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue the run in the folder from its last completed epoch
    #[arg(long)]
    resume: bool,
    /// No progress bar
    #[arg(long, short)]
    quiet: bool,
}

/// Makes glibc's malloc serve every allocation from its heap and never give freed memory back
/// to the system. A training step allocates activations of hundreds of MB (224 faces x 64
/// channels x 56 x 56 floats is 180 MB); glibc maps each such block fresh and unmaps it when
/// freed, so every step faulted in tens of GB of zeroed pages again: with batch 224 on
/// MobileFaceNet, 60% of the time went to the kernel. Reusing the heap made training 2.2x
/// faster on this machine (8.4 -> 18.9 images/s), at the cost of keeping the peak allocated.
/// The trim threshold is -1 (never trim), not the largest `int`: a step frees more than 2 GB at
/// once at batch 224, and a 2 GB threshold still gave it back to the kernel every step (17% of
/// a step's time zeroing pages again, measured with `bench-step`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any worker thread
    // exists. Failures (return 0) leave the defaults, which are only slower. glibc reads the
    // threshold as a size_t: -1 is "never".
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn fit(args: &FitArgs) -> Result<()> {
    keep_freed_memory();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("{}: cannot read the configuration", args.config.display()))?;
    let config = TrainConfig::load(&args.config)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args.config.file_stem().unwrap_or_default();
        PathBuf::from("runs").join(stem)
    });
    let options = FitOptions {
        out,
        resume: args.resume,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        // Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): data-parallel.
        launch: smoothface_trainer::dist::Launch::from_env()?,
    };
    smoothface_trainer::fit::fit(&config, &text, &options, |record| {
        println!(
            "{}",
            serde_json::to_string(record).expect("records serialise")
        );
    })?;
    Ok(())
}

#[derive(Args)]
struct ExportArgs {
    /// The checkpoint (.safetensors from fit or import); its architecture is read from it
    #[arg(value_name = "CKPT")]
    checkpoint: PathBuf,
    /// The model folder to create; it must not exist yet
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The model's name in the manifest (shown by `smoothface stats`)
    /// [default: <arch>-<start of the checkpoint's sha256>]
    #[arg(long)]
    name: Option<String>,
}

fn export(args: &ExportArgs) -> Result<()> {
    let exported =
        smoothface_trainer::export::export(&args.checkpoint, &args.out, args.name.as_deref())?;
    println!("{}", serde_json::to_string(&exported)?);
    Ok(())
}

#[derive(Args)]
struct QuantizeArgs {
    /// The float model folder (model.onnx + manifest.json, from export)
    #[arg(value_name = "DIR")]
    model: PathBuf,
    /// Aligned face crops to measure activation ranges on (a folder per person, or any tree)
    #[arg(long, value_name = "FACES")]
    calibration: PathBuf,
    /// The int8 model folder to create; it must not exist yet
    #[arg(long, value_name = "DIR8")]
    out: PathBuf,
    /// Calibration faces to use, spread over the folder (rounded down to a multiple of 16)
    #[arg(long, value_name = "N", default_value_t = 256)]
    images: usize,
    /// Faces to compare float and int8 embeddings on, up to 1,024 [default: the calibration faces]
    #[arg(long, value_name = "FACES")]
    check: Option<PathBuf>,
    /// Quantized operators: `qdq` (QuantizeLinear/DequantizeLinear pairs around float
    /// convolutions) or `qlinear` (QLinearConv integer convolutions)
    #[arg(long, value_name = "FORMAT", value_parser = Format::from_str, default_value_t = Format::Qdq)]
    format: Format,
    /// Keep the first convolution in float
    #[arg(long)]
    first_float: bool,
    /// Keep the last convolution in float
    #[arg(long)]
    last_float: bool,
}

fn quantize(args: &QuantizeArgs) -> Result<()> {
    let options = QuantizeOptions {
        format: args.format,
        first_float: args.first_float,
        last_float: args.last_float,
    };
    let report = smoothface_trainer::export::quantize::quantize(
        &args.model,
        &args.calibration,
        args.check.as_deref(),
        &args.out,
        args.images,
        &options,
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Loss(args) => loss(args),
        Command::BenchLoss(args) => bench_loss(args),
        Command::BenchStep(args) => bench_step(args),
        Command::Import(args) => import(args),
        Command::Fit(args) => fit(args),
        Command::Export(args) => export(args),
        Command::Quantize(args) => quantize(args),
        Command::Eval(EvalCommand::Ijbc(args)) => eval_ijbc(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smoothface-train: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
