//! The example command lines driven as a user would (`tests/tls_cli.rs`,
//! `tests/control_cli.rs`): a running `echo_server` and the port it printed, a running `wscat`
//! with its stdin, stdout and stderr, and a command run to its exit.

use std::io::Write;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{example, Lines, Proc};

/// How long a step may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `echo_server` and the port it printed.
pub struct EchoServer {
    pub proc: Proc,
    pub port: u16,
}

/// Starts `echo_server` with `args` and waits for `listening on ADDR`.
pub fn echo_server(args: &[&str]) -> EchoServer {
    let mut proc = Proc::spawn(
        "echo_server",
        Command::new(example("echo_server"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = proc.stdout_lines();
    let err = proc.stderr_lines();
    let addr = out
        .find(Duration::from_secs(20), |l| {
            l.strip_prefix("listening on ").map(str::to_owned)
        })
        .unwrap_or_else(|| {
            panic!(
                "echo_server {args:?} did not print `listening on ADDR`; stdout: {:?}; stderr: \
                 {:?}; status {:?}",
                out.seen(),
                err.seen(),
                proc.try_status()
            )
        });
    assert_eq!(
        out.seen(),
        format!("listening on {addr}"),
        "exactly one line"
    );
    let port = addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"));
    EchoServer { proc, port }
}

/// A running `wscat` with its stdin, stdout and stderr.
pub struct Wscat {
    pub proc: Proc,
    pub stdin: Option<ChildStdin>,
    pub out: Lines,
    pub err: Lines,
}

impl Wscat {
    pub fn start(args: &[&str]) -> Wscat {
        let mut proc = Proc::spawn_with_stdin(
            "wscat",
            Command::new(example("wscat"))
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        Wscat {
            stdin: Some(proc.stdin()),
            out: proc.stdout_lines(),
            err: proc.stderr_lines(),
            proc,
        }
    }

    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to wscat");
        stdin.flush().expect("flush wscat stdin");
    }

    /// Closes stdin (EOF) and returns the exit status.
    pub fn finish(mut self) -> ExitStatus {
        self.stdin.take();
        self.proc
            .wait_timeout(WAIT)
            .unwrap_or_else(|| panic!("wscat did not exit after EOF; stderr: {}", self.err.seen()))
    }

    /// Types `line` and expects it back on stdout.
    pub fn echoes(&mut self, line: &str) {
        self.say(line);
        let got = self.out.next(WAIT);
        assert_eq!(
            got.as_deref(),
            Some(line),
            "no echo; wscat stderr: {}",
            self.err.seen()
        );
    }

    /// Waits up to `WAIT` for wscat to exit by itself.
    pub fn exits(&mut self) -> ExitStatus {
        self.proc.wait_timeout(WAIT).unwrap_or_else(|| {
            panic!(
                "wscat kept running; stdout: {}; stderr: {}",
                self.out.seen(),
                self.err.seen()
            )
        })
    }

    /// The first stderr line (from now) starting with `prefix`, within `WAIT`.
    pub fn err_line(&mut self, prefix: &str) -> String {
        self.err
            .find(WAIT, |l| l.starts_with(prefix).then(|| l.to_owned()))
            .unwrap_or_else(|| {
                panic!(
                    "no stderr line starting with {prefix:?}; stderr: {}; status {:?}",
                    self.err.seen(),
                    self.proc.try_status()
                )
            })
    }
}

/// Runs `name` with `args` (stdin null) to its exit: the status, stdout and stderr text.
pub fn run_to_exit(name: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut proc = Proc::spawn(
        name,
        Command::new(example(name))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let out = proc.stdout_lines();
    let err = proc.stderr_lines();
    let status = proc
        .wait_timeout(WAIT)
        .unwrap_or_else(|| panic!("{name} {args:?} did not exit; stderr: {}", err.seen()));
    // Drain the pipes to their end (the readers stop at EOF).
    while err.next(Duration::from_secs(2)).is_some() {}
    while out.next(Duration::from_secs(2)).is_some() {}
    (status, out.seen(), err.seen())
}
