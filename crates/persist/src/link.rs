//! [`DiskLink`]: what a socket's driver holds: the disk, and an async wait for durability.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::{Committed, DataOptions, Disk, DiskStats, Expect, Loaded, Op, PersistError};

#[derive(Debug, Clone, Default)]
struct State {
    upto: u64,
    failures: u64,
    error: String,
}

/// A [`Disk`] shared by a socket's handles: submit changes, then (in durable mode) wait until
/// they are on disk.
#[derive(Debug)]
pub struct DiskLink {
    disk: Disk,
    state: watch::Receiver<State>,
    last: AtomicU64,
}

impl DiskLink {
    /// Opens the directory (see [`Disk::open`]).
    pub fn open(opts: &DataOptions, expect: Expect) -> Result<(Arc<Self>, Loaded), PersistError> {
        let (tx, state) = watch::channel(State::default());
        let (disk, loaded) = Disk::open(opts, expect, move |c| {
            tx.send_modify(|s| match c {
                Committed::Upto(n) => s.upto = n,
                Committed::Failed(e) => {
                    s.failures += 1;
                    s.error = e;
                }
            })
        })?;
        let link = DiskLink {
            disk,
            state,
            last: AtomicU64::new(0),
        };
        Ok((Arc::new(link), loaded))
    }

    /// [`DiskLink::open`] on tokio's blocking pool (it reads the whole directory).
    pub async fn open_async(
        opts: &DataOptions,
        expect: Expect,
    ) -> Result<(Arc<Self>, Loaded), PersistError> {
        let opts = opts.clone();
        tokio::task::spawn_blocking(move || Self::open(&opts, expect))
            .await
            .map_err(|e| PersistError::Write(format!("opening the data directory: {e}")))?
    }

    /// [`DiskLink::close`] on tokio's blocking pool (it waits for the last commit).
    pub async fn close_async(self: Arc<Self>) -> Result<(), PersistError> {
        tokio::task::spawn_blocking(move || self.close())
            .await
            .map_err(|e| PersistError::Write(format!("closing the data directory: {e}")))?
    }

    /// Queues changes for the next group commit.
    pub fn submit(&self, ops: impl IntoIterator<Item = Op>) {
        let seq = self.disk.submit(ops);
        self.last.fetch_max(seq, Ordering::SeqCst);
    }

    /// In durable mode, waits until everything submitted so far is on disk; fails if a commit
    /// fails meanwhile (the changes stay queued and are retried). At once otherwise.
    pub async fn synced(&self) -> Result<(), PersistError> {
        if !self.disk.durable() {
            return Ok(());
        }
        let target = self.last.load(Ordering::SeqCst);
        let mut rx = self.state.clone();
        let failures = rx.borrow().failures;
        loop {
            {
                let s = rx.borrow_and_update();
                if s.upto >= target {
                    return Ok(());
                }
                if s.failures > failures {
                    return Err(PersistError::Write(s.error.clone()));
                }
            }
            if rx.changed().await.is_err() {
                return Err(PersistError::Write("the data directory was closed".into()));
            }
        }
    }

    /// The writer's counters.
    pub fn stats(&self) -> DiskStats {
        self.disk.stats()
    }

    /// Whether writes wait for the disk.
    pub fn durable(&self) -> bool {
        self.disk.durable()
    }

    /// Commits everything queued and stops the writer.
    pub fn close(&self) -> Result<(), PersistError> {
        self.disk.close()
    }
}
