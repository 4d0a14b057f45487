//! Protocol conformance: the Autobahn|Testsuite cases, run by the `kosoku` runner (PyPI),
//! against both roles of the library.
//!
//! * `server_role`: `kosoku -m fuzzingclient` drives `examples/echo_server` (an `RxWSServer`
//!   with the `Raw` datatype echoing to the sender).
//! * `server_role_over_tls`: the same, the echo server serving `wss://` (`--tls-cert`,
//!   `--tls-key`); kosoku dials `ws://` only, so it goes through `tests/conformance/tls_proxy.py`,
//!   a relay that opens a TLS connection per connection.
//! * `client_role`: `kosoku -m fuzzingserver` is driven by `examples/autobahn_client` (an
//!   `RxWSClient` with the `Raw` datatype echoing every message, one client per case).
//!
//! Cases 12.* and 13.* (permessage-deflate) are excluded with `-x`: the library does not
//! implement compression, so they would all be UNIMPLEMENTED. The other 301 cases must all be
//! OK, NON-STRICT or INFORMATIONAL, with a close behaviour of OK or INFORMATIONAL.
//!
//! kosoku is installed on first use into `target/kosoku-venv` (Python 3 with venv and pip
//! required; without them the tests fail, they do not skip). Reports go to
//! `target/autobahn/{server,client}/index.html`. Each role prints a one-line summary:
//! `cargo test --release --test conformance -- --nocapture`. See `docs/conformance.md`.

mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::{example, lock, log_file, target_dir, venv, Proc};
use serde_json::Value;

/// Cases left after excluding 12.* and 13.* (517 in all).
const EXPECTED_CASES: usize = 301;
const EXCLUDE: &[&str] = &["12.*", "13.*"];
/// Bound on one role's whole run (about 7 s for the server role, 12 s for the client role).
const ROLE_TIMEOUT: Duration = Duration::from_secs(75);

const BEHAVIORS: &[&str] = &[
    "OK",
    "NON-STRICT",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "FAILED",
    "ERROR",
];
const CLOSE_BEHAVIORS: &[&str] = &[
    "OK",
    "INFORMATIONAL",
    "FAILED",
    "FAILED BY CLIENT",
    "WRONG CODE",
    "UNCLEAN",
];
const BEHAVIOR_PASS: &[&str] = &["OK", "NON-STRICT", "INFORMATIONAL"];
const CLOSE_PASS: &[&str] = &["OK", "INFORMATIONAL"];

/// The two roles share two cores: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn kosoku() -> std::path::PathBuf {
    venv("kosoku-venv", &["kosoku==0.1.0"], "kosoku")
        .join("bin")
        .join("kosoku")
}

fn kosoku_cmd(mode: &str, out: &Path) -> Command {
    let mut cmd = Command::new(kosoku());
    cmd.args(["-m", mode]);
    for x in EXCLUDE {
        cmd.args(["-x", x]);
    }
    cmd.arg("-o").arg(out);
    cmd
}

/// A fresh report directory `target/autobahn/<role>`.
fn report_dir(role: &str) -> std::path::PathBuf {
    let dir = target_dir().join("autobahn").join(role);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot clear {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// One case's verdicts.
struct Case {
    behavior: String,
    close: String,
}

/// Reads `index.json` (`{agent: {case: {behavior, behaviorClose, ...}}}`): the single agent's
/// cases, keyed by case id.
fn read_index(dir: &Path, agent: Option<&str>) -> BTreeMap<String, Case> {
    let path = dir.join("index.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no report {} ({e}): see the kosoku logs", path.display()));
    let index: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let agents = index
        .as_object()
        .unwrap_or_else(|| panic!("{}: not an object", path.display()));
    let names: Vec<&String> = agents.keys().collect();
    assert_eq!(
        names.len(),
        1,
        "{}: expected one agent, got {names:?}",
        path.display()
    );
    if let Some(a) = agent {
        assert_eq!(names[0], a, "{}: agent name", path.display());
    }
    let cases = agents[names[0].as_str()]
        .as_object()
        .unwrap_or_else(|| panic!("{}: agent entry is not an object", path.display()));
    cases
        .iter()
        .map(|(id, v)| {
            let field = |k: &str| v[k].as_str().unwrap_or("<missing>").to_owned();
            (
                id.clone(),
                Case {
                    behavior: field("behavior"),
                    close: field("behaviorClose"),
                },
            )
        })
        .collect()
}

/// Sorts case ids numerically (1.1.10 after 1.1.9).
fn case_key(id: &str) -> Vec<u32> {
    id.split('.')
        .map(|p| p.parse().unwrap_or(u32::MAX))
        .collect()
}

fn counts<'a>(known: &[&'a str], values: impl Iterator<Item = &'a str>) -> String {
    let mut n: BTreeMap<&str, usize> = known.iter().map(|k| (*k, 0)).collect();
    for v in values {
        *n.entry(v).or_insert(0) += 1;
    }
    // Known verdicts in their order, then anything unexpected.
    let mut parts: Vec<String> = known.iter().map(|k| format!("{k} {}", n[k])).collect();
    parts.extend(
        n.iter()
            .filter(|(k, _)| !known.contains(k))
            .map(|(k, c)| format!("{k} {c}")),
    );
    parts.join(", ")
}

/// Prints the summary line and fails on any failing case or a wrong case count.
fn judge(role: &str, dir: &Path, cases: &BTreeMap<String, Case>, elapsed: Duration) {
    let mut ids: Vec<&String> = cases.keys().collect();
    ids.sort_by_key(|id| case_key(id));
    let not_ok: Vec<String> = ids
        .iter()
        .filter(|id| {
            let c = &cases[id.as_str()];
            c.behavior != "OK" || c.close != "OK"
        })
        .map(|id| format!("{id}={}", cases[id.as_str()].behavior))
        .collect();
    let summary = format!(
        "conformance {role}: {} cases: {}; close: {}; not OK: [{}]; {:.1} s",
        cases.len(),
        counts(BEHAVIORS, cases.values().map(|c| c.behavior.as_str())),
        counts(CLOSE_BEHAVIORS, cases.values().map(|c| c.close.as_str())),
        not_ok.join(" "),
        elapsed.as_secs_f64()
    );
    println!("{summary}");
    // libtest captures print macros of passing tests; a direct write to the stderr handle is not
    // captured, so the summary shows in every `cargo test` run (and in CI's log).
    {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{summary}");
    }
    let failed: Vec<String> = ids
        .iter()
        .filter_map(|id| {
            let c = &cases[id.as_str()];
            let bad = !BEHAVIOR_PASS.contains(&c.behavior.as_str())
                || !CLOSE_PASS.contains(&c.close.as_str());
            bad.then(|| format!("{id} (behavior {}, close {})", c.behavior, c.close))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "conformance {role}: {} failing case(s): {}\nreports: {}/index.html",
        failed.len(),
        failed.join(", "),
        dir.display()
    );
    assert_eq!(
        cases.len(),
        EXPECTED_CASES,
        "conformance {role}: expected {EXPECTED_CASES} cases in {}/index.json",
        dir.display()
    );
}

/// `kosoku -m fuzzingclient` against `examples/echo_server` (our `RxWSServer`).
#[test]
fn server_role() {
    server_role_run("server", &[], false);
}

/// The same over TLS: `examples/echo_server --tls-cert --tls-key` serves `wss://` with a
/// certificate the test made. kosoku 0.1.0 dials `ws://` only (a `wss://` URL is refused:
/// `invalid url scheme "wss": expected ws or http (or none)`), so it dials
/// `tests/conformance/tls_proxy.py`, which opens a TLS connection to the server for each
/// connection and copies bytes unchanged. The verdicts are those of the plain run.
#[cfg(feature = "tls")]
#[test]
fn server_role_over_tls() {
    let pki = harness::pki::write_pki("conformance-tls");
    let args = [
        "--tls-cert",
        harness::pki::arg(&pki.chain),
        "--tls-key",
        harness::pki::arg(&pki.key),
    ];
    server_role_run("server-tls", &args, true);
    drop(pki);
}

/// Runs the fuzzing client against `echo_server` started with `echo_args`; with `tls`, through
/// the TLS relay (`echo_args` must make it serve `wss://` with a certificate for `localhost`
/// signed by `ca.pem` next to the chain).
fn server_role_run(role: &str, echo_args: &[&str], tls: bool) {
    let _serial = lock(&SERIAL);
    let kosoku = kosoku();
    let echo_server = example("echo_server");
    let dir = report_dir(role);
    let started = Instant::now();
    let deadline = started + ROLE_TIMEOUT;

    let mut server = Proc::spawn(
        "echo_server",
        Command::new(echo_server)
            .args(echo_args)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(log_file(&dir.join("echo_server.stderr"))),
    );
    let lines = server.stdout_lines();
    let addr = lines
        .find(Duration::from_secs(20), |l| {
            l.strip_prefix("listening on ").map(str::to_owned)
        })
        .unwrap_or_else(|| {
            panic!(
                "echo_server did not print `listening on ADDR` within 20 s; stdout: {:?}; \
                 status: {:?}",
                lines.seen(),
                server.try_status()
            )
        });

    // Over TLS: kosoku dials the relay, the relay dials the server over TLS.
    let _relay;
    let addr = if tls {
        let ca = echo_args
            .iter()
            .position(|a| *a == "--tls-cert")
            .and_then(|i| echo_args.get(i + 1))
            .map(|chain| Path::new(chain).with_file_name("ca.pem"))
            .expect("--tls-cert CHAIN in echo_args");
        let port = addr.rsplit(':').next().expect("port in the address");
        let python = kosoku.with_file_name("python");
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("conformance")
            .join("tls_proxy.py");
        let mut relay = Proc::spawn(
            "tls_proxy.py",
            Command::new(python)
                .arg("-u")
                .arg(script)
                .arg(port)
                .arg(&ca)
                .stdout(Stdio::piped())
                .stderr(log_file(&dir.join("tls_proxy.stderr"))),
        );
        let out = relay.stdout_lines();
        let relay_port = out
            .next(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("tls_proxy.py printed no port: {:?}", relay.try_status()));
        _relay = relay;
        format!("127.0.0.1:{relay_port}")
    } else {
        addr
    };

    let mut runner = Proc::spawn(
        "kosoku fuzzingclient",
        kosoku_cmd("fuzzingclient", &dir)
            .args(["-p", "2"])
            .arg(format!("ws://{addr}"))
            .stdout(log_file(&dir.join("kosoku.stdout")))
            .stderr(log_file(&dir.join("kosoku.stderr"))),
    );
    // Exit status 1 only means some case is UNIMPLEMENTED or failed: judge by the report.
    if runner.wait_timeout(left(deadline)).is_none() {
        panic!(
            "kosoku fuzzingclient did not finish within {ROLE_TIMEOUT:?} (killed); logs in {}",
            dir.display()
        );
    }
    assert!(
        server.try_status().is_none(),
        "echo_server exited during the run: {:?}; stderr in {}",
        server.try_status(),
        dir.display()
    );
    drop(runner);
    drop(server);
    // The agent is the server's `Server` header, else its address: whichever, there is one.
    let cases = read_index(&dir, None);
    judge(role, &dir, &cases, started.elapsed());
}

/// `examples/autobahn_client` (our `RxWSClient`) against `kosoku -m fuzzingserver`.
#[test]
fn client_role() {
    let _serial = lock(&SERIAL);
    let _ = kosoku();
    let client_bin = example("autobahn_client");
    let dir = report_dir("client");
    let started = Instant::now();
    let deadline = started + ROLE_TIMEOUT;
    let agent = "rxplus";

    let mut fuzz = Proc::spawn(
        "kosoku fuzzingserver",
        kosoku_cmd("fuzzingserver", &dir)
            .arg("127.0.0.1:0")
            .stdout(log_file(&dir.join("kosoku.stdout")))
            .stderr(Stdio::piped()),
    );
    let lines = fuzz.stderr_lines();
    let url = lines
        .find(Duration::from_secs(30), |l| {
            l.split_once("listening on ")
                .map(|(_, u)| u.trim().to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "kosoku fuzzingserver did not print `listening on ws://...` within 30 s; \
                 stderr: {:?}; status: {:?}",
                lines.seen(),
                fuzz.try_status()
            )
        });

    let mut client = Proc::spawn(
        "autobahn_client",
        Command::new(client_bin)
            .arg(&url)
            .arg(agent)
            .stdout(log_file(&dir.join("autobahn_client.stdout")))
            .stderr(log_file(&dir.join("autobahn_client.stderr"))),
    );
    let status = client.wait_timeout(left(deadline)).unwrap_or_else(|| {
        panic!(
            "autobahn_client did not finish within {ROLE_TIMEOUT:?} (killed); logs in {}",
            dir.display()
        )
    });
    // The fuzzing server writes its reports and exits after /updateReports.
    if fuzz
        .wait_timeout(left(deadline).max(Duration::from_secs(10)))
        .is_none()
    {
        panic!(
            "kosoku fuzzingserver did not exit after the client finished (killed); stderr: {}",
            lines.seen()
        );
    }
    assert!(
        status.success(),
        "autobahn_client failed ({status}); see {}/autobahn_client.stderr",
        dir.display()
    );
    let cases = read_index(&dir, Some(agent));
    judge("client", &dir, &cases, started.elapsed());
}
