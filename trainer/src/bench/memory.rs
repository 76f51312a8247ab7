//! This process's memory, from `/proc/self` (Linux): resident size now, its peak, and a reset of
//! the peak so that a measurement excludes what start-up touched.

use anyhow::{Context, Result};

/// A `Vm…:  <n> kB` line of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no {field} in /proc/self/status"))
}

/// Resident set size now (`VmRSS`).
pub fn resident_bytes() -> Result<u64> {
    status_bytes("VmRSS")
}

/// The largest resident set size since start or since the last [`reset_peak`] (`VmHWM`).
pub fn peak_bytes() -> Result<u64> {
    status_bytes("VmHWM")
}

/// Lowers the recorded peak to the current resident size (`5` into `/proc/self/clear_refs`,
/// Linux 4.0 and later).
pub fn reset_peak() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
        .context("resetting the peak through /proc/self/clear_refs")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only consistency here: other tests allocate in parallel threads of this process. The
    /// measurement itself is tested in a child process of its own (tests/bench_cli.rs).
    #[test]
    fn reads_and_resets() {
        reset_peak().unwrap();
        let (resident, peak) = (resident_bytes().unwrap(), peak_bytes().unwrap());
        assert!(resident > 1 << 20 && peak > 1 << 20);
    }
}
