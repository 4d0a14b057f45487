//! [`RxWSClientGroup`]: one [`RxWSClient`] per path, behind one subject of `TaggedData`.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::reactive::{Notification, Observer, Subscription};
use crate::telemetry::event;
use crate::ws::client::RxWSClient;
use crate::ws::component::Core;
use crate::ws::datatype::Datatypes;
use crate::ws::stats::StatsSnapshot;
use crate::ws::{ConnectionState, TaggedData, WSConnectionConfig, WsConfig};

/// A group of clients to one host, one per path, created on first use (or by
/// [`open_path`](Self::open_path)), exactly one per path even under concurrent first use.
///
/// * Outbound: `on_next(TaggedData { tag: path, data, .. })` goes to the path's client.
/// * Inbound: items of every path come out as `TaggedData { tag: path, data, conn: None }`.
/// * `on_completed`/`on_error`/`dispose` reach every child. Child names are `{name}:{path}`;
///   children inherit the group's [`WsConfig`] (buffering included).
///
/// ```no_run
/// use rxplus::ws::{RxWSClientGroup, TaggedData, Text, WSConnectionConfig};
///
/// let group = RxWSClientGroup::<String>::new(WSConnectionConfig::new("127.0.0.1", 9001, "/")?, Text)?;
/// group.subscribe(|m: TaggedData<String>| println!("{}: {}", m.tag, m.data)).detach();
/// group.on_next(TaggedData::new("/a", "to a".to_string()));
/// group.on_next(TaggedData::new("/b", "to b".to_string()));
/// # Ok::<(), rxplus::Error>(())
/// ```
pub struct RxWSClientGroup<T: Clone + Send + 'static> {
    inner: Arc<Inner<T>>,
}

/// A weak, cloneable handle to an [`RxWSClientGroup`], for use inside callbacks.
pub struct GroupHandle<T: Clone + Send + 'static> {
    inner: Weak<Inner<T>>,
}

impl<T: Clone + Send + 'static> Clone for GroupHandle<T> {
    fn clone(&self) -> Self {
        GroupHandle {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<T: Clone + Send + 'static> {
    core: Core<TaggedData<T>>,
    base: WSConnectionConfig,
    cfg: WsConfig,
    datatypes: Datatypes<T>,
    clients: Mutex<HashMap<String, Arc<RxWSClient<T>>>>,
}

impl<T: Clone + Send + 'static> RxWSClientGroup<T> {
    /// A group for the host and port of `base` (its path is not used) with the default config.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn new(base: WSConnectionConfig, datatype: impl Into<Datatypes<T>>) -> Result<Self> {
        Self::with_config(base, datatype, WsConfig::default())
    }

    /// A group with a custom config, passed down to every child.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn with_config(
        base: WSConnectionConfig,
        datatype: impl Into<Datatypes<T>>,
        cfg: WsConfig,
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

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.inner.core.name
    }

    /// A weak, cloneable handle for use inside callbacks.
    pub fn handle(&self) -> GroupHandle<T> {
        GroupHandle {
            inner: Arc::downgrade(&self.inner),
        }
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

    /// Waits until the client for `path` (opened if needed) is connected, up to `timeout`.
    ///
    /// # Errors
    /// As [`open_path`](Self::open_path).
    pub fn wait_connected(&self, path: &str, timeout: std::time::Duration) -> Result<bool> {
        Ok(self.inner.ensure_client(path)?.wait_connected(timeout))
    }

    /// Subscribes to inbound items of every path.
    pub fn subscribe(&self, observer: impl Observer<TaggedData<T>> + 'static) -> Subscription {
        self.inner.core.inbound.subscribe(Box::new(observer))
    }

    /// Inbound items as a bounded crossbeam receiver.
    pub fn stream(&self) -> Receiver<Notification<TaggedData<T>>> {
        self.inner.core.inbound.stream()
    }

    /// Non-fatal errors of the group and its children.
    pub fn subscribe_errors(&self, observer: impl Observer<Error> + 'static) -> Subscription {
        self.inner.core.errors.subscribe(Box::new(observer))
    }

    /// A crossbeam sender of outbound items, forwarded by a `rxws-group-sink` thread.
    ///
    /// # Errors
    /// [`Error::AlreadyClosed`] after dispose.
    pub fn sink(&self) -> Result<Sender<TaggedData<T>>> {
        let weak = Arc::downgrade(&self.inner);
        self.inner.core.sink("group", move |item| {
            if let Some(inner) = weak.upgrade() {
                inner.on_next(item);
            }
        })
    }

    /// Sends one item to its path's client, reporting failures directly.
    ///
    /// # Errors
    /// As [`RxWSClient::send`], plus [`Error::Config`] for a bad path.
    pub fn send(&self, item: TaggedData<T>) -> Result<()> {
        self.inner.send(item)
    }

    /// Sends one item (errors go to the errors stream).
    pub fn on_next(&self, item: TaggedData<T>) {
        self.inner.on_next(item)
    }

    /// Completes every child gracefully, then the group.
    pub fn on_completed(&self) {
        self.inner.complete(Notification::Completed)
    }

    /// Fails every child and the group with `error`.
    pub fn on_error(&self, error: Error) {
        self.inner.complete(Notification::Error(error))
    }

    /// Disposes every child and the group. Idempotent, bounded, safe from callbacks.
    pub fn dispose(&self) {
        self.inner.dispose()
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

impl<T: Clone + Send + 'static> Drop for RxWSClientGroup<T> {
    fn drop(&mut self) {
        self.inner.dispose();
    }
}

impl<T: Clone + Send + 'static> Observer<TaggedData<T>> for RxWSClientGroup<T> {
    fn on_next(&self, item: TaggedData<T>) {
        self.inner.on_next(item)
    }
    fn on_error(&self, error: Error) {
        self.inner.complete(Notification::Error(error))
    }
    fn on_completed(&self) {
        self.inner.complete(Notification::Completed)
    }
}

impl<T: Clone + Send + 'static> GroupHandle<T> {
    /// See [`RxWSClientGroup::on_next`].
    pub fn on_next(&self, item: TaggedData<T>) {
        if let Some(i) = self.inner.upgrade() {
            i.on_next(item)
        }
    }
    /// See [`RxWSClientGroup::dispose`].
    pub fn dispose(&self) {
        if let Some(i) = self.inner.upgrade() {
            i.dispose()
        }
    }
}

impl<T: Clone + Send + 'static> Inner<T> {
    fn ensure_client(&self, path: &str) -> Result<Arc<RxWSClient<T>>> {
        // One lock around lookup and creation: exactly one client per path (BUG-2).
        let mut clients = self.clients.lock();
        if self.core.threads.is_stopping() || self.core.inbound.is_terminated() {
            return Err(Error::AlreadyClosed {
                component: Box::from(&*self.core.name),
            });
        }
        if let Some(c) = clients.get(path) {
            return Ok(c.clone());
        }
        let conn = self.base.with_path(path)?;
        let cfg = self
            .cfg
            .clone()
            .name(format!("{}:{}", self.core.name, path));
        let inbound = self.core.inbound.clone();
        let errors = self.core.errors.clone();
        let tag: Arc<str> = Arc::from(path);
        // Forwarding is in place before the client connects: no early message is missed.
        let client = RxWSClient::build(
            conn,
            self.datatypes.for_path(path),
            cfg,
            Some(&self.core.threads),
            |c| {
                c.subscribe(move |data: T| inbound.next(TaggedData::new(tag.clone(), data)))
                    .detach();
                c.subscribe_errors(move |e: Error| errors.next(e)).detach();
            },
        )?;
        let client = Arc::new(client);
        clients.insert(path.to_owned(), client.clone());
        log::info!(component = &*self.core.name, path; "{}", event::GROUP_PATH_OPENED);
        Ok(client)
    }

    fn send(&self, item: TaggedData<T>) -> Result<()> {
        self.ensure_client(&item.tag)?.send(item.data)
    }

    fn on_next(&self, item: TaggedData<T>) {
        if let Err(e) = self.send(item) {
            self.core.report(e);
        }
    }

    fn children(&self) -> Vec<Arc<RxWSClient<T>>> {
        self.clients.lock().values().cloned().collect()
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
        if !self.core.threads.begin_stop() {
            self.core.threads.wait_stopped();
            return;
        }
        self.core.abort_subjects();
        for c in self.children() {
            c.dispose();
        }
        self.core.threads.join_all();
        self.core.terminate(Notification::Completed);
        log::info!(component = &*self.core.name; "{}", event::GROUP_STOPPED);
    }
}
