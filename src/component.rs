//! What every component shares: name, threads, the inbound subject, the errors stream, counters
//! and the channel-style sink; and its public front end, written once ([`front_end!`]) for the
//! server, the client, the group and the gateway node.

use std::sync::Arc;

use crossbeam_channel::{bounded, select, Sender};

use crate::error::{Error, Result, SendError};
use crate::reactive::{Notification, Subject};
use crate::stats::Stats;
use crate::threads::Threads;

pub(crate) struct Core<In> {
    pub(crate) name: Arc<str>,
    pub(crate) threads: Arc<Threads>,
    pub(crate) inbound: Arc<Subject<In>>,
    pub(crate) errors: Arc<Subject<Error>>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) stream_capacity: usize,
}

impl<In: Clone + Send + 'static> Core<In> {
    pub(crate) fn new(
        name: Arc<str>,
        stack_size: usize,
        stream_capacity: usize,
        parent: Option<&Threads>,
    ) -> Self {
        Core {
            threads: Threads::new(name.clone(), stack_size, parent),
            inbound: Subject::new(name.to_string(), stream_capacity),
            errors: Subject::new(name.to_string(), stream_capacity),
            stats: Arc::new(Stats::default()),
            stream_capacity,
            name,
        }
    }

    /// Reports a non-fatal error (encode failure, refused item) on the errors stream.
    pub(crate) fn report(&self, e: Error) {
        self.errors.next(e);
    }

    /// Starts a dispose: marks the component stopping and stops delivery to subscribers (and
    /// unblocks deliveries waiting on them, so their threads can be joined). True for the first
    /// caller, who goes on to close and join; a later caller has waited for that to finish.
    pub(crate) fn begin_dispose(&self) -> bool {
        if !self.threads.begin_stop() {
            self.threads.wait_stopped();
            return false;
        }
        self.inbound.abort();
        self.errors.abort();
        true
    }

    pub(crate) fn terminate(&self, n: Notification<In>) {
        self.inbound.terminate(n);
        self.errors.terminate(Notification::Completed);
    }

    /// `AlreadyClosed` for this component.
    pub(crate) fn closed(&self) -> Error {
        Error::closed(&self.name)
    }

    /// A crossbeam sender whose items a named thread forwards to `forward` until every sender
    /// is dropped or the component stops.
    pub(crate) fn sink<Out: Send + 'static>(
        &self,
        kind: &str,
        forward: impl Fn(Out) + Send + 'static,
    ) -> Result<Sender<Out>> {
        let (tx, rx) = bounded::<Out>(self.stream_capacity);
        let stop = self.threads.stop_signal().clone();
        self.threads
            .spawn(format!("rxws-{kind}-sink"), move || loop {
                select! {
                    recv(rx) -> item => match item {
                        Ok(item) => forward(item),
                        Err(_) => return,
                    },
                    recv(stop) -> _ => return,
                }
            })?;
        Ok(tx)
    }
}

/// The inside of a component, as its front end sees it.
pub(crate) trait Endpoint: Send + Sync + 'static {
    /// Items the component emits.
    type In: Clone + Send + 'static;
    /// Items the component takes.
    type Out: Send + 'static;
    /// `server`, `client`, `group`: names the sink thread.
    const KIND: &'static str;
    fn core(&self) -> &Core<Self::In>;
    /// Sends one item; hands it back with the reason when it was not accepted.
    fn send(&self, item: Self::Out) -> std::result::Result<(), SendError<Self::Out>>;
    /// Graceful (or failing) completion, then dispose.
    fn complete(&self, n: Notification<Self::In>);
    /// Stops now and joins every thread.
    fn dispose(&self);

    /// `send`, with a refusal reported on the errors stream.
    fn on_next(&self, item: Self::Out) {
        if let Err(e) = self.send(item) {
            self.core().report(e.into_error());
        }
    }
}

/// Writes the public front end of a component once: on the owner type (`$owner<T>`, holding
/// `inner: Arc<$inner<T>>`) `name`, `handle`, `subscribe`, `subscribe_observer`, `stream`,
/// `subscribe_errors`, `sink`, `send`, `on_next`, `on_completed`, `on_error`, `dispose`,
/// `thread_count`, `Drop`, `Observer`, `Debug`; on the weak handle (`$handle<T>`, holding
/// `inner: Weak<$inner<T>>`) the sending and ending methods, `Observer`, `Clone`, `Debug`.
macro_rules! front_end {
    ($owner:ident, $handle:ident, $inner:ident, $in:ty, $out:ty) => {
        $crate::component::front_end!($owner, $handle, $inner, $in, $out, Send);
    };
    ($owner:ident, $handle:ident, $inner:ident, $in:ty, $out:ty, $bound:path) => {
        impl<T: Clone + Send + 'static + $bound> $owner<T> {
            /// The component's name (logs, errors, telemetry).
            pub fn name(&self) -> &str {
                &$crate::component::Endpoint::core(&*self.inner).name
            }

            /// A weak, cloneable handle for use inside callbacks (no reference cycle): calls
            /// on it do nothing once the component is gone.
            pub fn handle(&self) -> $handle<T> {
                $handle {
                    inner: std::sync::Arc::downgrade(&self.inner),
                }
            }

            /// Calls `f` for each inbound item, on the component's threads, one call at a time.
            /// The subscription lasts until [`Subscription::unsubscribe`](crate::Subscription::unsubscribe)
            /// or the component ends; [`Subscription::guard`](crate::Subscription::guard) ties it
            /// to a scope instead.
            pub fn subscribe(
                &self,
                f: impl Fn($in) + Send + Sync + 'static,
            ) -> $crate::Subscription {
                $crate::component::Endpoint::core(&*self.inner)
                    .inbound
                    .subscribe(Box::new(f))
            }

            /// Like [`subscribe`](Self::subscribe), with an [`Observer`](crate::Observer) that
            /// also receives the terminal notification (`on_completed` / `on_error`).
            pub fn subscribe_observer(
                &self,
                observer: impl $crate::Observer<$in> + 'static,
            ) -> $crate::Subscription {
                $crate::component::Endpoint::core(&*self.inner)
                    .inbound
                    .subscribe(Box::new(observer))
            }

            /// Inbound items as a bounded crossbeam receiver (`stream_capacity`); a full
            /// receiver slows the connections feeding it. Ends with one terminal notification.
            pub fn stream(&self) -> crossbeam_channel::Receiver<$crate::Notification<$in>> {
                $crate::component::Endpoint::core(&*self.inner)
                    .inbound
                    .stream()
            }

            /// Non-fatal errors: items not accepted by `on_next`, messages that failed to
            /// decode, failed connection attempts.
            pub fn subscribe_errors(
                &self,
                f: impl Fn($crate::Error) + Send + Sync + 'static,
            ) -> $crate::Subscription {
                $crate::component::Endpoint::core(&*self.inner)
                    .errors
                    .subscribe(Box::new(f))
            }

            /// A crossbeam sender of outbound items, forwarded by a sink thread of the
            /// component (refusals go to the errors stream).
            ///
            /// # Errors
            /// [`Error::AlreadyClosed`](crate::Error::AlreadyClosed) after dispose.
            pub fn sink(&self) -> $crate::Result<crossbeam_channel::Sender<$out>> {
                let weak = std::sync::Arc::downgrade(&self.inner);
                $crate::component::Endpoint::core(&*self.inner).sink(
                    <$inner<T> as $crate::component::Endpoint>::KIND,
                    move |item| {
                        if let Some(inner) = weak.upgrade() {
                            $crate::component::Endpoint::on_next(&*inner, item);
                        }
                    },
                )
            }

            /// Sends one item.
            ///
            /// # Errors
            /// The item was not accepted: the reason, and the item where it was not consumed
            /// (see [`SendError`](crate::SendError)).
            pub fn send(&self, item: $out) -> std::result::Result<(), $crate::SendError<$out>> {
                $crate::component::Endpoint::send(&*self.inner, item)
            }

            /// Sends one item; a refusal goes to the errors stream.
            pub fn on_next(&self, item: $out) {
                $crate::component::Endpoint::on_next(&*self.inner, item)
            }

            /// Graceful shutdown: flushes what is queued and closes with a close handshake
            /// (both bounded), completes subscribers, joins every thread.
            pub fn on_completed(&self) {
                $crate::component::Endpoint::complete(&*self.inner, $crate::Notification::Completed)
            }

            /// Closes with 1011, fails subscribers with `error`, joins every thread.
            pub fn on_error(&self, error: $crate::Error) {
                $crate::component::Endpoint::complete(
                    &*self.inner,
                    $crate::Notification::Error(error),
                )
            }

            /// Stops now and joins every thread the component started (bounded, about 2 s even
            /// with unresponsive peers). Idempotent; safe from any thread, including a callback.
            pub fn dispose(&self) {
                $crate::component::Endpoint::dispose(&*self.inner)
            }
        }

        impl<T: Clone + Send + 'static + $bound> Drop for $owner<T> {
            fn drop(&mut self) {
                $crate::component::Endpoint::dispose(&*self.inner)
            }
        }

        impl<T: Clone + Send + 'static + $bound> $crate::Observer<$out> for $owner<T> {
            fn on_next(&self, item: $out) {
                $owner::on_next(self, item)
            }
            fn on_error(&self, error: $crate::Error) {
                $owner::on_error(self, error)
            }
            fn on_completed(&self) {
                $owner::on_completed(self)
            }
        }

        impl<T: Clone + Send + 'static + $bound> std::fmt::Debug for $owner<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($owner))
                    .field("name", &self.name())
                    .finish_non_exhaustive()
            }
        }

        /// A weak, cloneable handle to its component, for use inside callbacks. Calls on a
        /// handle whose component is gone do nothing (`send` returns `AlreadyClosed`).
        pub struct $handle<T: Clone + Send + 'static + $bound> {
            inner: std::sync::Weak<$inner<T>>,
        }

        impl<T: Clone + Send + 'static + $bound> Clone for $handle<T> {
            fn clone(&self) -> Self {
                $handle {
                    inner: self.inner.clone(),
                }
            }
        }

        impl<T: Clone + Send + 'static + $bound> std::fmt::Debug for $handle<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("alive", &(self.inner.strong_count() > 0))
                    .finish()
            }
        }

        impl<T: Clone + Send + 'static + $bound> $handle<T> {
            #[doc = concat!("See [`", stringify!($owner), "::send`].")]
            ///
            /// # Errors
            /// As the component's `send`; `AlreadyClosed` when the component is gone.
            pub fn send(&self, item: $out) -> std::result::Result<(), $crate::SendError<$out>> {
                match self.inner.upgrade() {
                    Some(i) => $crate::component::Endpoint::send(&*i, item),
                    None => Err($crate::SendError::new(
                        $crate::Error::closed(stringify!($owner)),
                        Some(item),
                    )),
                }
            }
            #[doc = concat!("See [`", stringify!($owner), "::on_next`].")]
            pub fn on_next(&self, item: $out) {
                if let Some(i) = self.inner.upgrade() {
                    $crate::component::Endpoint::on_next(&*i, item)
                }
            }
            #[doc = concat!("See [`", stringify!($owner), "::on_completed`].")]
            pub fn on_completed(&self) {
                if let Some(i) = self.inner.upgrade() {
                    $crate::component::Endpoint::complete(&*i, $crate::Notification::Completed)
                }
            }
            #[doc = concat!("See [`", stringify!($owner), "::on_error`].")]
            pub fn on_error(&self, error: $crate::Error) {
                if let Some(i) = self.inner.upgrade() {
                    $crate::component::Endpoint::complete(&*i, $crate::Notification::Error(error))
                }
            }
            #[doc = concat!("See [`", stringify!($owner), "::dispose`].")]
            pub fn dispose(&self) {
                if let Some(i) = self.inner.upgrade() {
                    $crate::component::Endpoint::dispose(&*i)
                }
            }
        }

        impl<T: Clone + Send + 'static + $bound> $crate::Observer<$out> for $handle<T> {
            fn on_next(&self, item: $out) {
                $handle::on_next(self, item)
            }
            fn on_error(&self, error: $crate::Error) {
                $handle::on_error(self, error)
            }
            fn on_completed(&self) {
                $handle::on_completed(self)
            }
        }
    };
}

pub(crate) use front_end;
