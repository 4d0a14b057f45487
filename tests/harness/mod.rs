//! Shared by `tests/conformance.rs`, `tests/interop.rs`, `tests/tls_cli.rs` and
//! `tests/control_cli.rs`: paths under `target/`, the example binaries, Python virtual
//! environments, child processes that never outlive the test, test certificates written to
//! files (`pki`), and the example command lines (`cli`).
#![allow(dead_code)]

pub mod cli;
pub mod pki;
pub mod py;
pub mod redis;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// `target/<profile>`: the test executable is `target/<profile>/deps/<name>-<hash>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("unexpected test executable path {}", exe.display()))
}

/// The target directory (`target/`, or `target/<triple>/` when cross-compiling).
pub fn target_dir() -> PathBuf {
    let p = profile_dir();
    p.parent().map(Path::to_path_buf).unwrap_or(p)
}

/// Locks a mutex even if a failed test poisoned it.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Examples the tests run. Built once per test process with the test's own profile, so a
/// `cargo test --test NAME` (which builds no examples) still runs current code.
const EXAMPLES: &[&str] = &["echo_server", "autobahn_client", "wscat"];

/// The path of example `name`, built (once per process) if the test runs under cargo.
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_examples) {
        panic!("building the examples failed: {e}");
    }
    let p = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        p.exists(),
        "example binary {} is missing; build it with `cargo build --release --examples`",
        p.display()
    );
    p
}

fn build_examples() -> Result<(), String> {
    // Outside cargo (a test binary run by hand) use the binaries that are there.
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Ok(());
    };
    let profile_dir = profile_dir();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("no profile directory")?
        .to_owned();
    let mut cmd = Command::new(cargo);
    // The variables cargo sets for this test process (the package's name, version, manifest
    // directory) are not the caller's: build scripts that watch them (ring's
    // `rerun-if-env-changed=CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...) would see a change, and
    // this build and the caller's `cargo test` would rebuild ring and everything above it
    // (about 25 s on two cores) each in turn.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                k.as_ref(),
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "OUT_DIR"
            )
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let dir = target_dir();
    // target/<triple>/<profile>: cross-compiling; the target dir is one level up.
    let triple_dir = !dir.join("CACHEDIR.TAG").exists()
        && dir
            .parent()
            .is_some_and(|p| p.join("CACHEDIR.TAG").exists());
    match (triple_dir, dir.parent(), dir.file_name()) {
        (true, Some(parent), Some(triple)) => {
            cmd.arg("--target-dir")
                .arg(parent)
                .arg("--target")
                .arg(triple);
        }
        _ => {
            cmd.arg("--target-dir").arg(&dir);
        }
    }
    for e in EXAMPLES {
        cmd.args(["--example", e]);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed ({}):\n{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A Python virtual environment under `target/<name>` with `packages` installed, created on
/// first use and reused while `bin/<ready>` exists and the interpreter its `#!` line names
/// exists (a moved target directory leaves scripts naming the old path: recreated). Fails
/// (never skips) without Python.
///
/// Creation is serialised within the process by a mutex and across processes by a lock
/// directory (`target/<name>.lock`, taken over when older than 5 minutes).
pub fn venv(name: &str, packages: &[&str], ready: &str) -> PathBuf {
    static IN_PROCESS: Mutex<()> = Mutex::new(());
    let _guard = lock(&IN_PROCESS);
    let dir = target_dir().join(name);
    let marker = dir.join("bin").join(ready);
    if usable(&marker) {
        return dir;
    }
    let lock_dir = target_dir().join(format!("{name}.lock"));
    let _lock = DirLock::take(&lock_dir, &marker);
    if usable(&marker) {
        return dir;
    }
    let python = find_python();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot remove incomplete {}: {e}", dir.display()));
    }
    let started = Instant::now();
    run_checked(
        Command::new(&python).arg("-m").arg("venv").arg(&dir),
        "creating the Python virtual environment (is the venv module installed?)",
    );
    run_checked(
        Command::new(dir.join("bin").join("python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(packages),
        "installing Python packages from PyPI with pip",
    );
    assert!(
        marker.exists(),
        "pip installed {packages:?} into {} but {} is missing",
        dir.display(),
        marker.display()
    );
    eprintln!(
        "created {} with {packages:?} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    dir
}

/// The venv's script exists and, when it is a script, its `#!` interpreter exists too.
fn usable(marker: &Path) -> bool {
    let Ok(text) = std::fs::read(marker) else {
        return false;
    };
    match text.strip_prefix(b"#!") {
        Some(rest) => {
            let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            line.split_whitespace()
                .next()
                .is_some_and(|interp| Path::new(interp).exists())
        }
        None => true,
    }
}

fn find_python() -> PathBuf {
    for p in ["python3", "python"] {
        let ok = Command::new(p)
            .args(["-c", "import sys; assert sys.version_info >= (3, 9)"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return PathBuf::from(p);
        }
    }
    panic!(
        "Python 3.9+ not found as python3 or python: the conformance and interop tests need \
         Python with venv and pip (and PyPI access on first run) to install kosoku and \
         websockets into target/"
    );
}

fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A lock directory: `create_dir` is atomic. Removed on drop.
struct DirLock(PathBuf);

impl DirLock {
    fn take(path: &Path, done: &Path) -> Option<DirLock> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return Some(DirLock(path.to_path_buf())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if done.exists() {
                        return None;
                    }
                    let stale = std::fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > Duration::from_secs(300));
                    if stale {
                        let _ = std::fs::remove_dir(path);
                        continue;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "lock {} held for 10 minutes",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("cannot create lock {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A child process killed (and reaped) when dropped, on every path out of a test.
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` (stdin null; set stdout/stderr on `cmd` as needed).
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// Like [`spawn`](Self::spawn) with stdin piped: take it with [`stdin`](Self::stdin).
    pub fn spawn_with_stdin(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_owned(),
            child,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stdin (it must have been spawned by [`spawn_with_stdin`](Self::spawn_with_stdin));
    /// dropping it closes the pipe (EOF).
    pub fn stdin(&mut self) -> std::process::ChildStdin {
        self.child
            .stdin
            .take()
            .unwrap_or_else(|| panic!("{}: stdin not piped", self.name))
    }

    /// The child's stdout as lines (it must have been spawned with `Stdio::piped()`).
    pub fn stdout_lines(&mut self) -> Lines {
        let out = self
            .child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("{}: stdout not piped", self.name));
        Lines::new(out, &format!("{}-stdout", self.name))
    }

    /// The child's stderr as lines (it must have been spawned with `Stdio::piped()`).
    pub fn stderr_lines(&mut self) -> Lines {
        let err = self
            .child
            .stderr
            .take()
            .unwrap_or_else(|| panic!("{}: stderr not piped", self.name));
        Lines::new(err, &format!("{}-stderr", self.name))
    }

    /// Waits up to `timeout` for the child to exit; None if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return None,
                Err(e) => panic!("{}: wait failed: {e}", self.name),
            }
        }
    }

    /// The child's exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Lines read from a pipe by a thread; every line is also kept for error messages.
pub struct Lines {
    rx: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn new(r: impl Read + Send + 'static, name: &str) -> Lines {
        let (tx, rx) = channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::Builder::new()
            .name(format!("read-{name}"))
            .spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    lock(&s).push(line.clone());
                    // The test may have stopped listening; keep draining the pipe anyway.
                    let _ = tx.send(line);
                }
            })
            .expect("spawn line reader");
        Lines { rx, seen }
    }

    /// The next line, or None at end of stream or after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        match self.rx.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first line (from now) for which `pick` returns Some, within `timeout`.
    pub fn find<R>(&self, timeout: Duration, mut pick: impl FnMut(&str) -> Option<R>) -> Option<R> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.next(left)?;
            if let Some(r) = pick(&line) {
                return Some(r);
            }
        }
    }

    /// Every line read so far, joined.
    pub fn seen(&self) -> String {
        lock(&self.seen).join("\n")
    }
}

/// A file to redirect a child's output to (created, truncated).
pub fn log_file(path: &Path) -> File {
    if let Some(p) = path.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
}
