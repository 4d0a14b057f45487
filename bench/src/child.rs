//! Child processes: the orchestrator's handle on a child ([`Child`]), and the two hidden child
//! roles (`server`, `client`) with their line protocol.
//!
//! Protocol, one line each on stdout / stdin:
//! * server child prints `READY <addr>`; then reads commands: `COUNT` (answers `COUNT <n>`,
//!   the open WebSocket connections), `DISPOSE` (answers `DISPOSED <ms>` and exits), `EXIT`
//!   or end of input (exits at once).
//! * client child prints workload-specific progress lines and finally `RESULT <json>`; it
//!   exits on `EXIT`, and with an error when its stdin closes without one. Any other line is a
//!   command its workload may wait for ([`wait_command`], e.g. w6's `GO`).
//!
//! Every wait has a deadline, and a [`Child`] kills and reaps its process when dropped, so an
//! error anywhere in the orchestrator leaves no orphan behind; a server child also exits when
//! its stdin closes, which covers an orchestrator that is killed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::peers::RunningServer;
use crate::workloads::{self, Sample};

/// A running child process, seen from the orchestrator.
pub struct Child {
    name: String,
    proc: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Child {
    /// Starts `exe args…` with piped stdin/stdout; stderr goes to ours so child errors show.
    pub fn spawn(exe: &Path, name: String, args: &[&str]) -> Result<Child> {
        let mut proc = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", exe.display()))?;
        let stdout = proc.stdout.take().context("child stdout")?;
        let stdin = proc.stdin.take();
        let (tx, lines) = mpsc::channel();
        // Ends by itself when the child's stdout closes (exit or kill).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Child {
            name,
            proc,
            stdin,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits up to `timeout` for the next line; it must start with `word`. Returns the rest.
    pub fn expect(&mut self, word: &str, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                let rest = line
                    .strip_prefix(word)
                    .ok_or_else(|| anyhow!("{}: expected `{word} …`, got `{line}`", self.name))?;
                Ok(rest.trim().to_string())
            }
            Err(RecvTimeoutError::Timeout) => bail!(
                "{}: no `{word}` within {:.0} s (hung?)",
                self.name,
                timeout.as_secs_f64()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.wait_bounded(Duration::from_secs(5));
                bail!(
                    "{}: closed its output before `{word}` ({})",
                    self.name,
                    status.map_or("still running".into(), |s| s.to_string())
                )
            }
        }
    }

    /// The exit status, polling up to `timeout`; `None` if the child is still running.
    fn wait_bounded(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.proc.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return None,
            }
        }
    }

    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{}: cannot send `{line}`", self.name))
    }

    /// Closes stdin (which tells a child to exit) and waits up to `timeout` for a clean exit.
    pub fn finish(mut self, timeout: Duration) -> Result<()> {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "EXIT");
        }
        match self.wait_bounded(timeout) {
            Some(status) if status.success() => Ok(()),
            Some(status) => bail!("{}: {status}", self.name),
            None => bail!(
                "{}: did not exit within {:.0} s",
                self.name,
                timeout.as_secs_f64()
            ),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.proc.try_wait() {
            let _ = self.proc.kill();
        }
        let _ = self.proc.wait();
    }
}

/// Prints one protocol line to stdout, flushed (the orchestrator waits for it).
pub fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The client child's commands from the orchestrator other than `EXIT`, in order.
static COMMANDS: OnceLock<Mutex<Receiver<String>>> = OnceLock::new();

/// Watches a client child's stdin: `EXIT` ends the process cleanly, end of input (the
/// orchestrator is gone) ends it with status 1, so no client outlives its orchestrator. Other
/// lines go to [`wait_command`].
fn watch_orchestrator() {
    let (tx, rx) = mpsc::channel();
    let _ = COMMANDS.set(Mutex::new(rx));
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "EXIT" => std::process::exit(0),
                Ok(l) => {
                    let _ = tx.send(l.trim().to_string());
                }
                Err(_) => break,
            }
        }
        std::process::exit(1)
    });
}

/// In a client child: waits up to `timeout` for the orchestrator's next command, which must
/// start with `word`. Returns the rest of the line.
pub fn wait_command(word: &str, timeout: Duration) -> Result<String> {
    let commands = COMMANDS.get().context("no orchestrator to wait for")?;
    let commands = commands.lock().unwrap_or_else(PoisonError::into_inner);
    match commands.recv_timeout(timeout) {
        Ok(line) => match line.strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_string()),
            None => bail!("expected the command `{word} …`, got `{line}`"),
        },
        Err(_) => bail!(
            "no `{word}` from the orchestrator within {:.0} s",
            timeout.as_secs_f64()
        ),
    }
}

/// For clients that hold their connections until the orchestrator says `EXIT`.
pub fn hold_until_exit() -> ! {
    loop {
        std::thread::park();
    }
}

/// `rxplus-bench server WORKLOAD VARIANT PARAMS_JSON`
pub fn server_main(args: &[String]) -> Result<()> {
    let [workload, variant, params] = args else {
        bail!("usage: rxplus-bench server WORKLOAD VARIANT PARAMS_JSON");
    };
    let params: Value = serde_json::from_str(params).context("server: params")?;
    let server = workloads::find(workload)?
        .server(variant, &params)
        .with_context(|| format!("{workload} {variant} server"))?;
    serve(server)
}

fn serve(server: Box<dyn RunningServer>) -> Result<()> {
    announce(&format!("READY {}", server.addr()));
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("COUNT") => announce(&format!("COUNT {}", server.connections())),
            Ok("DISPOSE") => {
                let t = Instant::now();
                server.dispose();
                let ms = t.elapsed().as_secs_f64() * 1e3;
                announce(&format!("DISPOSED {ms}"));
                return Ok(());
            }
            Ok("EXIT") | Err(_) => break,
            Ok(other) => bail!("server: unknown command `{other}`"),
        }
    }
    // Not disposing here: nothing is measured any more and the process exit closes everything.
    std::process::exit(0)
}

/// `rxplus-bench client WORKLOAD VARIANT ADDR PARAMS_JSON`
pub fn client_main(args: &[String]) -> Result<()> {
    let [workload, variant, addr, params] = args else {
        bail!("usage: rxplus-bench client WORKLOAD VARIANT ADDR PARAMS_JSON");
    };
    let params: Value = serde_json::from_str(params).context("client: params")?;
    let addr = addr
        .parse()
        .with_context(|| format!("client: address {addr}"))?;
    watch_orchestrator();
    let sample: Sample = workloads::find(workload)?
        .client(variant, addr, &params)
        .with_context(|| format!("{workload} {variant} client"))?;
    announce(&format!("RESULT {}", serde_json::to_string(&sample)?));
    Ok(())
}
