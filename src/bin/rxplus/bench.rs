//! `rxplus bench URL`: throughput and round trips against any echo server, from the client
//! side. A window of messages is kept in flight; each carries its sequence number, and the
//! time from its send to its echo is one round trip.

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rxplus::ws::{Raw, RxWSClient, WSConfig, WSConnectionConfig, WSMessage};

/// The measurement's shape.
#[derive(Debug, Clone)]
pub struct BenchOpts {
    pub url: String,
    pub messages: u64,
    pub size: usize,
    pub window: u64,
    pub binary: bool,
    /// How long to wait for the next echo before giving up.
    pub idle: Duration,
}

/// Text payloads start with the sequence number in 16 decimal digits, binary ones with it in
/// 8 little-endian bytes.
const TEXT_SEQ: usize = 16;
const BINARY_SEQ: usize = 8;

fn payload(seq: u64, size: usize, binary: bool) -> WSMessage {
    if binary {
        let mut b = vec![0u8; size.max(BINARY_SEQ)];
        b[..BINARY_SEQ].copy_from_slice(&seq.to_le_bytes());
        WSMessage::Binary(b)
    } else {
        let mut s = format!("{seq:0TEXT_SEQ$}");
        s.extend(std::iter::repeat_n('x', size.saturating_sub(TEXT_SEQ)));
        WSMessage::Text(s)
    }
}

fn seq_of(m: &WSMessage) -> Option<u64> {
    match m {
        WSMessage::Text(t) => t.get(..TEXT_SEQ)?.parse().ok(),
        WSMessage::Binary(b) => Some(u64::from_le_bytes(b.get(..BINARY_SEQ)?.try_into().ok()?)),
    }
}

/// The `q` quantile of sorted `v`.
fn quantile(v: &[u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(micros: u32) -> String {
    format!("{:.3} ms", f64::from(micros) / 1e3)
}

/// Runs the measurement; prints a progress bar on stderr (when it is a terminal) and one
/// summary line on stdout.
pub fn run(opts: &BenchOpts) -> Result<(), String> {
    if opts.messages == 0 || opts.window == 0 {
        return Err("--messages and --window must be at least 1".into());
    }
    let conn = WSConnectionConfig::from_url(&opts.url).map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam_channel::unbounded::<(u64, Instant)>();
    let cfg = WSConfig::default().max_message_size(opts.size.max(TEXT_SEQ) * 2 + (64 << 10));
    let client = RxWSClient::<WSMessage>::with_setup(conn, Raw, cfg, |c| {
        c.subscribe(move |m: WSMessage| {
            if let Some(seq) = seq_of(&m) {
                let _ = tx.send((seq, Instant::now()));
            }
        });
    })
    .map_err(|e| e.to_string())?;
    if !client.wait_connected(Duration::from_secs(10)) {
        return Err(format!("not connected to {} after 10 s", opts.url));
    }
    let n = opts.messages;
    let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} echoed, {per_sec}, {eta} left")
            .map_err(|e| e.to_string())?,
    );
    // In flight: `(seq, sent)` in slot `seq % window`; a message is echoed in order, so a
    // slot is free again before it is reused. Round trips in microseconds (4 bytes each).
    let window = usize::try_from(opts.window).map_err(|_| "--window too large".to_string())?;
    let mut in_flight = vec![None::<(u64, Instant)>; window];
    let mut rtts: Vec<u32> = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    while got < n {
        while sent < n && sent - got < opts.window {
            in_flight[(sent % opts.window) as usize] = Some((sent, Instant::now()));
            client
                .send(payload(sent, opts.size, opts.binary))
                .map_err(|e| format!("send: {}", e.error()))?;
            sent += 1;
        }
        let (seq, at) = rx.recv_timeout(opts.idle).map_err(|_| {
            format!(
                "no echo for {:?} after {got} of {n} messages (is it an echo server?)",
                opts.idle
            )
        })?;
        // Each sequence number in flight counts once: a broadcast server may send it back
        // twice, or carry another client's numbers.
        let slot = &mut in_flight[(seq % opts.window) as usize];
        if let Some((_, t)) = slot.take_if(|(s, _)| *s == seq) {
            rtts.push(u32::try_from((at - t).as_micros()).unwrap_or(u32::MAX));
            got += 1;
            if got % 256 == 0 || got == n {
                bar.set_position(got);
            }
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    client.dispose();
    rtts.sort_unstable();
    let rate = n as f64 / elapsed.as_secs_f64();
    let size = opts
        .size
        .max(if opts.binary { BINARY_SEQ } else { TEXT_SEQ });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{n} {} messages of {size} bytes, window {}, in {:.2} s: {rate:.0} msg/s, {:.1} MB/s each \
         way; rtt p50 {} p99 {} max {}",
        if opts.binary { "binary" } else { "text" },
        opts.window,
        elapsed.as_secs_f64(),
        rate * size as f64 / 1e6,
        ms(quantile(&rtts, 0.5)),
        ms(quantile(&rtts, 0.99)),
        ms(quantile(&rtts, 1.0)),
    );
    let _ = out.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_sequence_number() {
        for binary in [false, true] {
            for size in [0, 8, 16, 100] {
                let m = payload(123_456, size, binary);
                assert_eq!(seq_of(&m), Some(123_456));
                assert!(m.len() >= size);
            }
        }
        assert_eq!(seq_of(&WSMessage::Text("hello".into())), None);
    }

    #[test]
    fn quantiles_of_sorted_samples() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 51);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(ms(1500), "1.500 ms");
    }
}
