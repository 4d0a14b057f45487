//! The TLS command lines of the examples, driven as a user would: `echo_server --tls-cert
//! CHAIN.pem --tls-key KEY.pem ADDR` serves `wss://`, and `wscat --ca ROOT.pem wss://...` talks
//! to it. Certificates are made by the test (rcgen) and written under `target/test-pki/`.
//!
//! * `wscat_with_ca_gets_the_echo_from_a_tls_echo_server`: a line typed into wscat comes back
//!   on its stdout; EOF on stdin ends wscat with exit 0.
//! * `plain_wscat_at_a_tls_echo_server_fails_quickly_and_the_server_serves_the_next`: a `ws://`
//!   URL against the TLS server gives an `[error]` line within 2 s; a `wss://` wscat after it
//!   still gets its echo.
//! * `wscat_without_the_ca_is_refused_and_exits_1`: the certificate is refused (not retried)
//!   and wscat exits 1 at once with `wscat: ...` on stderr.
//! * `echo_server_argument_errors` and `wscat_argument_errors`: one TLS flag without the
//!   other, unknown flags, unreadable files: a clear message, a usage line where it applies,
//!   and the documented exit code, without listening.
#![cfg(feature = "tls")]

mod harness;

use std::time::{Duration, Instant};

use harness::cli::{echo_server, run_to_exit, EchoServer, Wscat, WAIT};
use harness::pki::{arg, write_pki, PkiFiles};

/// `echo_server` serving wss:// with `pki`'s leaf on a free port, TLS flags first.
fn tls_echo_server(pki: &PkiFiles) -> EchoServer {
    echo_server(&[
        "--tls-cert",
        arg(&pki.chain),
        "--tls-key",
        arg(&pki.key),
        "127.0.0.1:0",
    ])
}

fn wss_url(port: u16, path: &str) -> String {
    format!("wss://localhost:{port}{path}")
}

#[test]
fn wscat_with_ca_gets_the_echo_from_a_tls_echo_server() {
    let pki = write_pki("wscat-echo");
    let mut server = tls_echo_server(&pki);
    let mut wscat = Wscat::start(&["--ca", arg(&pki.ca), &wss_url(server.port, "/cli")]);
    wscat.echoes("hello over wss, ünïcode ✓");
    wscat.echoes("second line");
    let err = wscat.err.seen();
    let status = wscat.finish();
    assert!(status.success(), "wscat exited {status}; stderr: {err}");
    assert!(
        server.proc.try_status().is_none(),
        "echo_server exited: {:?}",
        server.proc.try_status()
    );
}

#[test]
fn plain_wscat_at_a_tls_echo_server_fails_quickly_and_the_server_serves_the_next() {
    let pki = write_pki("wscat-mismatch");
    // ADDR first, then the TLS flags in the other order.
    let mut server = echo_server(&[
        "127.0.0.1:0",
        "--tls-key",
        arg(&pki.key),
        "--tls-cert",
        arg(&pki.chain),
    ]);
    let started = Instant::now();
    let mut plain = Wscat::start(&[&format!("ws://127.0.0.1:{}/plain", server.port)]);
    // A failed attempt is reported at once (`[error] ...`), or wscat exits non-zero.
    let failed = plain
        .err
        .find(WAIT, |l| l.starts_with("[error]").then(|| l.to_owned()));
    let took = started.elapsed();
    match failed {
        Some(line) => assert!(
            took < Duration::from_secs(2),
            "the first `[error]` line took {took:?}: {line}"
        ),
        None => {
            let status = plain.proc.try_status();
            assert!(
                status.is_some_and(|s| !s.success()) && took < Duration::from_secs(2),
                "a ws:// wscat at a wss:// server neither reported an error nor exited \
                 non-zero within 2 s (status {status:?} after {took:?}); stderr: {}",
                plain.err.seen()
            );
        }
    }
    assert!(
        plain.out.next(Duration::ZERO).is_none(),
        "the plain wscat received something: {}",
        plain.out.seen()
    );
    drop(plain);

    let mut good = Wscat::start(&["--ca", arg(&pki.ca), &wss_url(server.port, "/after")]);
    good.echoes("still serving");
    assert!(good.finish().success());
    assert!(server.proc.try_status().is_none(), "echo_server exited");
}

#[test]
fn wscat_without_the_ca_is_refused_and_exits_1() {
    let pki = write_pki("wscat-refused");
    let mut server = tls_echo_server(&pki);
    let started = Instant::now();
    let mut wscat = Wscat::start(&[&wss_url(server.port, "/refused")]);
    let status = wscat.proc.wait_timeout(WAIT).unwrap_or_else(|| {
        panic!(
            "wscat kept running with a certificate it refused; stderr: {}",
            wscat.err.seen()
        )
    });
    let took = started.elapsed();
    assert_eq!(status.code(), Some(1), "stderr: {}", wscat.err.seen());
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The reader thread may still be draining the pipe: wait for the last line.
    let last = wscat
        .err
        .find(Duration::from_secs(2), |l| {
            l.starts_with("wscat: ").then(|| l.to_owned())
        })
        .unwrap_or_else(|| panic!("no `wscat: ` line; stderr: {}", wscat.err.seen()));
    assert!(
        last.to_lowercase().contains("certificate"),
        "the error does not say what was refused: {last}"
    );
    assert!(server.proc.try_status().is_none(), "echo_server exited");
}

#[test]
fn echo_server_argument_errors() {
    let pki = write_pki("echo-args");
    let missing = pki.dir.join("missing.pem");
    // (arguments, what the message names, whether a usage line follows)
    let cases: &[(&[&str], &str, bool)] = &[
        (
            &["--tls-cert", arg(&pki.chain), "127.0.0.1:0"],
            "--tls-key",
            true,
        ),
        (
            &["127.0.0.1:0", "--tls-key", arg(&pki.key)],
            "--tls-cert",
            true,
        ),
        (&["--bogus", "127.0.0.1:0"], "--bogus", true),
        (&["--tls-cert"], "--tls-cert", true),
        (
            &[
                "--tls-cert",
                arg(&missing),
                "--tls-key",
                arg(&pki.key),
                "127.0.0.1:0",
            ],
            "missing.pem",
            false,
        ),
        // A file with no private key in it.
        (
            &[
                "--tls-cert",
                arg(&pki.chain),
                "--tls-key",
                arg(&pki.ca),
                "127.0.0.1:0",
            ],
            "key",
            false,
        ),
    ];
    for (args, mention, usage) in cases {
        let (status, out, err) = run_to_exit("echo_server", args);
        assert_eq!(status.code(), Some(1), "{args:?}: stderr {err}");
        assert!(
            !out.contains("listening on"),
            "{args:?} listened anyway: {out}"
        );
        assert!(
            err.starts_with("echo_server: ") && err.contains(mention),
            "{args:?}: the message does not mention {mention:?}: {err}"
        );
        assert_eq!(
            err.contains("usage: echo_server"),
            *usage,
            "{args:?}: usage line expected: {usage}; stderr: {err}"
        );
    }
}

#[test]
fn wscat_argument_errors() {
    let pki = write_pki("wscat-args");
    let url = "wss://localhost:1/";
    let (status, _, err) = run_to_exit("wscat", &["--bogus", url]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--bogus") && err.contains("usage: wscat"),
        "{err}"
    );
    let (status, _, err) = run_to_exit("wscat", &[url, "--ca"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--ca") && err.contains("usage: wscat"),
        "{err}"
    );
    let missing = pki.dir.join("missing.pem");
    let (status, _, err) = run_to_exit("wscat", &["--ca", arg(&missing), url]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("wscat: ") && err.contains("missing.pem"),
        "{err}"
    );
    // A file with no certificate in it.
    let (status, _, err) = run_to_exit("wscat", &["--ca", arg(&pki.key), url]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.starts_with("wscat: "), "{err}");
}
