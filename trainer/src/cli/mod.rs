//! The subcommands of `smoothface-train`, one module each: its arguments (the clap definitions
//! every `--help` page shows; the help text of each command is on its variant of [`Command`])
//! and its body, which calls the `smoothface_trainer` library.

pub mod bench_loss;
pub mod bench_step;
pub mod eval;
pub mod export;
pub mod fit;
pub mod import;
pub mod loss;
pub mod quantize;

use anyhow::Result;
use clap::Subcommand;

/// The subcommands, each one's help on its variant, its arguments in its module.
#[derive(Subcommand)]
pub enum Command {
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
    Loss(loss::Args),
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
    BenchLoss(bench_loss::Args),
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
    BenchStep(bench_step::Args),
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
    Import(import::Args),
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
        batch_size stays the global batch, and batch norm is per process unless [train] \
        sync_batch_norm = true (docs/training.md):\n\n  \
        torchrun --nproc-per-node 8 --no-python smoothface-train fit --config train.toml"
    )]
    Fit(fit::Args),
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
    Export(export::Args),
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
    Quantize(quantize::Args),
    /// Evaluate a checkpoint on a benchmark (IJB-B/C), as `smoothface eval` does an exported model
    #[command(subcommand)]
    Eval(EvalCommand),
}

/// The `eval` subcommands.
#[derive(Subcommand)]
pub enum EvalCommand {
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
    Ijbc(eval::Args),
}

impl Command {
    /// Runs the subcommand.
    pub fn run(&self) -> Result<()> {
        match self {
            Command::Loss(args) => loss::run(args),
            Command::BenchLoss(args) => bench_loss::run(args),
            Command::BenchStep(args) => bench_step::run(args),
            Command::Import(args) => import::run(args),
            Command::Fit(args) => fit::run(args),
            Command::Export(args) => export::run(args),
            Command::Quantize(args) => quantize::run(args),
            Command::Eval(EvalCommand::Ijbc(args)) => eval::run(args),
        }
    }
}

/// The benchmarks' thread counts: those given, else 1 and every hardware thread.
pub fn thread_counts(given: &[i32]) -> Vec<i32> {
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
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any worker thread
    // exists. Failures (return 0) leave the defaults, which are only slower. glibc reads the
    // threshold as a size_t: -1 is "never".
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory() {}
