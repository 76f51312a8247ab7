//! Data-parallel training's communication: c10d, PyTorch's own distributed engine, from Rust.
//!
//! tch binds neither c10d nor DistributedDataParallel, but the libtorch it links ships them. A
//! small C++ shim (`csrc/dist.cpp`, compiled by build.rs) makes a TCPStore rendezvous and a
//! process group (Gloo on the CPU; NCCL with the `cuda` feature) and runs c10d's collectives on
//! tch tensors; [`ProcessGroup`] is its safe face. No collective algorithm is ours.
//!
//! [`Launch::from_env`] reads what torchrun (or any launcher) sets: `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`. Every C++ exception (a rank that is gone, a store
//! that cannot be reached within the timeout) comes back as an error naming the operation.

use anyhow::{bail, ensure, Context, Result};
use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

extern "C" {
    fn sf_dist_free_error(error: *mut c_char);
    #[allow(clippy::too_many_arguments)]
    fn sf_dist_new(
        addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        serve: c_int,
        prefix: *const c_char,
        timeout_ms: i64,
        nccl: c_int,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn sf_dist_free(group: *mut c_void);
    fn sf_dist_all_reduce_sum(group: *mut c_void, ts: *const *mut c_void, n: c_int) -> *mut c_char;
    fn sf_dist_all_gather(
        group: *mut c_void,
        input: *mut c_void,
        outputs: *const *mut c_void,
        n: c_int,
    ) -> *mut c_char;
    fn sf_dist_broadcast(
        group: *mut c_void,
        ts: *const *mut c_void,
        n: c_int,
        root: c_int,
    ) -> *mut c_char;
    fn sf_dist_barrier(group: *mut c_void) -> *mut c_char;
    #[allow(clippy::too_many_arguments)]
    fn sf_dist_sync_batch_norm(
        group: *mut c_void,
        input: *mut c_void,
        weight: *mut c_void,
        bias: *mut c_void,
        running_mean: *mut c_void,
        running_var: *mut c_void,
        momentum: f64,
        eps: f64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
}

/// The shim's answer: Ok, or its message as an error about `what`.
fn check(error: *mut c_char, what: &str) -> Result<()> {
    if error.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null answer is a NUL-terminated string malloc'd by the shim, freed once here.
    let text = unsafe { CStr::from_ptr(error) }
        .to_string_lossy()
        .trim()
        .to_string();
    unsafe { sf_dist_free_error(error) };
    bail!("{what}: {text}")
}

/// How long a collective or the rendezvous may wait for the other ranks before failing, unless
/// SMOOTHFACE_DIST_TIMEOUT (seconds) says otherwise: long enough for rank 0 to validate an
/// epoch while the others wait for its next step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where this process stands in a distributed run, as its launcher said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// This process's rank, 0 to `world - 1`.
    pub rank: usize,
    /// Number of processes.
    pub world: usize,
    /// Rank on this host: the GPU it uses where there are GPUs.
    pub local_rank: usize,
    /// The host that serves the store (rank 0's, or torchrun's agent).
    pub master_addr: String,
    /// Its port.
    pub master_port: u16,
    /// Whether this process serves the store (rank 0, unless torchrun's agent already does).
    pub serve: bool,
    /// The prefix of this run's keys in the store (distinct per torchrun restart).
    pub prefix: String,
    /// How long to wait for the others.
    pub timeout: Duration,
}

impl Launch {
    /// The launch the environment describes, or None when it names no distributed run
    /// (neither `WORLD_SIZE` nor `RANK` set): then training is today's single process.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the variables from `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let (Some(world), rank) = (var("WORLD_SIZE"), var("RANK")) else {
            ensure!(
                var("RANK").is_none(),
                "RANK is set but WORLD_SIZE is not: set both (torchrun does), or neither for one \
                 process"
            );
            return Ok(None);
        };
        let number = |name: &str, value: &str| -> Result<usize> {
            value
                .trim()
                .parse::<usize>()
                .with_context(|| format!("{name}={value:?} is not a non-negative integer"))
        };
        let world = number("WORLD_SIZE", &world)?;
        ensure!(world >= 1, "WORLD_SIZE=0: a run needs at least one process");
        let rank = match rank {
            Some(r) => number("RANK", &r)?,
            None => bail!("WORLD_SIZE is set but RANK is not: set both (torchrun does)"),
        };
        ensure!(rank < world, "RANK={rank} is not below WORLD_SIZE={world}");
        let local_rank = match var("LOCAL_RANK") {
            Some(l) => number("LOCAL_RANK", &l)?,
            None => rank,
        };
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".to_string());
        ensure!(
            !master_addr.is_empty() && !master_addr.contains('\0'),
            "MASTER_ADDR is empty"
        );
        let master_port = match var("MASTER_PORT") {
            Some(p) => p
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .with_context(|| format!("MASTER_PORT={p:?} is not a port number (1-65535)"))?,
            None => bail!("MASTER_PORT is not set: the rendezvous needs rank 0's port"),
        };
        // torchrun's agent serves the store at MASTER_ADDR:MASTER_PORT itself and says so; then
        // every rank is its client, and the keys of each restart are kept apart.
        let agent = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        let attempt = var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        let timeout = match var("SMOOTHFACE_DIST_TIMEOUT") {
            Some(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .with_context(|| {
                    format!("SMOOTHFACE_DIST_TIMEOUT={s:?} is not a positive number of seconds")
                })?,
            None => DEFAULT_TIMEOUT,
        };
        Ok(Some(Launch {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            serve: rank == 0 && !agent,
            prefix: format!("smoothface/attempt_{attempt}/"),
            timeout,
        }))
    }
}

/// Which c10d backend carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors.
    Gloo,
    /// NCCL: CUDA tensors (needs the `cuda` feature).
    Nccl,
}

impl Backend {
    /// The backend for tensors on `device`, as torch.distributed picks it.
    pub fn for_device(device: Device) -> Self {
        match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }
}

/// A c10d process group: this process's membership of a distributed run.
pub struct ProcessGroup {
    group: NonNull<c_void>,
    rank: usize,
    world: usize,
    backend: Backend,
    device: Device,
    /// Wall time spent in collectives so far (waiting for the others included).
    spent: Cell<Duration>,
}

// SAFETY: c10d's process groups are used from any thread (their work runs on their own threads);
// the handle is only freed in Drop.
unsafe impl Send for ProcessGroup {}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from sf_dist_new and is freed once.
        unsafe { sf_dist_free(self.group.as_ptr()) }
    }
}

/// The raw `at::Tensor*` of each tensor, after checking that c10d can take them.
fn raw(ts: &[&Tensor], device: Option<Device>, what: &str) -> Result<Vec<*mut c_void>> {
    ts.iter()
        .enumerate()
        .map(|(i, t)| {
            ensure!(
                t.defined() && t.is_contiguous(),
                "{what}: tensor {i} is not a defined, contiguous tensor"
            );
            if let Some(d) = device {
                ensure!(
                    t.device() == d,
                    "{what}: tensor {i} is on {:?}, not {d:?}",
                    t.device()
                );
            }
            Ok(t.as_ptr() as *mut c_void)
        })
        .collect()
}

impl ProcessGroup {
    /// Joins the run `launch` describes: rendezvous at its store, then the process group over
    /// `backend`. Fails (rather than waiting for ever) when the others do not come within the
    /// launch's timeout.
    pub fn new(launch: &Launch, backend: Backend) -> Result<Self> {
        let addr = CString::new(launch.master_addr.as_str()).context("MASTER_ADDR holds NUL")?;
        let prefix = CString::new(launch.prefix.as_str()).context("the store prefix holds NUL")?;
        let mut out: *mut c_void = std::ptr::null_mut();
        let (rank, world) = (
            c_int::try_from(launch.rank).context("RANK too large")?,
            c_int::try_from(launch.world).context("WORLD_SIZE too large")?,
        );
        // SAFETY: the strings outlive the call; `out` is written with a handle or left null.
        let error = unsafe {
            sf_dist_new(
                addr.as_ptr(),
                c_int::from(launch.master_port),
                rank,
                world,
                c_int::from(launch.serve),
                prefix.as_ptr(),
                i64::try_from(launch.timeout.as_millis()).unwrap_or(i64::MAX),
                c_int::from(backend == Backend::Nccl),
                &mut out,
            )
        };
        check(
            error,
            &format!(
                "rank {} of {}: cannot join the run at {}:{} ({backend:?})",
                launch.rank, launch.world, launch.master_addr, launch.master_port
            ),
        )?;
        let group = NonNull::new(out).context("the c10d shim returned no process group")?;
        Ok(ProcessGroup {
            group,
            rank: launch.rank,
            world: launch.world,
            backend,
            device: match backend {
                Backend::Gloo => Device::Cpu,
                Backend::Nccl => Device::Cuda(launch.local_rank),
            },
            spent: Cell::new(Duration::ZERO),
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the tensors of this group's collectives live (the CPU for Gloo, this process's
    /// GPU for NCCL).
    pub fn device(&self) -> Device {
        self.device
    }

    /// Wall time this process has spent in collectives since the group was made (waiting for
    /// slower processes included).
    pub fn time_in_collectives(&self) -> Duration {
        self.spent.get()
    }

    /// Runs a collective, adding its time to [`ProcessGroup::time_in_collectives`].
    fn timed<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.spent.set(self.spent.get() + started.elapsed());
        out
    }

    fn what(&self, op: &str) -> String {
        format!("rank {} of {}: {op}", self.rank, self.world)
    }

    /// Sums each tensor over all ranks, in place (their storage is overwritten with the sum).
    /// All are queued before any is waited for, so c10d works on one while the next is queued.
    pub fn all_reduce_sum(&self, ts: &[&Tensor]) -> Result<()> {
        let what = self.what("all-reduce");
        let ptrs = raw(ts, ts.first().map(|t| t.device()), &what)?;
        let n = c_int::try_from(ptrs.len()).context("too many tensors")?;
        // SAFETY: the pointers are live at::Tensor handles, borrowed for the call.
        let error =
            self.timed(|| unsafe { sf_dist_all_reduce_sum(self.group.as_ptr(), ptrs.as_ptr(), n) });
        check(error, &what)
    }

    /// Every rank's `input` (all of one shape), concatenated along the first dimension in rank
    /// order.
    pub fn all_gather(&self, input: &Tensor) -> Result<Tensor> {
        let what = self.what("all-gather");
        let input = input.contiguous();
        let outputs: Vec<Tensor> = (0..self.world).map(|_| input.empty_like()).collect();
        let refs: Vec<&Tensor> = outputs.iter().collect();
        let ptrs = raw(&refs, Some(input.device()), &what)?;
        let inp = raw(&[&input], None, &what)?[0];
        // SAFETY: live handles borrowed for the call; the outputs have the input's shape.
        let n = c_int::try_from(ptrs.len()).context("too many ranks")?;
        let error = self
            .timed(|| unsafe { sf_dist_all_gather(self.group.as_ptr(), inp, ptrs.as_ptr(), n) });
        check(error, &what)?;
        Ok(Tensor::cat(&outputs, 0))
    }

    /// Every rank's `input` (one per rank, of any length along the first dimension, the rest of
    /// one shape), concatenated in rank order: the lengths are gathered first and the inputs
    /// padded to the longest. Also returns each rank's length.
    pub fn all_gather_uneven(&self, input: &Tensor) -> Result<(Tensor, Vec<i64>)> {
        let n = input.size().first().copied().unwrap_or(0);
        let lengths = self.all_gather(&Tensor::from_slice(&[n]).to_device(input.device()))?;
        let lengths: Vec<i64> = Vec::<i64>::try_from(lengths.to_device(Device::Cpu))
            .context("all-gather of the lengths")?;
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if lengths.iter().all(|&l| l == longest) {
            return Ok((self.all_gather(input)?, lengths));
        }
        let mut shape = input.size();
        shape[0] = longest;
        let padded = Tensor::zeros(&shape, (input.kind(), input.device()));
        if n > 0 {
            padded.narrow(0, 0, n).copy_(input);
        }
        let all = self.all_gather(&padded)?;
        let parts: Vec<Tensor> = lengths
            .iter()
            .enumerate()
            .map(|(r, &l)| all.narrow(0, r as i64 * longest, l))
            .collect();
        Ok((Tensor::cat(&parts, 0), lengths))
    }

    /// Each tensor takes rank `root`'s values, in place.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        let what = self.what("broadcast");
        ensure!(root < self.world, "{what}: no rank {root}");
        let ptrs = raw(ts, None, &what)?;
        // SAFETY: live handles borrowed for the call.
        let n = c_int::try_from(ptrs.len()).context("too many tensors")?;
        let error = self.timed(|| unsafe {
            sf_dist_broadcast(self.group.as_ptr(), ptrs.as_ptr(), n, root as c_int)
        });
        check(error, &what)
    }

    /// Waits until every rank has reached its barrier.
    pub fn barrier(&self) -> Result<()> {
        let what = self.what("barrier");
        // SAFETY: the handle is live.
        let error = self.timed(|| unsafe { sf_dist_barrier(self.group.as_ptr()) });
        check(error, &what)
    }

    /// Batch norm in training mode over the global batch, as torch.nn.SyncBatchNorm computes
    /// it: normalises `input` (`[N, C, ...]`, this rank's share) with the mean and biased
    /// variance of every rank's share together, updates the running statistics (when given)
    /// with them (the variance unbiased, by `momentum`), and records a backward pass that
    /// all-reduces the per-channel sums of `dy` and `dy * (x - mean)` so that the input's
    /// gradient is that of batch norm over the concatenated batch. The weight's and bias's
    /// gradients are this rank's share: summed over the ranks (as the trainer sums every
    /// gradient) they are the global batch's. Every rank must call it, in the same order, and
    /// run the backward pass of every call; the backward pass keeps the process group's backend
    /// alive. Ranks may hold different numbers of faces.
    pub fn sync_batch_norm(&self, input: &Tensor, bn: &BatchNormParams) -> Result<Tensor> {
        let what = self.what("sync batch norm");
        ensure!(
            input.defined() && input.dim() >= 2,
            "{what}: the input must have a batch and a channel axis, not {:?}",
            input.size()
        );
        ensure!(
            input.device() == self.device,
            "{what}: the input is on {:?}, the process group's tensors on {:?}",
            input.device(),
            self.device
        );
        let channels = input.size()[1];
        let mut ptrs = [std::ptr::null_mut::<c_void>(); 4];
        for (i, (t, name)) in [bn.weight, bn.bias, bn.running_mean, bn.running_var]
            .into_iter()
            .zip(["weight", "bias", "running mean", "running variance"])
            .enumerate()
        {
            if let Some(t) = t {
                ensure!(
                    t.defined() && t.size() == [channels] && t.device() == self.device,
                    "{what}: the {name} must be a [{channels}] tensor on {:?}, not {:?} on {:?}",
                    self.device,
                    t.size(),
                    t.device()
                );
                ptrs[i] = t.as_ptr() as *mut c_void;
            }
        }
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: live at::Tensor handles (or null) borrowed for the call; `out` is written
        // with a new at::Tensor that the returned Tensor owns.
        // Not counted in time_in_collectives: the call is mostly arithmetic.
        let error = unsafe {
            sf_dist_sync_batch_norm(
                self.group.as_ptr(),
                input.as_ptr() as *mut c_void,
                ptrs[0],
                ptrs[1],
                ptrs[2],
                ptrs[3],
                bn.momentum,
                bn.eps,
                &mut out,
            )
        };
        check(error, &what)?;
        ensure!(!out.is_null(), "{what}: the c10d shim returned no tensor");
        // SAFETY: `out` is a heap at::Tensor made for us, as tch's own wrappers return them.
        Ok(unsafe { Tensor::from_ptr(out as *mut _) })
    }

    /// Sums `ts` over all ranks through flat buckets of at most `bucket_bytes` each (fewer,
    /// larger messages than one per tensor, as DDP's reducer does): each bucket is the
    /// concatenation of consecutive tensors of one kind, summed, and copied back.
    pub fn all_reduce_sum_bucketed(&self, ts: &[&Tensor], bucket_bytes: usize) -> Result<()> {
        let mut start = 0;
        while start < ts.len() {
            let kind = ts[start].kind();
            let mut end = start;
            let mut bytes = 0;
            while end < ts.len()
                && ts[end].kind() == kind
                && (end == start || bytes + byte_size(ts[end]) <= bucket_bytes)
            {
                bytes += byte_size(ts[end]);
                end += 1;
            }
            let group = &ts[start..end];
            if group.len() == 1 && group[0].is_contiguous() {
                self.all_reduce_sum(group)?;
            } else {
                let flat = Tensor::cat(
                    &group.iter().map(|t| t.flatten(0, -1)).collect::<Vec<_>>(),
                    0,
                );
                self.all_reduce_sum(&[&flat])?;
                let mut at = 0;
                for t in group {
                    let n = t.numel() as i64;
                    let mut t = (*t).shallow_clone();
                    t.copy_(&flat.narrow(0, at, n).view_as(&t));
                    at += n;
                }
            }
            start = end;
        }
        Ok(())
    }
}

thread_local! {
    /// The process group of the [`sync_batch_norm`] region this thread is in.
    static SYNC_GROUP: Cell<Option<NonNull<ProcessGroup>>> = const { Cell::new(None) };
    /// The first error of a synchronised batch norm in that region.
    static SYNC_ERROR: RefCell<Option<anyhow::Error>> = const { RefCell::new(None) };
}

/// Runs `f` (a training forward pass) with every batch norm in training mode synchronised over
/// `group` ([`ProcessGroup::sync_batch_norm`]), on this thread. A layer cannot return an error,
/// so the first failure of a collective is kept, the batch norms after it normalise per
/// replica, and it is returned here instead of `f`'s result.
pub fn sync_batch_norm<T>(group: &ProcessGroup, f: impl FnOnce() -> T) -> Result<T> {
    /// Leaves the region, even when `f` unwinds.
    struct Restore(Option<NonNull<ProcessGroup>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SYNC_GROUP.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(SYNC_GROUP.with(|g| g.replace(Some(NonNull::from(group)))));
    SYNC_ERROR.with(|e| e.borrow_mut().take());
    let out = f();
    match SYNC_ERROR.with(|e| e.borrow_mut().take()) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A batch norm's parameters and running statistics (each `[C]`, or none) and its constants,
/// borrowed for one call: what [`ProcessGroup::sync_batch_norm`] and
/// [`batch_norm_in_sync_region`] take beside the input.
#[derive(Debug, Clone, Copy)]
pub struct BatchNormParams<'a> {
    /// The per-channel scale.
    pub weight: Option<&'a Tensor>,
    /// The per-channel shift.
    pub bias: Option<&'a Tensor>,
    /// The running mean, updated in place.
    pub running_mean: Option<&'a Tensor>,
    /// The running variance (unbiased), updated in place.
    pub running_var: Option<&'a Tensor>,
    /// The running statistics' update rate: `running = (1 - momentum) running + momentum batch`.
    pub momentum: f64,
    /// Added to the variance before its square root.
    pub eps: f64,
}

/// Inside a [`sync_batch_norm`] region (and before any of its failures): batch norm in training
/// mode over the region's global batch. None outside one, where the caller normalises per
/// replica.
pub fn batch_norm_in_sync_region(input: &Tensor, bn: &BatchNormParams) -> Option<Tensor> {
    let group = SYNC_GROUP.with(Cell::get)?;
    if SYNC_ERROR.with(|e| e.borrow().is_some()) {
        return None;
    }
    // SAFETY: the region borrows the group for as long as the pointer is set.
    let group = unsafe { group.as_ref() };
    match group.sync_batch_norm(input, bn) {
        Ok(y) => Some(y),
        Err(e) => {
            SYNC_ERROR.with(|slot| *slot.borrow_mut() = Some(e));
            None
        }
    }
}

fn byte_size(t: &Tensor) -> usize {
    t.numel()
        * match t.kind() {
            Kind::Double | Kind::Int64 => 8,
            Kind::Half | Kind::BFloat16 | Kind::Int16 => 2,
            Kind::Uint8 | Kind::Int8 | Kind::Bool => 1,
            _ => 4,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn the_launch_is_read_from_torchruns_variables() {
        assert_eq!(launch(&[]).unwrap(), None);
        let l = launch(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                l.rank,
                l.world,
                l.local_rank,
                l.master_addr.as_str(),
                l.master_port
            ),
            (3, 4, 1, "10.0.0.1", 29500)
        );
        assert!(!l.serve);
        assert_eq!(l.timeout, DEFAULT_TIMEOUT);
        let zero = launch(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "1")])
            .unwrap()
            .unwrap();
        assert!(zero.serve);
        // Under torchrun's agent store nobody serves.
        let agent = launch(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_PORT", "1"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert!(!agent.serve);
        assert_eq!(agent.prefix, "smoothface/attempt_2/");
    }

    #[test]
    fn a_bad_launch_is_a_clear_error() {
        for (vars, expected) in [
            (vec![("RANK", "0")], "WORLD_SIZE is not"),
            (vec![("WORLD_SIZE", "2")], "RANK is not"),
            (
                vec![("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "5")],
                "not below",
            ),
            (vec![("RANK", "x"), ("WORLD_SIZE", "2")], "RANK=\"x\""),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "2")],
                "MASTER_PORT is not set",
            ),
            (
                vec![("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_PORT", "99999")],
                "not a port",
            ),
            (
                vec![
                    ("RANK", "0"),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_PORT", "9"),
                    ("SMOOTHFACE_DIST_TIMEOUT", "-1"),
                ],
                "SMOOTHFACE_DIST_TIMEOUT",
            ),
        ] {
            let e = launch(&vars).unwrap_err().to_string();
            assert!(e.contains(expected), "{vars:?}: {e}");
        }
    }

    /// A world of one: every collective is the identity, through the real c10d.
    #[test]
    fn a_world_of_one_runs_every_collective() {
        let port = crate::bench::step::free_port().unwrap();
        let l = Launch {
            rank: 0,
            world: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            serve: true,
            prefix: "t/".into(),
            timeout: Duration::from_secs(20),
        };
        let pg = ProcessGroup::new(&l, Backend::Gloo).unwrap();
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        pg.all_reduce_sum(&[&a]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), [1.0, 2.0, 3.0]);
        let g = pg.all_gather(&a.view([3, 1])).unwrap();
        assert_eq!(g.size(), [3, 1]);
        pg.broadcast(&[&a], 0).unwrap();
        pg.barrier().unwrap();
        let e = pg.broadcast(&[&a], 1).unwrap_err().to_string();
        assert!(e.contains("no rank 1"), "{e}");
        let strided = Tensor::ones([4, 4], (Kind::Float, Device::Cpu)).tr();
        let e = pg.all_reduce_sum(&[&strided]).unwrap_err().to_string();
        assert!(e.contains("contiguous"), "{e}");
    }

    /// Nobody serves the store: joining fails within the timeout, with the cause.
    #[test]
    fn an_unreachable_store_fails_within_the_timeout() {
        let port = crate::bench::step::free_port().unwrap();
        let l = Launch {
            rank: 1,
            world: 2,
            local_rank: 1,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            serve: false,
            prefix: "t/".into(),
            timeout: Duration::from_secs(3),
        };
        let started = std::time::Instant::now();
        let e = ProcessGroup::new(&l, Backend::Gloo)
            .err()
            .expect("no store there");
        let e = format!("{e:#}");
        assert!(e.contains("cannot join"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(60), "{e}");
    }
}
