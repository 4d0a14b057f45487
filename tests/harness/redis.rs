//! A `redis-server` of the test's own, on a free port: started, checked with `PING`, stopped
//! (and restarted on the same port) or frozen by the test, killed on drop. Never assumed to be running;
//! when `redis-server` is not on PATH the test fails and says how to install it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Proc;

/// A running (or stopped, to be restarted) `redis-server`.
pub struct RedisServer {
    port: u16,
    proc: Option<Proc>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port, without persistence, and waits until it
    /// answers `PING`.
    pub fn start() -> RedisServer {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "redis-server is not on PATH: these tests start their own Redis. Install it (Debian: \
             `apt-get install -y redis-server`; .ci/run does this)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = RedisServer { port, proc: None };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: nothing is flushed, connections break) and reaps it.
    pub fn stop(&mut self) {
        self.proc = None;
    }

    /// Freezes the server (SIGSTOP): its connections stay open and nothing is answered, as
    /// with a hung Redis. [`resume`](Self::resume) thaws it.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a server frozen by [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.proc.as_ref().expect("redis-server running").pid();
        let sent = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill {sig} {pid} failed");
    }

    /// Starts the server again on the same port and waits until it answers `PING`.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let proc = Proc::spawn(
            "redis-server",
            Command::new("redis-server")
                .args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.proc = Some(proc);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}
