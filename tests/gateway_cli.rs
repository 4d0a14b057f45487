//! The `gateway_node` example's command-line contract, driven as a user would: two processes,
//! one listening, one dialing; the output lines and the stdin commands of the issue. With the
//! `cli` feature, the same scenario runs against `rxplus gateway`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use support::WAIT;

/// `cargo test` builds the examples next to the test binaries' `deps` directory.
fn example(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("examples").join(name);
    p.exists().then_some(p)
}

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let exe = example("gateway_node").expect("gateway_node example built by cargo test");
        Self::spawn(Command::new(exe).args(args))
    }

    /// `rxplus gateway ARGS` (feature `cli`).
    #[cfg(feature = "cli")]
    fn start_cli(args: &[&str]) -> Proc {
        Self::spawn(
            Command::new(env!("CARGO_BIN_EXE_rxplus"))
                .arg("gateway")
                .args(args),
        )
    }

    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line starting with `prefix` (earlier lines are kept in `seen`).
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line starting with {prefix:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Closes stdin (EOF = quit) and waits for exit 0.
    fn finish(mut self) {
        self.stdin.take();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            assert!(Instant::now() < deadline, "did not exit after EOF");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn two_nodes_on_the_command_line() {
    two_nodes(Proc::start);
}

#[cfg(feature = "cli")]
#[test]
fn two_nodes_with_rxplus_gateway() {
    two_nodes(Proc::start_cli);
}

fn two_nodes(start: fn(&[&str]) -> Proc) {
    let node_a = "0123456789abcdef0123456789abcdef";
    let mut a = start(&["--listen", "127.0.0.1:0", "--node-id", node_a]);
    let first = a.expect("listening on ");
    let parts: Vec<&str> = first.split(' ').collect();
    assert_eq!(parts.len(), 5, "{first}");
    assert_eq!(
        (parts[0], parts[1], parts[3], parts[4]),
        ("listening", "on", "node", node_a)
    );
    let addr = parts[2];
    let url = format!("ws://{addr}/");
    let mut b = start(&[
        "--listen",
        "127.0.0.1:0",
        "--connect",
        &url,
        "--overflow",
        "drop-new:100",
        "--duplicates",
        "keep-one",
        "--handshake-timeout-ms",
        "2000",
    ]);
    let b_line = b.expect("listening on ");
    let b_node = b_line.rsplit(' ').next().unwrap().to_owned();
    let dialing = b.expect("dialing ");
    let conn_b = dialing["dialing ".len()..].to_owned();
    assert_eq!(
        b.expect("connected "),
        format!("connected {conn_b} {node_a} outbound")
    );
    let a_conn = a.expect("connected ");
    let f: Vec<&str> = a_conn.split(' ').collect();
    assert_eq!(
        (f.len(), f[2], f[3]),
        (4, b_node.as_str(), "inbound"),
        "{a_conn}"
    );
    let conn_a = f[1].to_owned();

    b.say("peers");
    assert_eq!(b.expect("peers "), format!("peers 1 {conn_b}"));
    b.say(&format!("send {conn_b} hello from b"));
    assert_eq!(a.expect("frame "), format!("frame {conn_a} hello from b"));
    a.say("all to everyone");
    assert_eq!(a.expect("sent "), "sent 1");
    assert_eq!(b.expect("frame "), format!("frame {conn_b} to everyone"));
    // Bad input: an error on stderr, the node goes on.
    b.say("bogus");
    b.say("send not-an-id x");
    b.say("peers");
    assert_eq!(b.expect("peers "), format!("peers 1 {conn_b}"));

    // A quits: B's outbound link is interrupted and redials.
    a.say("quit");
    a.expect(&format!("disconnected {conn_a} "));
    a.finish();
    assert_eq!(b.expect("interrupted "), format!("interrupted {conn_b}"));
    b.say("connect ws://127.0.0.1:1/");
    let second = b.expect("dialing ");
    assert_ne!(second, dialing);
    b.finish();
}

#[test]
fn resumable_nodes_on_the_command_line_survive_a_cut() {
    let mut a = Proc::start(&["--listen", "127.0.0.1:0", "--resume"]);
    let first = a.expect("listening on ");
    let addr: std::net::SocketAddr = first.split(' ').nth(2).unwrap().parse().unwrap();
    let proxy = support::proxy::Proxy::start(addr);
    let mut b = Proc::start(&[
        "--listen",
        "127.0.0.1:0",
        "--resume",
        "--session-expiry-ms",
        "30000",
        "--connect",
        &proxy.url(),
    ]);
    let conn_b = b.expect("dialing ")["dialing ".len()..].to_owned();
    b.expect("connected ");
    let conn_a = a.expect("connected ").split(' ').nth(1).unwrap().to_owned();
    proxy.refuse(true);
    proxy.cut();
    assert_eq!(b.expect("interrupted "), format!("interrupted {conn_b}"));
    assert_eq!(a.expect("interrupted "), format!("interrupted {conn_a}"));
    // Sent while the transport is down, delivered after the resume.
    b.say(&format!("send {conn_b} while down"));
    proxy.refuse(false);
    assert_eq!(b.expect("resumed "), format!("resumed {conn_b} 1"));
    assert_eq!(a.expect("resumed "), format!("resumed {conn_a} 0"));
    assert_eq!(a.expect("frame "), format!("frame {conn_a} while down"));
    b.say(&format!("send {conn_b} after"));
    assert_eq!(a.expect("frame "), format!("frame {conn_a} after"));
    b.finish();
    a.finish();
}
