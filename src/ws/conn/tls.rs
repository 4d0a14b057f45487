//! A TLS connection shared by the two directions of one WebSocket (see
//! `ADR/2026-12-04-tls-full-duplex.md`).
//!
//! rustls keeps both directions' state in one object, so it sits behind a mutex that is only
//! ever held for CPU work: the reader takes raw bytes off the socket with no lock held, then
//! locks to decrypt them; the holder of the write half locks to encrypt, then writes the
//! ciphertext with no lock held. A read blocked on a quiet peer never holds up a write, and a
//! write blocked on a full socket never holds up a read. Nothing polls and nothing times out
//! in the data path.
//!
//! Without the `tls` feature, [`TlsSession`] has no values and every use compiles away.

#[cfg(feature = "tls")]
pub(crate) use imp::TlsSession;

#[cfg(not(feature = "tls"))]
pub(crate) use stub::TlsSession;

/// What one step of decryption gave the reader.
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(crate) enum Pulled {
    /// Plaintext bytes copied into the caller's buffer (0: the peer's `close_notify`).
    Data(usize),
    /// Nothing until more raw bytes arrive.
    NeedMore,
}

#[cfg(feature = "tls")]
mod imp {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::sync::Arc;
    use std::time::Instant;

    use rustls::pki_types::ServerName;
    use rustls::Connection;

    use super::super::HalfStream;
    use super::Pulled;
    use crate::tls::{ClientTls, ServerTls};

    pub(crate) struct TlsSession {
        conn: parking_lot::Mutex<Connection>,
    }

    impl TlsSession {
        /// Runs a server's TLS handshake on `sock` within `deadline`.
        pub(crate) fn accept(
            tls: &ServerTls,
            sock: &Arc<TcpStream>,
            deadline: Instant,
        ) -> io::Result<Arc<Self>> {
            let conn = rustls::ServerConnection::new(tls.rustls_config().clone())
                .map_err(io::Error::other)?;
            Self::handshake(Connection::Server(conn), sock, deadline)
        }

        /// Runs a client's TLS handshake on `sock` within `deadline`, checking the server's
        /// certificate for `host` (also sent as SNI).
        pub(crate) fn connect(
            tls: &ClientTls,
            host: &str,
            sock: &Arc<TcpStream>,
            deadline: Instant,
        ) -> io::Result<Arc<Self>> {
            let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("server name {host:?}: {e}"),
                )
            })?;
            let conn = rustls::ClientConnection::new(tls.rustls_config().clone(), name)
                .map_err(io::Error::other)?;
            Self::handshake(Connection::Client(conn), sock, deadline)
        }

        fn handshake(
            mut conn: Connection,
            sock: &Arc<TcpStream>,
            deadline: Instant,
        ) -> io::Result<Arc<Self>> {
            // Each socket call bounded by what is left of the deadline (`HalfStream` does it
            // for the plain upgrade too): `complete_io` loops over reads while bytes trickle
            // in, so one timeout per call would not bound it.
            let mut io = HalfStream::with_deadline(sock.clone(), Some(deadline));
            // Our own code bounds what waits to be sent (the write half's buffer and one
            // chunk); rustls's limit would only turn a large message into a short write.
            conn.set_buffer_limit(None);
            while conn.is_handshaking() {
                match conn.complete_io(&mut io) {
                    Ok((0, 0)) if conn.is_handshaking() => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed during the TLS handshake",
                        ))
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(timed_out())
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // TLS 1.3 session tickets, written now rather than with the first message.
            while conn.wants_write() {
                conn.write_tls(&mut io)?;
            }
            Ok(Arc::new(TlsSession {
                conn: parking_lot::Mutex::new(conn),
            }))
        }

        /// Reader thread: plaintext already decrypted, or decrypts from `raw` (advancing
        /// `*used` over what rustls took) until some is. `wants_write` is set when rustls
        /// has something to send in reply (a key update, an alert).
        pub(crate) fn pull(
            &self,
            buf: &mut [u8],
            raw: &[u8],
            used: &mut usize,
            wants_write: &mut bool,
        ) -> io::Result<Pulled> {
            let mut c = self.conn.lock();
            let res = loop {
                match c.reader().read(buf) {
                    Ok(n) => break Ok(Pulled::Data(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => break Err(e),
                }
                if *used >= raw.len() {
                    break Ok(Pulled::NeedMore);
                }
                let n = match c.read_tls(&mut &raw[*used..]) {
                    Ok(n) => n,
                    Err(e) => break Err(e),
                };
                *used += n;
                if let Err(e) = c.process_new_packets() {
                    break Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                if n == 0 {
                    break Ok(Pulled::NeedMore);
                }
            };
            *wants_write = c.wants_write();
            res
        }

        /// Holder of the write half: encrypts `plain` and appends it, with anything rustls
        /// had waiting (a key update), to `ct`.
        pub(crate) fn seal(&self, plain: &[u8], ct: &mut Vec<u8>) -> io::Result<()> {
            let mut c = self.conn.lock();
            if !plain.is_empty() {
                c.writer().write_all(plain)?;
            }
            while c.wants_write() {
                c.write_tls(ct)?;
            }
            Ok(())
        }

        /// Holder of the write half: appends a `close_notify` alert to `ct`.
        pub(crate) fn seal_close(&self, ct: &mut Vec<u8>) -> io::Result<()> {
            self.conn.lock().send_close_notify();
            self.seal(&[], ct)
        }

        /// During the opening handshake only (one thread): encrypts `plain` and writes it out,
        /// blocking under the socket's timeouts.
        pub(crate) fn write_blocking(&self, sock: &TcpStream, plain: &[u8]) -> io::Result<()> {
            let mut ct = Vec::with_capacity(plain.len() + 64);
            self.seal(plain, &mut ct)?;
            let mut s = sock;
            s.write_all(&ct)
        }
    }

    fn timed_out() -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
    }
}

#[cfg(not(feature = "tls"))]
mod stub {
    use std::io;
    use std::net::TcpStream;

    use super::Pulled;

    /// No values: a build without TLS never has a session.
    pub(crate) enum TlsSession {}

    impl TlsSession {
        pub(crate) fn pull(
            &self,
            _: &mut [u8],
            _: &[u8],
            _: &mut usize,
            _: &mut bool,
        ) -> io::Result<Pulled> {
            match *self {}
        }
        pub(crate) fn seal(&self, _: &[u8], _: &mut Vec<u8>) -> io::Result<()> {
            match *self {}
        }
        pub(crate) fn seal_close(&self, _: &mut Vec<u8>) -> io::Result<()> {
            match *self {}
        }
        pub(crate) fn write_blocking(&self, _: &TcpStream, _: &[u8]) -> io::Result<()> {
            match *self {}
        }
    }
}
