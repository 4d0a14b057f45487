//! The server of `rxplus serve` and the `echo_server` example: echo (with the
//! `close:CODE:REASON` command), broadcast or print, behind an optional token, subprotocol
//! list and TLS.

use std::io::Write;

use rxplus::ws::{
    AcceptHook, HandshakeRequest, Raw, RxWSServer, ServerHandle, TaggedData, Verdict, WSConfig,
    WSMessage,
};

/// What the server does with a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Back to the connection it came from.
    #[default]
    Echo,
    /// To every connection on its path, the sender included.
    Broadcast,
    /// One stdout line each, nothing sent back.
    Print,
}

/// The parsed command line.
#[derive(Debug, Clone)]
pub struct ServeOpts {
    pub addr: String,
    /// `(chain, key)` PEM file paths: serve wss://.
    pub tls: Option<(String, String)>,
    /// The bearer token every handshake must carry.
    pub token: Option<String>,
    /// The subprotocols served (non-empty when given).
    pub protocols: Option<Vec<String>>,
    pub mode: Mode,
}

/// Splits a `P1,P2` list; an empty list is an error.
pub fn parse_protocols(list: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("--protocols needs at least one protocol".into());
    }
    Ok(list)
}

/// `--tls-cert` and `--tls-key` go together.
pub fn tls_pair(
    cert: Option<String>,
    key: Option<String>,
) -> Result<Option<(String, String)>, String> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => Err("--tls-cert needs --tls-key as well".into()),
        (None, Some(_)) => Err("--tls-key needs --tls-cert as well".into()),
    }
}

/// The accept hook of `--token` and `--protocols`: 401 without the token, 400 without a
/// served subprotocol, else accept with the client's first served choice.
fn decide(req: &HandshakeRequest, token: Option<&str>, served: Option<&[String]>) -> Verdict {
    if let Some(token) = token {
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == token);
        if !bearer && req.query_param("token") != Some(token) {
            return Verdict::refuse(401, "missing or wrong token");
        }
    }
    let Some(served) = served else {
        return Verdict::accept();
    };
    match req.protocols().iter().find(|p| served.contains(p)) {
        Some(p) => Verdict::accept().protocol(p.as_str()),
        None if req.protocols().is_empty() => Verdict::refuse(
            400,
            format!("a subprotocol is required: one of {}", served.join(", ")),
        ),
        None => Verdict::refuse(
            400,
            format!(
                "no offered subprotocol is served ({} offered; served: {})",
                req.protocols().join(", "),
                served.join(", ")
            ),
        ),
    }
}

/// Echoes `m` to its connection, or closes the connection for a `close:CODE:REASON` text.
fn echo(server: &ServerHandle<WSMessage>, m: &TaggedData<WSMessage>) {
    let command = match &m.data {
        WSMessage::Text(t) => t.strip_prefix("close:"),
        WSMessage::Binary(_) => None,
    };
    let (Some(command), Some(conn)) = (command, m.conn) else {
        server.on_next(m.reply(m.data.clone()));
        return;
    };
    let (code, reason) = command.split_once(':').unwrap_or((command, ""));
    let closed = match code.parse::<u16>() {
        Ok(code) => server.close(conn, code, reason).map_err(|e| e.to_string()),
        Err(_) => Err(format!("close code {code:?} is not a number")),
    };
    if let Err(e) = closed {
        server.on_next(m.reply(WSMessage::Text(format!("error: {e}"))));
    }
}

/// `CONNID PATH text TEXT` or `CONNID PATH binary HEX`, one flushed line.
fn print(m: &TaggedData<WSMessage>) {
    let conn = m.conn.map(|c| c.to_string()).unwrap_or_default();
    let body = match &m.data {
        WSMessage::Text(t) => format!("text {t}"),
        WSMessage::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("binary {hex}")
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{conn} {} {body}", m.tag);
    let _ = out.flush();
}

/// Binds, prints `listening on ADDR` (flushed) and serves until the process is killed.
pub fn run(prog: &'static str, opts: &ServeOpts) -> Result<(), rxplus::Error> {
    // The default heartbeat stays on: a peer that vanishes is closed, not held forever.
    let cfg = WSConfig::default()
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20);
    let cfg = with_tls(prog, cfg, opts.tls.as_ref())?;
    let cfg = if opts.token.is_some() || opts.protocols.is_some() {
        let (token, served) = (opts.token.clone(), opts.protocols.clone());
        cfg.accept_hook(AcceptHook::new(move |req| {
            decide(req, token.as_deref(), served.as_deref())
        }))
    } else {
        cfg
    };
    let server = RxWSServer::<WSMessage>::bind_with_config(opts.addr.as_str(), Raw, cfg)?;
    let handle = server.handle();
    match opts.mode {
        Mode::Echo => server.subscribe(move |m: TaggedData<WSMessage>| echo(&handle, &m)),
        Mode::Broadcast => server.subscribe(move |m: TaggedData<WSMessage>| {
            handle.on_next(TaggedData::new(m.tag.clone(), m.data))
        }),
        Mode::Print => server.subscribe(|m: TaggedData<WSMessage>| print(&m)),
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "listening on {}", server.local_addr());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

#[cfg(feature = "tls")]
fn with_tls(
    _prog: &str,
    cfg: WSConfig,
    tls: Option<&(String, String)>,
) -> Result<WSConfig, rxplus::Error> {
    Ok(match tls {
        Some((chain, key)) => cfg.tls_server(rxplus::tls::ServerTls::from_pem_files(chain, key)?),
        None => cfg,
    })
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    prog: &str,
    cfg: WSConfig,
    tls: Option<&(String, String)>,
) -> Result<WSConfig, rxplus::Error> {
    match tls {
        Some(_) => {
            eprintln!("{prog}: --tls-cert/--tls-key need rxplus's `tls` feature");
            std::process::exit(1);
        }
        None => Ok(cfg),
    }
}
