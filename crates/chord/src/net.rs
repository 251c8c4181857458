//! The tokio-driven [`ChordSocket`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rs2p_base::{Keypair, PeerId};
use rs2p_mesh::{Context, Handler, InboundMessage, MeshOptions, MeshSocket, Verdict};
use rs2p_persist::{DataOptions, DiskLink, DiskStats, Expect, KeyEntry, Op};
use tokio::sync::oneshot;

use crate::proto::{ChordMachine, ChordStats, Completion, NodeRef, Outcome, PROTOCOL};
use crate::ring::dist;
use crate::{ChordConfig, ChordError};

/// How to start a [`ChordSocket`].
#[derive(Debug, Clone)]
pub struct ChordOptions {
    /// The mesh underneath (address, network, identity, limits). The default allows 128 peers:
    /// a chord node keeps links to its successors, predecessors and fingers, and is a finger of
    /// about as many.
    pub mesh: MeshOptions,
    /// The ring's settings.
    pub chord: ChordConfig,
    /// Where to keep the node's identity and the records it holds across restarts (see
    /// `rs2p_persist`); `None` (the default) keeps everything in memory. A chord write is
    /// acknowledged by the key's owner, so `durable` is refused here: the records a node holds
    /// are group-committed, and copies on `replicas` nodes cover a crash.
    pub data: Option<DataOptions>,
}

impl Default for ChordOptions {
    fn default() -> Self {
        let mut mesh = MeshOptions::default();
        mesh.config.max_peers = 128;
        Self {
            mesh,
            chord: ChordConfig::default(),
            data: None,
        }
    }
}

struct Inner {
    machine: ChordMachine,
    waiters: HashMap<u64, oneshot::Sender<Completion>>,
    disk: Option<Arc<DiskLink>>,
}

impl Inner {
    fn persist(&mut self) {
        let Some(disk) = &self.disk else { return };
        let keys = self.machine.take_dirty();
        if keys.is_empty() {
            return;
        }
        let store = self.machine.store();
        disk.submit(keys.into_iter().map(|k| match store.get(&k) {
            Some(s) => Op::Put(
                k,
                KeyEntry {
                    records: vec![s.clone()],
                    ..KeyEntry::default()
                },
            ),
            None => Op::Del(k),
        }));
    }

    fn deliver(&mut self) {
        for c in self.machine.take_completions() {
            if let Some(tx) = self.waiters.remove(&c.id) {
                let _ = tx.send(c);
            }
        }
    }
}

/// The machine shared by the mesh task (which calls it as a [`Handler`]) and the user's handles;
/// finished operations go to their waiters after every call.
#[derive(Clone)]
struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<R>(&self, f: impl FnOnce(&mut ChordMachine) -> R) -> R {
        let mut inner = self.lock();
        let r = f(&mut inner.machine);
        inner.persist();
        inner.deliver();
        r
    }
}

impl Handler for Shared {
    fn protocol(&self) -> &str {
        PROTOCOL
    }
    fn on_peer_connected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.with(|m| m.on_peer_connected(cx, peer));
    }
    fn on_peer_disconnected(&mut self, cx: &mut Context<'_>, peer: PeerId) {
        self.with(|m| m.on_peer_disconnected(cx, peer));
    }
    fn on_message(&mut self, cx: &mut Context<'_>, msg: InboundMessage) -> Verdict {
        self.with(|m| m.on_message(cx, msg))
    }
    fn on_timer(&mut self, cx: &mut Context<'_>, token: u64) {
        self.with(|m| m.on_timer(cx, token));
    }
}

/// A dictionary spread over the peers of a chord ring (py2p's `ChordSocket`): each key lives on
/// its successor on the ring and the next `replicas − 1` nodes, and is found in O(log n) hops.
///
/// Every method asks the ring, so every method is async and can fail: with
/// [`ChordError::Unreachable`] when no answer came within `request_timeout × attempts`. A
/// missing key answers `None` as soon as its owner says so. Writes are signed by this node and
/// the newest write of a key wins on every replica (the sync socket's order). Keys and values are
/// bytes; anything `AsRef<[u8]>` works.
///
/// A socket starts as a ring of its own; connect it to any node of a ring
/// (`socket.mesh().connect(addr)`) and it joins that ring ([`ChordSocket::wait_joined`]).
/// Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct ChordSocket {
    mesh: MeshSocket,
    shared: Shared,
    cfg: ChordConfig,
}

impl std::fmt::Debug for ChordSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChordSocket")
            .field("mesh", &self.mesh)
            .finish_non_exhaustive()
    }
}

fn bytes(b: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(b.as_ref())
}

impl ChordSocket {
    /// Starts a mesh node and the chord socket on it. With [`ChordOptions::data`], the node's
    /// identity and records come from (and go to) its data directory.
    pub async fn bind(mut opts: ChordOptions) -> Result<Self, ChordError> {
        let network_id = *opts.mesh.network.id();
        // Checked before the data directory is opened: a refused setting changes nothing.
        opts.chord
            .check_frames(opts.mesh.config.max_frame_len)
            .map_err(ChordError::Config)?;
        let mut restored = None;
        let disk =
            match &opts.data {
                Some(data) if data.durable => return Err(ChordError::Data(
                    "durable mode is for the sync socket: a chord write is acknowledged by its \
                     owner, and kept by its replicas"
                        .into(),
                )),
                Some(data) => {
                    let expect = Expect {
                        kind: "chord",
                        network: network_id,
                        settings: String::new(),
                        keypair: opts.mesh.keypair.clone(),
                    };
                    let (link, loaded) = DiskLink::open_async(data, expect)
                        .await
                        .map_err(|e| ChordError::Data(e.to_string()))?;
                    opts.mesh.keypair = Some(loaded.keypair.clone());
                    restored = Some(loaded);
                    Some(link)
                }
                None => None,
            };
        let keypair = opts
            .mesh
            .keypair
            .get_or_insert_with(Keypair::generate)
            .clone();
        let mut machine = ChordMachine::new(opts.chord.clone(), keypair, network_id);
        if let Some(loaded) = restored {
            machine.restore(loaded.keys.into_iter().flat_map(|(_, e)| e.records));
        }
        // On failure the data directory closes as `disk` drops (`Disk` closes itself on drop).
        let mesh = MeshSocket::bind(opts.mesh).await?;
        let shared = Shared(Arc::new(Mutex::new(Inner {
            machine,
            waiters: HashMap::new(),
            disk,
        })));
        mesh.register(shared.clone()).await?;
        Ok(Self {
            mesh,
            shared,
            cfg: opts.chord,
        })
    }

    /// The mesh socket underneath: connect to peers, list them, close.
    pub fn mesh(&self) -> &MeshSocket {
        &self.mesh
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.mesh.local_id()
    }

    /// This node on the ring.
    pub fn node(&self) -> NodeRef {
        self.shared.lock().machine.node().clone()
    }

    /// Whether this node is part of a ring with other nodes.
    pub fn is_joined(&self) -> bool {
        let inner = self.shared.lock();
        inner.machine.is_joined() && !inner.machine.predecessors().is_empty()
    }

    /// Waits until this node is part of a ring with other nodes, up to `timeout`; returns
    /// whether it is.
    pub async fn wait_joined(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_joined() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Runs `start` in the node and waits for the operation it started.
    async fn op(
        &self,
        start: impl FnOnce(&mut ChordMachine, &mut Context<'_>) -> Result<u64, ChordError>
            + Send
            + 'static,
    ) -> Result<Completion, ChordError> {
        let (tx, rx) = oneshot::channel();
        let shared = self.shared.clone();
        self.mesh
            .call(PROTOCOL, move |cx| {
                let mut inner = shared.lock();
                let id = start(&mut inner.machine, cx)?;
                inner.waiters.insert(id, tx);
                inner.deliver();
                Ok::<(), ChordError>(())
            })
            .await??;
        let c = rx.await.map_err(|_| ChordError::Closed)?;
        c.result.clone()?;
        Ok(c)
    }

    /// The value of `key`, or `None` when it has none.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, ChordError> {
        Ok(self.get_with_hops(key).await?.0)
    }

    /// [`ChordSocket::get`], with the hops the lookup took (for measurements).
    pub async fn get_with_hops(
        &self,
        key: impl AsRef<[u8]>,
    ) -> Result<(Option<Bytes>, u32), ChordError> {
        let k = bytes(key);
        let c = self.op(move |m, cx| m.get(cx, k)).await?;
        match c.result {
            Ok(Outcome::Got(r)) => Ok((r.filter(|r| !r.tombstone).map(|r| r.value), c.hops)),
            _ => Err(ChordError::Unreachable { attempts: 0 }),
        }
    }

    /// Whether `key` has a value.
    pub async fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool, ChordError> {
        Ok(self.get(key).await?.is_some())
    }

    /// Writes `key` (`None` deletes it), retrying after a newer write up to three times.
    async fn write(&self, key: Bytes, value: Option<Bytes>) -> Result<(), ChordError> {
        let mut after = 0;
        for _ in 0..3 {
            let (k, v) = (key.clone(), value.clone());
            let c = self.op(move |m, cx| m.put(cx, k, v, after)).await?;
            match c.result {
                Ok(Outcome::Put {
                    applied: false,
                    newest_ms,
                    ..
                }) => after = newest_ms,
                Ok(_) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Err(ChordError::Superseded)
    }

    /// Sets `key` to `value` on its replicas; returns once the owner stored it and its replicas
    /// acknowledged (or `replicate_timeout` passed).
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), ChordError> {
        self.write(bytes(key), Some(bytes(value))).await
    }

    /// Sets many keys, concurrently; the first error is returned (the other writes may have
    /// happened).
    pub async fn update<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), ChordError> {
        let mut set = tokio::task::JoinSet::new();
        for (k, v) in items {
            let (s, k, v) = (self.clone(), bytes(k), bytes(v));
            set.spawn(async move { s.write(k, Some(v)).await });
        }
        let mut first = Ok(());
        while let Some(r) = set.join_next().await {
            let r = r.map_err(|_| ChordError::Closed).and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// Deletes `key` (a signed tombstone on its replicas); succeeds whether or not it existed.
    pub async fn del(&self, key: impl AsRef<[u8]>) -> Result<(), ChordError> {
        self.write(bytes(key), None).await
    }

    /// Deletes `key` and returns its value ([`ChordError::NotFound`] when it had none).
    pub async fn pop(&self, key: impl AsRef<[u8]>) -> Result<Bytes, ChordError> {
        let k = bytes(key);
        let v = self.get(&k).await?.ok_or(ChordError::NotFound)?;
        self.write(k, None).await?;
        Ok(v)
    }

    /// Deletes some key and returns it with its value ([`ChordError::NotFound`] when the ring
    /// is empty).
    pub async fn popitem(&self) -> Result<(Bytes, Bytes), ChordError> {
        let (k, _) = self
            .walk(true, 1)
            .await?
            .into_iter()
            .next()
            .ok_or(ChordError::NotFound)?;
        let v = self.pop(&k).await?;
        Ok((k, v))
    }

    /// Walks the ring from this node's position: one page per owner (or more for owners with
    /// many keys). Stops after `stop_after` keys if nonzero.
    ///
    /// Not a snapshot: keys written during the walk may or may not appear. A page whose owner
    /// fails mid-walk is asked again (the next attempt reaches the new owner), so a failure costs
    /// time, not keys, unless every replica of some keys failed at once.
    async fn walk(
        &self,
        values: bool,
        stop_after: usize,
    ) -> Result<BTreeMap<Bytes, Bytes>, ChordError> {
        let start = self.node().pos;
        let mut after = start;
        let mut travelled: u128 = 0;
        let mut out = BTreeMap::new();
        loop {
            let c = self.op(move |m, cx| Ok(m.range(cx, after))).await?;
            let Ok(Outcome::Range {
                records, covered, ..
            }) = c.result
            else {
                return Err(ChordError::Unreachable { attempts: 0 });
            };
            for r in records {
                out.insert(r.key, if values { r.value } else { Bytes::new() });
            }
            let step = dist(after, covered);
            travelled += u128::from(step);
            after = covered;
            let full = step == 0 || travelled >= 1u128 << 64;
            if full || (stop_after > 0 && out.len() >= stop_after) {
                return Ok(out);
            }
        }
    }

    /// Every key of the ring, sorted (a walk; see [`ChordSocket::items`]).
    pub async fn keys(&self) -> Result<Vec<Bytes>, ChordError> {
        Ok(self.walk(false, 0).await?.into_keys().collect())
    }

    /// Every value of the ring, in key order (a walk; see [`ChordSocket::items`]).
    pub async fn values(&self) -> Result<Vec<Bytes>, ChordError> {
        Ok(self.walk(true, 0).await?.into_values().collect())
    }

    /// Every key and value of the ring, sorted by key: each owner in turn sends its keys (in
    /// pages of `transfer_chunk` bytes). Not a snapshot: writes during the walk may or may not
    /// show. If a peer fails mid-walk, its page is asked again of the node that took over its
    /// keys (its successor holds them as a replica), so the walk takes longer but loses nothing
    /// unless all `replicas` holders of some key failed.
    pub async fn items(&self) -> Result<Vec<(Bytes, Bytes)>, ChordError> {
        Ok(self.walk(true, 0).await?.into_iter().collect())
    }

    /// How many keys the ring holds (a walk).
    pub async fn len(&self) -> Result<usize, ChordError> {
        Ok(self.walk(false, 0).await?.len())
    }

    /// Whether the ring holds no key (a walk that stops at the first key).
    pub async fn is_empty(&self) -> Result<bool, ChordError> {
        Ok(self.walk(false, 1).await?.is_empty())
    }

    /// The counters.
    pub fn stats(&self) -> ChordStats {
        self.shared.lock().machine.stats().clone()
    }

    /// How many records this node holds (as owner or replica; tombstones included).
    pub fn held(&self) -> usize {
        self.shared.lock().machine.store().len()
    }

    /// The ring settings.
    pub fn config(&self) -> &ChordConfig {
        &self.cfg
    }

    /// Leaves the ring cleanly (hands this node's keys to its successor), then closes the node.
    pub async fn close(&self) -> Result<(), ChordError> {
        let shared = self.shared.clone();
        let _ = self
            .mesh
            .call(PROTOCOL, move |cx| shared.with(|m| m.leave(cx)))
            .await;
        // Let the hand-over frames leave before the connections close.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let closed = self.mesh.close().await;
        let disk = self.shared.lock().disk.clone();
        if let Some(d) = disk {
            d.close_async()
                .await
                .map_err(|e| ChordError::Data(e.to_string()))?;
        }
        Ok(closed?)
    }

    /// The data directory's counters (commits, keys written), if the node has one.
    pub fn disk_stats(&self) -> Option<DiskStats> {
        self.shared.lock().disk.as_ref().map(|d| d.stats())
    }
}
