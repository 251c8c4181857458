//! The tokio-driven [`SyncSocket`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use rs2p_base::{Keypair, PeerId};
use rs2p_mesh::net::{EventItem, Events};
use rs2p_mesh::{Context, Handler, InboundMessage, MeshOptions, MeshSocket, Verdict};
use rs2p_persist::{DataOptions, DiskLink, DiskStats, Expect, KeyEntry, Op};
use tokio::sync::broadcast;

use crate::proto::{SyncEvent, SyncMachine, SyncStats};
use crate::{DelError, SetError, SyncConfig, SyncError};

/// Bytes of keys and values per call of the node's task in [`SyncSocket::set_many`].
const SET_MANY_SLICE: usize = 32 * 1024;

/// How to start a [`SyncSocket`].
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// The mesh underneath (address, network, identity, limits).
    pub mesh: MeshOptions,
    /// The dictionary's settings.
    pub sync: SyncConfig,
    /// Where to keep the node's identity and records across restarts (see `rs2p_persist`);
    /// `None` (the default) keeps everything in memory.
    pub data: Option<DataOptions>,
}

/// The settings a data directory records, since they change what its records mean.
fn settings(cfg: &SyncConfig) -> String {
    format!(
        "leasing={} lease_ms={}{}",
        u8::from(cfg.leasing),
        crate::config::ms(cfg.lease),
        if cfg.signed { "" } else { " unsigned=1" }
    )
}

/// The store-wide cutoff, kept beside the keys.
const CUTOFF: &str = "x-sync-cutoff";

/// The machine shared between the mesh task (which calls it as a [`Handler`]) and the user's
/// handles (which read it directly); events go out through a broadcast channel after every call.
#[derive(Clone)]
struct Shared {
    protocol: &'static str,
    machine: Arc<Mutex<SyncMachine>>,
    events: broadcast::Sender<SyncEvent>,
    disk: Option<Arc<DiskLink>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SyncMachine> {
        self.machine.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<R>(&self, f: impl FnOnce(&mut SyncMachine) -> R) -> R {
        let mut m = self.lock();
        let r = f(&mut m);
        if self.events.receiver_count() == 0 {
            m.discard_events();
        } else {
            for e in m.take_events() {
                let _ = self.events.send(e);
            }
        }
        if let Some(disk) = &self.disk {
            let (keys, cutoff) = m.take_dirty();
            if !keys.is_empty() || cutoff.is_some() {
                let store = m.store();
                let ops = keys.into_iter().map(|k| match store.key(&k) {
                    Some(st) => {
                        let (cutoff, base) = store.checkpoint(st);
                        let entry = KeyEntry {
                            cutoff,
                            base: base.cloned(),
                            records: st.records().to_vec(),
                        };
                        Op::Put(k, entry)
                    }
                    None => Op::Del(k),
                });
                let meta = cutoff.map(|c| Op::Meta(CUTOFF.into(), c.to_le_bytes().to_vec()));
                disk.submit(ops.chain(meta));
            }
        }
        r
    }
}

impl Handler for Shared {
    fn protocol(&self) -> &str {
        self.protocol
    }
    fn verifies_own_payloads(&self) -> bool {
        true
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

/// A dictionary replicated on every peer of the mesh (py2p's `SyncSocket`).
///
/// Reads (`get`, `keys`, `len`, …) are local and never wait for the network. Writes are signed,
/// applied locally, and flooded; with leasing on (the default) a key written by another peer
/// cannot be overwritten or deleted here until its lease expires ([`SetError::LeaseHeld`]).
/// Keys and values are bytes; anything `AsRef<[u8]>` works (`"测试"`, `b"k"`, `Vec<u8>`, `Bytes`).
///
/// Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct SyncSocket {
    mesh: MeshSocket,
    shared: Shared,
}

impl std::fmt::Debug for SyncSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncSocket")
            .field("mesh", &self.mesh)
            .finish_non_exhaustive()
    }
}

fn bytes(b: impl AsRef<[u8]>) -> Bytes {
    Bytes::copy_from_slice(b.as_ref())
}

impl SyncSocket {
    /// Starts a mesh node and the sync socket on it. With [`SyncOptions::data`], the node's
    /// identity and dictionary come from (and go to) its data directory; a directory that is
    /// corrupt, in use, or was written for another network, identity or lease setting is
    /// refused ([`SyncError::Data`]).
    pub async fn bind(mut opts: SyncOptions) -> Result<Self, SyncError> {
        let network_id = *opts.mesh.network.id();
        // Checked before the data directory is opened: a refused setting changes nothing.
        crate::proto::live_batch_bytes(&opts.sync, opts.mesh.config.max_frame_len)
            .map_err(SyncError::Config)?;
        let mut restored = None;
        let disk = match &opts.data {
            Some(data) => {
                let expect = Expect {
                    kind: "sync",
                    network: network_id,
                    settings: settings(&opts.sync),
                    keypair: opts.mesh.keypair.clone(),
                };
                let (link, loaded) = DiskLink::open_async(data, expect).await?;
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
        let mut machine = SyncMachine::new(opts.sync, keypair, network_id);
        machine
            .fit_frames(opts.mesh.config.max_frame_len)
            .map_err(SyncError::Config)?;
        if let Some(loaded) = restored {
            let cutoff = loaded
                .meta
                .get(CUTOFF)
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(0, u64::from_le_bytes);
            machine.restore(
                loaded
                    .keys
                    .into_iter()
                    .map(|(k, e)| (k, e.cutoff, e.base, e.records)),
                cutoff,
            );
        }
        // On failure the data directory closes as `disk` drops (`Disk` closes itself on drop).
        let mesh = MeshSocket::bind(opts.mesh).await?;
        let (events, _) = broadcast::channel(4096);
        let shared = Shared {
            protocol: machine.protocol(),
            machine: Arc::new(Mutex::new(machine)),
            events,
            disk,
        };
        mesh.register(shared.clone()).await?;
        Ok(Self { mesh, shared })
    }

    /// The mesh socket underneath: connect to peers, list them, close.
    pub fn mesh(&self) -> &MeshSocket {
        &self.mesh
    }

    /// This node's id.
    pub fn local_id(&self) -> PeerId {
        self.mesh.local_id()
    }

    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut SyncMachine, &mut Context<'_>) -> R + Send + 'static,
    ) -> Option<R> {
        let shared = self.shared.clone();
        self.mesh
            .call(self.shared.protocol, move |cx| shared.with(|m| f(m, cx)))
            .await
            .ok()
    }

    /// In durable mode, waits until this node's writes so far are on disk.
    async fn synced(&self) -> Result<(), String> {
        match &self.shared.disk {
            Some(d) => d.synced().await.map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// The data directory's counters (commits, keys written), if the node has one.
    pub fn disk_stats(&self) -> Option<DiskStats> {
        self.shared.disk.as_ref().map(|d| d.stats())
    }

    /// The value of `key`, if it has one.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        self.shared.lock().get(key.as_ref())
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: impl AsRef<[u8]>) -> bool {
        self.get(key).is_some()
    }

    /// The owner and timestamp (Unix ms) of the write `key` shows (js2p's `metatuple`).
    pub fn meta(&self, key: impl AsRef<[u8]>) -> Option<(PeerId, u64)> {
        self.shared
            .lock()
            .store()
            .get(key.as_ref())
            .map(|r| (*r.owner(), r.issued_at()))
    }

    /// The number of keys with a value.
    pub fn len(&self) -> usize {
        self.shared.lock().store().len()
    }

    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key and value, sorted by key: a snapshot, since other peers may change it right
    /// after.
    pub fn items(&self) -> Vec<(Bytes, Bytes)> {
        let m = self.shared.lock();
        let mut v: Vec<(Bytes, Bytes)> =
            m.store().iter().map(|(_, r)| r.key_value_bytes()).collect();
        drop(m);
        v.sort();
        v
    }

    /// Every key, sorted (a snapshot).
    pub fn keys(&self) -> Vec<Bytes> {
        self.items().into_iter().map(|(k, _)| k).collect()
    }

    /// Every value, in key order (a snapshot).
    pub fn values(&self) -> Vec<Bytes> {
        self.items().into_iter().map(|(_, v)| v).collect()
    }

    /// Sets `key` to `value` on every peer. Fails if another peer leases the key.
    pub async fn set(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), SetError> {
        let (k, v) = (bytes(key), bytes(value));
        self.write(move |m, cx| m.set(cx, k, v))
            .await
            .unwrap_or(Err(SetError::Closed))?;
        self.synced().await.map_err(SetError::Storage)
    }

    /// Sets many keys independently, in order: each gets its own result, and one refused (say,
    /// by a lease) does not hold back the others. Unlike [`SyncSocket::update`] this is not all
    /// or none, but the accepted writes still travel signed together: one signature per 32 KiB
    /// of keys and values, not one per write. Two writes to the same key apply in order.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use rs2p_sync::{SyncOptions, SyncSocket};
    /// let s = SyncSocket::bind(SyncOptions::default()).await?;
    /// let results = s.set_many([("a", "1"), ("", "empty keys are refused"), ("b", "2")]).await;
    /// assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
    /// assert_eq!(s.get("b").as_deref(), Some(&b"2"[..]));
    /// # s.close().await?;
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn set_many<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Vec<Result<(), SetError>> {
        let writes: Vec<(Bytes, Option<Bytes>)> = items
            .into_iter()
            .map(|(k, v)| (bytes(k), Some(bytes(v))))
            .collect();
        // In slices, each its own call of the node's task: the task is never held for long,
        // and the first slice is on its way to the peers while the next is signed.
        let mut results = Vec::with_capacity(writes.len());
        for slice in crate::proto::slices(writes, SET_MANY_SLICE) {
            let n = slice.len();
            match self.write(move |m, cx| m.write_each(cx, slice)).await {
                Some(r) => results.extend(r),
                None => results.extend((0..n).map(|_| Err(SetError::Closed))),
            }
        }
        if let Err(e) = self.synced().await {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(SetError::Storage(e.clone()));
            }
        }
        results
    }

    /// Sets many keys, all or none: a lease held by another peer on any key, or one bad key or
    /// value, refuses the whole update. The records are signed together, one batch per 256 KiB
    /// of keys and values, so that each flooded frame stays within the mesh's frame limit.
    pub async fn update<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<(), SetError> {
        let writes: Vec<(Bytes, Option<Bytes>)> = items
            .into_iter()
            .map(|(k, v)| (bytes(k), Some(bytes(v))))
            .collect();
        self.write(move |m, cx| m.write(cx, writes))
            .await
            .unwrap_or(Err(SetError::Closed))?;
        self.synced().await.map_err(SetError::Storage)
    }

    /// Deletes `key` everywhere, relinquishing this node's lease on it.
    pub async fn del(&self, key: impl AsRef<[u8]>) -> Result<(), DelError> {
        let k = bytes(key);
        self.write(move |m, cx| m.del(cx, k))
            .await
            .unwrap_or(Err(DelError::Closed))?;
        self.synced().await.map_err(DelError::Storage)
    }

    /// Deletes `key` and returns its value.
    pub async fn pop(&self, key: impl AsRef<[u8]>) -> Result<Bytes, DelError> {
        let k = bytes(key);
        let v = self
            .write(move |m, cx| m.pop(cx, k))
            .await
            .unwrap_or(Err(DelError::Closed))?;
        self.synced().await.map_err(DelError::Storage)?;
        Ok(v)
    }

    /// Deletes some key this node may delete, and returns it with its value.
    pub async fn popitem(&self) -> Result<(Bytes, Bytes), DelError> {
        let kv = self
            .write(|m, cx| m.popitem(cx))
            .await
            .unwrap_or(Err(DelError::Closed))?;
        self.synced().await.map_err(DelError::Storage)?;
        Ok(kv)
    }

    /// The XOR of the hashes of every record this node keeps: two nodes with the same records
    /// (and so the same dictionary) have the same digest.
    pub fn digest(&self) -> u64 {
        self.shared
            .lock()
            .store()
            .children(1, 0)
            .iter()
            .fold(0, |a, h| a ^ h)
    }

    /// The dictionary's counters.
    pub fn stats(&self) -> SyncStats {
        self.shared.lock().stats().clone()
    }

    /// Events from now on: updates and deletes by any peer, and writes that lost a lease
    /// conflict. A subscriber more than 4096 events behind gets `Lagged` and continues.
    pub fn subscribe(&self) -> SyncEvents {
        Events::new(self.shared.events.subscribe())
    }

    /// Closes the node; with a data directory, writes what is queued and closes it too.
    pub async fn close(&self) -> Result<(), SyncError> {
        let closed = self.mesh.close().await;
        if let Some(d) = self.shared.disk.clone() {
            d.close_async().await?;
        }
        Ok(closed?)
    }
}

/// One item of [`SyncEvents`].
pub type SyncEventItem = EventItem<SyncEvent>;

/// A `Stream` of dictionary events (see [`SyncSocket::subscribe`]).
pub type SyncEvents = Events<SyncEvent>;
