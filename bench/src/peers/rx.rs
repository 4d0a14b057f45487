//! rxplus as a user writes it: an `RxWSServer` with a subscriber, `RxWSClient`s fed with
//! `on_next`. The library's defaults are left as they are (they are what is measured).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Result};
use rxplus::ws::{Datatype, Datatypes, RxWSClient, RxWSServer, WSConfig, WSConnectionConfig};

use super::RunningServer;

/// A server on a free loopback port.
pub fn server<T: Clone + Send + 'static>(
    datatype: impl Into<Datatypes<T>>,
) -> Result<RxWSServer<T>> {
    Ok(RxWSServer::bind("127.0.0.1:0", datatype)?)
}

/// A server on a free loopback port with `cfg`.
pub fn server_with<T: Clone + Send + 'static>(
    datatype: impl Into<Datatypes<T>>,
    cfg: WSConfig,
) -> Result<RxWSServer<T>> {
    Ok(RxWSServer::bind_with_config("127.0.0.1:0", datatype, cfg)?)
}

/// A client of `path` on `addr`, connected (or an error after 10 s).
pub fn client<T: Clone + Send + 'static>(
    addr: SocketAddr,
    path: &str,
    datatype: impl Datatype<T>,
) -> Result<RxWSClient<T>> {
    let c = RxWSClient::new(
        WSConnectionConfig::from_url(&super::url(addr, path))?,
        datatype,
    )?;
    ensure!(
        c.wait_connected(Duration::from_secs(10)),
        "rxplus: client did not connect to {addr} within 10 s"
    );
    Ok(c)
}

/// Shared so a workload's own thread (e.g. a broadcaster) can use the server too.
pub struct RxServer<T: Clone + Send + 'static>(pub Arc<RxWSServer<T>>);

impl<T: Clone + Send + 'static> RunningServer for RxServer<T> {
    fn addr(&self) -> SocketAddr {
        self.0.local_addr()
    }

    fn connections(&self) -> usize {
        self.0.connection_count()
    }

    fn dispose(self: Box<Self>) {
        self.0.dispose();
    }
}
