//! [`RxWSClientGroup`]: one [`RxWSClient`] per path, behind one subject of `TaggedData`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::component::{front_end, Core, Endpoint};
use crate::error::{Error, Result, SendError};
use crate::reactive::Notification;
use crate::stats::StatsSnapshot;
use crate::telemetry::event;
use crate::ws::client::RxWSClient;
use crate::ws::datatype::Datatypes;
use crate::ws::{ConnectionState, Tag, TaggedData, WSConfig, WSConnectionConfig};

/// A group of clients to one host, one per path, created on first use (or by
/// [`open_path`](Self::open_path)), exactly one per path even under concurrent first use.
///
/// * Outbound: `on_next(TaggedData { tag: path, data, .. })` goes to the path's client. The
///   items a new path's client gets before its first connection attempt resolves are queued
///   for that attempt (and reported as `Undelivered` if it fails), not refused for arriving
///   a moment too early; the sender never waits.
/// * Inbound: items of every path come out as `TaggedData { tag: path, data, conn: None }`.
/// * `on_completed`/`on_error`/`dispose` reach every child. Child names are `{name}:{path}`;
///   children inherit the group's [`WSConfig`] (buffering included).
///
/// ```no_run
/// use rxplus::ws::{RxWSClientGroup, TaggedData, Text, WSConnectionConfig};
///
/// let group = RxWSClientGroup::<String>::new(WSConnectionConfig::new("127.0.0.1", 9001, "/")?, Text)?;
/// group.subscribe(|m: TaggedData<String>| println!("{}: {}", m.tag, m.data));
/// group.on_next(TaggedData::new("/a", "to a".to_string()));
/// group.on_next(TaggedData::new("/b", "to b".to_string()));
/// # Ok::<(), rxplus::Error>(())
/// ```
pub struct RxWSClientGroup<T: Clone + Send + 'static> {
    inner: Arc<Inner<T>>,
}

front_end!(
    RxWSClientGroup,
    GroupHandle,
    Inner,
    TaggedData<T>,
    TaggedData<T>
);

struct Inner<T: Clone + Send + 'static> {
    core: Core<TaggedData<T>>,
    base: WSConnectionConfig,
    cfg: WSConfig,
    datatypes: Datatypes<T>,
    clients: Mutex<HashMap<String, Arc<RxWSClient<T>>>>,
}

impl<T: Clone + Send + 'static> RxWSClientGroup<T> {
    /// A group for the host and port of `base` (its path is not used) with the default config.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(base: WSConnectionConfig, datatype: impl Into<Datatypes<T>>) -> Result<Self> {
        Self::with_config(base, datatype, WSConfig::default())
    }

    /// A group with a custom config, passed down to every child.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn with_config(
        base: WSConnectionConfig,
        datatype: impl Into<Datatypes<T>>,
        cfg: WSConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let name: Arc<str> = cfg
            .name
            .clone()
            .unwrap_or_else(|| format!("RxWSClientGroup:ws://{}", base.authority()))
            .into();
        Ok(RxWSClientGroup {
            inner: Arc::new(Inner {
                core: Core::new(name, cfg.thread_stack_size, cfg.stream_capacity, None),
                base,
                cfg,
                datatypes: datatype.into(),
                clients: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Starts the client for `path` now, if there is none yet.
    ///
    /// # Errors
    /// [`Error::Config`] for a path not starting with `/`; [`Error::AlreadyClosed`] after
    /// completion.
    pub fn open_path(&self, path: &str) -> Result<()> {
        self.inner.ensure_client(path).map(|_| ())
    }

    /// Paths with a client.
    pub fn paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.clients.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// The state of the client for `path`, if there is one.
    pub fn connection_state(&self, path: &str) -> Option<ConnectionState> {
        let client = self.inner.clients.lock().get(path).cloned()?;
        Some(client.connection_state())
    }

    /// The subprotocol the server chose for `path`'s client (see
    /// [`RxWSClient::protocol`](crate::ws::RxWSClient::protocol)).
    pub fn protocol(&self, path: &str) -> Option<String> {
        let client = self.inner.clients.lock().get(path).cloned()?;
        client.protocol()
    }

    /// The `101` response headers of `path`'s client's last handshake.
    pub fn response_headers(&self, path: &str) -> Vec<(String, String)> {
        let client = self.inner.clients.lock().get(path).cloned();
        client.map(|c| c.response_headers()).unwrap_or_default()
    }

    /// How `path`'s client's last connection closed (see
    /// [`RxWSClient::last_close`](crate::ws::RxWSClient::last_close)).
    pub fn last_close(&self, path: &str) -> Option<crate::ws::CloseInfo> {
        let client = self.inner.clients.lock().get(path).cloned()?;
        client.last_close()
    }

    /// Waits until the client for `path` (opened if needed) is connected, up to `timeout`.
    ///
    /// # Errors
    /// As [`open_path`](Self::open_path).
    pub fn wait_connected(&self, path: &str, timeout: std::time::Duration) -> Result<bool> {
        Ok(self.inner.ensure_client(path)?.0.wait_connected(timeout))
    }

    /// Counters summed over the children.
    pub fn stats(&self) -> StatsSnapshot {
        let clients: Vec<_> = self.inner.clients.lock().values().cloned().collect();
        let mut s = self.inner.core.stats.snapshot();
        for c in clients {
            s += c.stats();
        }
        s
    }

    /// Threads of the group and its children now.
    pub fn thread_count(&self) -> usize {
        let clients: Vec<_> = self.inner.clients.lock().values().cloned().collect();
        self.inner.core.threads.live_count()
            + clients.iter().map(|c| c.thread_count()).sum::<usize>()
    }
}

impl<T: Clone + Send + 'static> Endpoint for Inner<T> {
    type In = TaggedData<T>;
    type Out = TaggedData<T>;
    const KIND: &'static str = "group";

    fn core(&self) -> &Core<TaggedData<T>> {
        &self.core
    }

    fn send(&self, item: TaggedData<T>) -> std::result::Result<(), SendError<TaggedData<T>>> {
        let (client, created) = match self.ensure_client(&item.tag) {
            Ok(c) => c,
            Err(e) => return Err(SendError::new(e, Some(item))),
        };
        let tag = item.tag;
        // The item that created the path's client is held for its first attempt even when
        // that attempt already failed (a refused port fails at once): accepted, then reported
        // as undelivered, never refused for coming a moment too late.
        let sent = if created {
            client.send_held(item.data)
        } else {
            client.send(item.data)
        };
        sent.map_err(|e| e.map_item(|data| TaggedData::new(tag, data)))
    }

    fn complete(&self, n: Notification<TaggedData<T>>) {
        if self.core.inbound.is_terminated() {
            self.dispose();
            return;
        }
        for c in self.children() {
            match &n {
                Notification::Error(e) => c.on_error(e.clone()),
                _ => c.on_completed(),
            }
        }
        self.core.terminate(n);
        self.dispose();
    }

    fn dispose(&self) {
        if !self.core.begin_dispose() {
            return;
        }
        for c in self.children() {
            c.dispose();
        }
        self.core.threads.join_all();
        self.core.terminate(Notification::Completed);
        log::info!(component = &*self.core.name; "{}", event::GROUP_STOPPED);
    }
}

impl<T: Clone + Send + 'static> Inner<T> {
    /// The path's client, and whether this call created it.
    fn ensure_client(&self, path: &str) -> Result<(Arc<RxWSClient<T>>, bool)> {
        if self.core.threads.is_stopping() || self.core.inbound.is_terminated() {
            return Err(self.core.closed());
        }
        if let Some(c) = self.clients.lock().get(path) {
            return Ok((c.clone(), false));
        }
        // The datatype chooser is user code: it runs before the lock, never under it, so it
        // may call back into the group.
        let conn = self.base.with_path(path)?;
        let datatype = self.datatypes.for_path(path);
        // One lock around the second lookup and the creation: exactly one client per path.
        // Building a client runs none of the user's code.
        let mut clients = self.clients.lock();
        if self.core.threads.is_stopping() || self.core.inbound.is_terminated() {
            return Err(self.core.closed());
        }
        if let Some(c) = clients.get(path) {
            return Ok((c.clone(), false));
        }
        let cfg = self
            .cfg
            .clone()
            .name(format!("{}:{}", self.core.name, path));
        let inbound = self.core.inbound.clone();
        let errors = self.core.errors.clone();
        let tag = Tag::from(path);
        // Forwarding is in place before the client connects: no early message is missed.
        let client = RxWSClient::build(conn, datatype, cfg, Some(&self.core.threads), |c| {
            // A path's first item arrives with its client's creation: hold it for the first
            // attempt rather than refuse it for coming a moment too early.
            c.hold_until_first_attempt();
            c.subscribe(move |data: T| inbound.next(TaggedData::new(tag.clone(), data)));
            c.subscribe_errors(move |e: Error| errors.next(e));
        })?;
        let client = Arc::new(client);
        clients.insert(path.to_owned(), client.clone());
        log::info!(component = &*self.core.name, path; "{}", event::GROUP_PATH_OPENED);
        Ok((client, true))
    }

    fn children(&self) -> Vec<Arc<RxWSClient<T>>> {
        self.clients.lock().values().cloned().collect()
    }
}
