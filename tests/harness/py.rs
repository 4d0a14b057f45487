//! Python peers (`tests/interop/*.py`) in the interop virtual environment: a script whose
//! stdout is JSON lines, one event each.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{venv, Lines, Proc};

/// The interop environment's Python (`websockets` installed), created on first use.
pub fn python() -> PathBuf {
    venv("interop-venv", &["websockets==17.4"], "websockets")
        .join("bin")
        .join("python")
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
        .join(name)
}

/// A Python script whose stdout is JSON lines.
pub struct Py {
    pub proc: Proc,
    pub out: Lines,
}

/// `python -u SCRIPT ARGS`, stdout piped, stderr inherited.
fn command(name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg("-u")
        .arg(script(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

impl Py {
    pub fn start(name: &str, args: &[&str]) -> Py {
        let mut proc = Proc::spawn(name, &mut command(name, args));
        let out = proc.stdout_lines();
        Py { proc, out }
    }

    /// Like [`start`](Self::start), with stdin piped (for `client.py --mode interactive`).
    pub fn start_with_stdin(name: &str, args: &[&str]) -> (Py, std::process::ChildStdin) {
        let mut proc = Proc::spawn_with_stdin(name, &mut command(name, args));
        let stdin = proc.stdin();
        let out = proc.stdout_lines();
        (Py { proc, out }, stdin)
    }

    /// The next event named `event` (other events are skipped), within `timeout`.
    pub fn event(&mut self, event: &str, timeout: Duration) -> Value {
        let found = self.out.find(timeout, |l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .filter(|v| v["event"] == event)
        });
        match found {
            Some(v) => v,
            None => panic!(
                "no {event:?} event from the Python peer within {timeout:?}; status {:?}; \
                 stdout so far:\n{}",
                self.proc.try_status(),
                self.out.seen()
            ),
        }
    }

    /// Starts `echo_server.py` with `args` (a mode, TLS flags) and returns it with its port.
    pub fn echo_server(args: &[&str]) -> (Py, u16) {
        let mut py = Py::start("echo_server.py", args);
        let ready = py.event("listening", Duration::from_secs(30));
        let port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("bad listening event {ready}"));
        (py, port)
    }
}
