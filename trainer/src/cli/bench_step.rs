//! Time a whole training step: `smoothface-train bench-step`.

use anyhow::{Context, Result};
use smoothface_trainer::backbone::Arch;
use smoothface_trainer::bench::step::{self, DeviceName};
use smoothface_trainer::bench::{self};
use smoothface_trainer::precision::Precision;
use std::path::PathBuf;
use std::str::FromStr;

/// Its arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Backbones, comma-separated: `mobilefacenet`, `mbf`, `iresnet50`
    #[arg(long, value_name = "ARCH,...", value_delimiter = ',', value_parser = Arch::from_str,
          default_values_t = Arch::ALL)]
    pub arch: Vec<Arch>,
    /// Batch sizes, comma-separated; each a multiple of 4 (faces per person)
    #[arg(long, value_name = "B,...", value_delimiter = ',', default_values_t = [64, 224])]
    pub batches: Vec<i64>,
    /// libtorch CPU thread counts, comma-separated [default: 1 and every hardware thread]
    #[arg(long, value_name = "N,...", value_delimiter = ',', value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Vec<i32>,
    /// Devices, comma-separated: `cpu`, `cuda`
    #[arg(long, value_name = "DEVICE,...", value_delimiter = ',', value_parser = DeviceName::from_str,
          default_values_t = [DeviceName::Cpu])]
    pub device: Vec<DeviceName>,
    /// Precisions, comma-separated: `f32`, `bf16`, `f16` (f16 on cuda only)
    #[arg(long, value_name = "P,...", value_delimiter = ',', value_parser = Precision::from_str,
          default_values_t = [Precision::F32])]
    pub precision: Vec<Precision>,
    /// Steps timed after the warm-up step, at most
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// No new step is timed after this many seconds in a configuration (one is, at least)
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    pub max_seconds: f64,
    /// The Python with torch (2.13, the trainer's libtorch) and safetensors that runs the peer
    /// [default: $SMOOTHFACE_TORCH_PYTHON, else .venv-torch/bin/python when it exists here, else
    /// python3]
    #[arg(long, value_name = "PYTHON")]
    pub python: Option<PathBuf>,
    /// Measure this trainer only
    #[arg(long)]
    pub no_peer: bool,
    /// Also measure the data loader alone on this folder of aligned crops (a folder per person)
    #[arg(long, value_name = "DIR")]
    pub faces: Option<PathBuf>,
    /// Loader thread counts for --faces, comma-separated
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1, 2])]
    pub loader_workers: Vec<usize>,
    /// Print the configurations and measurements as JSON instead of markdown tables
    #[arg(long)]
    pub json: bool,
    /// Data-parallel: time 1 process of N threads against N processes of 1 thread (c10d on
    /// loopback) at each global batch, and the collectives' share of the step
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub world_size: Option<u32>,
    /// Measure one configuration (the first value of each list) in this process on the weights
    /// and batch in DIR, and print it as JSON: what the benchmark runs in each child
    #[arg(long, hide = true, value_name = "DIR")]
    pub child: Option<PathBuf>,
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

/// Runs the command.
pub fn run(args: &Args) -> Result<()> {
    let timing = step::Timing {
        steps: args.steps as usize,
        budget: std::time::Duration::from_secs_f64(args.max_seconds.max(0.0)),
    };
    let threads = super::thread_counts(&args.threads);
    if let Some(dir) = &args.child {
        // The step as `fit` takes it, with its allocator settings.
        super::keep_freed_memory();
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
