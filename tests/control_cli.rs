//! The connection-control command lines of the examples, driven as a user would over loopback
//! (every server on port 0): `echo_server --token TOKEN`, `echo_server --protocols P1,P2`, the
//! `close:CODE:REASON` message, and `wscat -H 'Name: value' --protocol P`.
//!
//! * `token_is_required_by_header_or_query`: without the token, or with a wrong one, wscat is
//!   refused with 401 (it says so and exits 1, not retrying); `-H 'Authorization: Bearer
//!   TOKEN'` and `?token=TOKEN` are accepted and echoed.
//! * `protocols_pick_the_clients_first_served_choice_or_refuse_with_400`: `--protocols
//!   chat.v2,chat.v1` with wscat offering `chat.v1` then `chat.v2` chooses `chat.v1` (the
//!   client's order; wscat prints `[protocol chat.v1]`); offering none, or only unserved ones,
//!   is refused with 400; with `--token` too, a client without the token gets 401 first.
//! * `close_message_closes_that_connection_only`: `close:4001:bye` from one wscat ends it with
//!   `[closed 4001 bye]` on stderr, nothing on stdout, exit 3, while a second wscat on the same
//!   path keeps its echo; an invalid code (`close:999:x`, `close:abc`) answers `error: ...` and
//!   closes nothing; `close:1000:done` ends wscat with `[closed 1000 done]` and exit 0.
//! * `control_argument_errors`: `--token`/`--protocols` without a value, an empty protocol
//!   list (echo_server: message, usage, exit 1); `-H` without `:` or a value, `--protocol`
//!   without a value (wscat: usage, exit 2).

mod harness;

use std::time::Duration;

use harness::cli::{echo_server, run_to_exit, Wscat, WAIT};

fn url(port: u16, path: &str) -> String {
    format!("ws://127.0.0.1:{port}{path}")
}

/// Starts wscat with `args` and expects it to be refused with `status`: a `wscat: ` line naming
/// it, exit 1, within `WAIT`, and nothing on stdout.
fn refused(args: &[&str], status: u16) {
    let mut wscat = Wscat::start(args);
    let code = wscat.exits();
    let last = wscat
        .err
        .find(Duration::from_secs(2), |l| {
            l.starts_with("wscat: ").then(|| l.to_owned())
        })
        .unwrap_or_else(|| panic!("{args:?}: no `wscat: ` line; stderr: {}", wscat.err.seen()));
    assert_eq!(
        code.code(),
        Some(1),
        "{args:?}: stderr {}",
        wscat.err.seen()
    );
    assert!(
        last.contains(&format!("HTTP {status}")),
        "{args:?}: the error does not name {status}: {last}"
    );
    assert_eq!(wscat.out.seen(), "", "{args:?}: something was received");
    // Refused once, not retried: at most one `[error]` line.
    let attempts = wscat
        .err
        .seen()
        .lines()
        .filter(|l| l.starts_with("[error]"))
        .count();
    assert!(attempts <= 1, "{args:?} retried: {}", wscat.err.seen());
}

#[test]
fn token_is_required_by_header_or_query() {
    let mut server = echo_server(&["--token", "s3cret", "127.0.0.1:0"]);
    let port = server.port;
    refused(&[&url(port, "/t")], 401);
    refused(
        &["-H", "Authorization: Bearer wrong", &url(port, "/t")],
        401,
    );
    refused(&[&url(port, "/t?token=wrong")], 401);

    let mut by_header = Wscat::start(&["-H", "Authorization: Bearer s3cret", &url(port, "/t")]);
    by_header.echoes("by header");
    let mut by_query = Wscat::start(&[&url(port, "/t?x=1&token=s3cret")]);
    by_query.echoes("by query");
    by_header.echoes("both at once");
    assert!(by_header.finish().success());
    assert!(by_query.finish().success());
    assert!(server.proc.try_status().is_none(), "echo_server exited");
}

#[test]
fn protocols_pick_the_clients_first_served_choice_or_refuse_with_400() {
    let mut server = echo_server(&["127.0.0.1:0", "--protocols", "chat.v2,chat.v1"]);
    let port = server.port;
    let mut wscat = Wscat::start(&[
        "--protocol",
        "chat.v1",
        "--protocol",
        "chat.v2",
        &url(port, "/p"),
    ]);
    assert_eq!(wscat.err_line("[protocol "), "[protocol chat.v1]");
    wscat.echoes("with chat.v1");
    assert!(wscat.finish().success());

    // An unserved protocol before a served one: the served one.
    let mut wscat = Wscat::start(&[
        "--protocol",
        "other",
        "--protocol",
        "chat.v2",
        &url(port, "/p"),
    ]);
    assert_eq!(wscat.err_line("[protocol "), "[protocol chat.v2]");
    wscat.echoes("with chat.v2");
    assert!(wscat.finish().success());

    refused(&[&url(port, "/p")], 400);
    refused(&["--protocol", "other", &url(port, "/p")], 400);
    assert!(server.proc.try_status().is_none(), "echo_server exited");

    // The token is checked before the protocol.
    let both = echo_server(&["--protocols", "chat.v1", "--token", "t0k", "127.0.0.1:0"]);
    refused(&["--protocol", "chat.v1", &url(both.port, "/p")], 401);
    refused(&[&url(both.port, "/p?token=t0k")], 400);
    let mut ok = Wscat::start(&["--protocol", "chat.v1", &url(both.port, "/p?token=t0k")]);
    assert_eq!(ok.err_line("[protocol "), "[protocol chat.v1]");
    ok.echoes("token and protocol");
    assert!(ok.finish().success());
}

#[test]
fn close_message_closes_that_connection_only() {
    let mut server = echo_server(&["127.0.0.1:0"]);
    let mut a = Wscat::start(&[&url(server.port, "/room")]);
    let mut b = Wscat::start(&[&url(server.port, "/room")]);
    a.echoes("a is here");
    b.echoes("b is here");

    a.say("close:4001:bye");
    assert_eq!(a.err_line("[closed "), "[closed 4001 bye]");
    let status = a.exits();
    assert_eq!(status.code(), Some(3), "stderr: {}", a.err.seen());
    assert_eq!(
        a.out.seen(),
        "a is here",
        "the close command was echoed or answered"
    );

    // The other connection on the same path is untouched.
    b.echoes("b still echoes");
    // An invalid code closes nothing: one `error: ...` line, and the echo goes on.
    for bad in ["close:999:x", "close:abc", "close:1006:reserved"] {
        b.say(bad);
        let reply = b.out.next(WAIT).unwrap_or_default();
        assert!(
            reply.starts_with("error: "),
            "{bad}: expected an error line, got {reply:?}; stderr: {}",
            b.err.seen()
        );
        b.echoes("still open");
    }
    b.say("close:1000:done");
    assert_eq!(b.err_line("[closed "), "[closed 1000 done]");
    assert_eq!(b.exits().code(), Some(0), "stderr: {}", b.err.seen());
    assert!(server.proc.try_status().is_none(), "echo_server exited");
}

#[test]
fn control_argument_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["--token"], "--token"),
        (&["127.0.0.1:0", "--protocols"], "--protocols"),
        (&["--protocols", ",", "127.0.0.1:0"], "--protocols"),
        (&["--token", "--protocols", "a"], "--token"),
    ];
    for (args, mention) in cases {
        let (status, out, err) = run_to_exit("echo_server", args);
        assert_eq!(status.code(), Some(1), "{args:?}: stderr {err}");
        assert!(!out.contains("listening on"), "{args:?} listened: {out}");
        assert!(
            err.starts_with("echo_server: ") && err.contains(mention),
            "{args:?}: the message does not mention {mention:?}: {err}"
        );
        assert!(err.contains("usage: echo_server"), "{args:?}: {err}");
    }
    let url = "ws://127.0.0.1:1/";
    let cases: &[(&[&str], &str)] = &[
        (&["-H", "no colon", url], "-H"),
        (&[url, "-H"], "-H"),
        (&["--header", ": empty name", url], "--header"),
        (&[url, "--protocol"], "--protocol"),
    ];
    for (args, mention) in cases {
        let (status, _, err) = run_to_exit("wscat", args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(mention) && err.contains("usage: wscat"),
            "{args:?}: {err}"
        );
    }
}
