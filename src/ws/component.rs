//! What every component shares: name, threads, the inbound subject, the errors stream, counters
//! and the channel-style sink.

use std::sync::Arc;

use crossbeam_channel::{bounded, select, Sender};

use crate::error::{Error, Result};
use crate::reactive::{Notification, Subject};
use crate::threads::Threads;
use crate::ws::stats::Stats;

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

    /// Abort blocked deliveries, so threads waiting on a subscriber can be joined.
    pub(crate) fn abort_subjects(&self) {
        self.inbound.abort();
        self.errors.abort();
    }

    pub(crate) fn terminate(&self, n: Notification<In>) {
        self.inbound.terminate(n);
        self.errors.terminate(Notification::Completed);
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
