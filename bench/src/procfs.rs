//! What Linux tells about a process and about the machine.

use anyhow::{Context, Result};

/// Memory and threads of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct ProcStatus {
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub threads: u64,
}

pub fn status(pid: u32) -> Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:")?,
        peak_rss_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

/// Open descriptors of a process: the entries of `/proc/<pid>/fd`.
pub fn fd_count(pid: u32) -> Result<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("read /proc/{pid}/fd"))?;
    Ok(dir.count() as u64)
}

/// Makes sure this process may open `want` descriptors: raises the soft RLIMIT_NOFILE, and the
/// hard one too when it is lower (allowed with CAP_SYS_RESOURCE, e.g. as root). `main` has
/// already raised the soft limit to the hard one; this is for workloads that need more.
pub fn ensure_nofile(want: u64) -> Result<()> {
    use rlimit::Resource;
    let (soft, hard) = Resource::NOFILE.get().context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= want {
        return Ok(());
    }
    Resource::NOFILE.set(want, hard.max(want)).with_context(|| {
        format!(
            "RLIMIT_NOFILE is {soft} (hard {hard}) and {want} are needed; \
             raising the hard limit needs CAP_SYS_RESOURCE"
        )
    })
}

/// One line per fact: CPU, cores, memory, kernel, rustc.
pub fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
    let kernel = match (
        read("/proc/sys/kernel/ostype"),
        read("/proc/sys/kernel/osrelease"),
    ) {
        (Ok(os), Ok(rel)) => format!("{os} {rel}"),
        _ => "unknown".into(),
    };
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown (rustc not on PATH)".into(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    vec![
        ("CPU", model),
        ("cores", cores.to_string()),
        ("memory", mem),
        ("kernel", kernel),
        ("rustc", rustc),
    ]
}
