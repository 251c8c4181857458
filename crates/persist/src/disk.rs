//! Opening a data directory, loading it, and the group-committing writer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use redb::{Database, ReadableTable, TableDefinition};
use rs2p_base::wire::pb;
use rs2p_base::{Keypair, Signature};
use rs2p_record::BatchAuth;

use crate::codec::{self, KeyEntry};
use crate::PersistError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("keys");
const BATCHES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("batches");

/// The format written into every data directory; another value is refused.
pub const FORMAT: &[u8] = b"rs2p-data/2";
/// The database file inside a data directory.
pub const FILE: &str = "rs2p.redb";

/// Where a node keeps its data, and when a write counts as done.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataOptions {
    /// The directory (created if missing; must be empty or an rs2p data directory).
    pub dir: PathBuf,
    /// If true, a local write returns only once it is on disk (one `fsync` per group commit).
    /// If false (the default), it returns at once and reaches the disk with the next group
    /// commit: a crash loses at most the writes of the commit window then open.
    pub durable: bool,
}

impl DataOptions {
    /// Data in `dir`, group-committed (not durable).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            durable: false,
        }
    }

    /// The same, with `durable` set.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }
}

/// What a directory must have been written by (checked on every open).
#[derive(Debug, Clone)]
pub struct Expect {
    /// The socket kind ("sync", "chord", …).
    pub kind: &'static str,
    /// The network id.
    pub network: [u8; 32],
    /// Settings that change what the records mean (e.g. "leasing=1 lease=3600000").
    pub settings: String,
    /// The identity the caller was given, if any: the directory's must match it.
    pub keypair: Option<Keypair>,
}

/// A directory's contents at open.
#[derive(Debug)]
pub struct Loaded {
    /// The node's identity (created with the directory).
    pub keypair: Keypair,
    /// Every key's entry.
    pub keys: Vec<(Bytes, KeyEntry)>,
    /// The socket's own values (see [`Op::Meta`]).
    pub meta: HashMap<String, Vec<u8>>,
    /// Whether the directory was created by this open.
    pub created: bool,
}

/// One change to write.
#[derive(Debug, Clone)]
pub enum Op {
    /// The key's entry is now this.
    Put(Bytes, KeyEntry),
    /// The key is no longer kept.
    Del(Bytes),
    /// A value of the socket's own (names starting with `x-`).
    Meta(String, Vec<u8>),
}

/// What the writer reports after each commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Every submission up to this sequence number is on disk.
    Upto(u64),
    /// A commit failed (the writes stay queued and are retried).
    Failed(String),
}

/// The writer's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskStats {
    /// Commits made.
    pub commits: u64,
    /// Key entries written or removed.
    pub keys_written: u64,
    /// Commits that failed (and were retried).
    pub failures: u64,
    /// The last sequence number on disk.
    pub committed: u64,
}

#[derive(Default)]
struct Pending {
    keys: HashMap<Bytes, Option<KeyEntry>>,
    meta: Vec<(String, Vec<u8>)>,
    seq: u64,
    closing: bool,
    /// The writer is waiting for work (not gathering): only then does a submit wake it.
    idle: bool,
    stats: DiskStats,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An open data directory and its writer thread. See the [crate docs](crate).
pub struct Disk {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    durable: bool,
    path: PathBuf,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

fn corrupt(path: &Path, detail: impl std::fmt::Display) -> PersistError {
    PersistError::Corrupt {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn db_error(path: &Path, e: redb::DatabaseError) -> PersistError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => PersistError::InUse {
            path: path.display().to_string(),
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            corrupt(
                path,
                format!("{source} (not an rs2p database, or a damaged one)"),
            )
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => PersistError::Io {
            path: path.display().to_string(),
            source,
        },
        other => corrupt(path, other),
    }
}

fn show(what: &str, v: &[u8]) -> String {
    match what {
        "network" | "identity" => hex_short(v),
        _ => String::from_utf8_lossy(v).into_owned(),
    }
}

fn hex_short(v: &[u8]) -> String {
    v.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Disk {
    /// Opens (or creates) the data directory of `opts`, checks that it was written for
    /// `expect`, loads it, and starts the writer. `on_commit` is called from the writer thread
    /// after every commit.
    pub fn open(
        opts: &DataOptions,
        expect: Expect,
        on_commit: impl Fn(Committed) + Send + 'static,
    ) -> Result<(Disk, Loaded), PersistError> {
        let dir = &opts.dir;
        let io = |source| PersistError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(FILE);
        if !path.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
            return Err(PersistError::NotADataDir {
                path: dir.display().to_string(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        // redb answers most damage with an error, but some (a truncated file) with a panic: a
        // damaged directory must give the caller an error either way.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = Database::create(&path).map_err(|e| db_error(dir, e))?;
            let (keypair, created) = Self::identify(&db, dir, &expect)?;
            let (keys, meta) = Self::load(&db, dir)?;
            Ok::<_, PersistError>((db, keypair, created, keys, meta))
        }));
        let (db, keypair, created, keys, meta) = match opened {
            Ok(r) => r?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(corrupt(
                    dir,
                    format!("the database cannot be read ({what})"),
                ));
            }
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
        });
        let gather = if opts.durable { Duration::ZERO } else { GATHER };
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("rs2p-disk".into())
                .spawn(move || writer(db, shared, gather, on_commit))
                .map_err(io)?
        };
        Ok((
            Disk {
                shared,
                thread: Mutex::new(Some(thread)),
                durable: opts.durable,
                path: dir.clone(),
            },
            Loaded {
                keypair,
                keys,
                meta,
                created,
            },
        ))
    }

    /// Creates the directory's identity or checks it against `expect`.
    fn identify(
        db: &Database,
        dir: &Path,
        expect: &Expect,
    ) -> Result<(Keypair, bool), PersistError> {
        let e = |x: redb::Error| corrupt(dir, x);
        let tx = db.begin_write().map_err(|x| e(x.into()))?;
        let found = {
            let mut meta = tx.open_table(META).map_err(|x| e(x.into()))?;
            tx.open_table(KEYS).map_err(|x| e(x.into()))?;
            tx.open_table(BATCHES).map_err(|x| e(x.into()))?;
            let get = |name: &str| -> Result<Option<Vec<u8>>, PersistError> {
                Ok(meta
                    .get(name)
                    .map_err(|x| e(x.into()))?
                    .map(|v| v.value().to_vec()))
            };
            match get("format")? {
                None => {
                    let kp = expect.keypair.clone().unwrap_or_else(Keypair::generate);
                    let secret = kp.secret_bytes();
                    for (k, v) in [
                        ("format", FORMAT),
                        ("kind", expect.kind.as_bytes()),
                        ("network", &expect.network[..]),
                        ("settings", expect.settings.as_bytes()),
                        ("secret", &secret[..]),
                    ] {
                        meta.insert(k, v).map_err(|x| e(x.into()))?;
                    }
                    (kp, true)
                }
                Some(format) => {
                    let foreign = |what: &'static str, expected: &[u8], found: &[u8]| {
                        Err(PersistError::Foreign {
                            path: dir.display().to_string(),
                            what,
                            expected: show(what, expected),
                            found: show(what, found),
                        })
                    };
                    if format != FORMAT {
                        return foreign("format", FORMAT, &format);
                    }
                    for (what, want) in [
                        ("kind", expect.kind.as_bytes()),
                        ("network", &expect.network[..]),
                        ("settings", expect.settings.as_bytes()),
                    ] {
                        let have = get(what)?.unwrap_or_default();
                        if have != want {
                            return foreign(what, want, &have);
                        }
                    }
                    let secret: [u8; 32] = get("secret")?
                        .and_then(|s| s.try_into().ok())
                        .ok_or_else(|| corrupt(dir, "the identity is missing or damaged"))?;
                    let kp = Keypair::from_seed(secret);
                    if let Some(given) = &expect.keypair {
                        if given.peer_id() != kp.peer_id() {
                            return foreign(
                                "identity",
                                given.peer_id().as_bytes(),
                                kp.peer_id().as_bytes(),
                            );
                        }
                    }
                    (kp, false)
                }
            }
        };
        tx.commit().map_err(|x| e(x.into()))?;
        Ok(found)
    }

    #[allow(clippy::type_complexity)]
    fn load(
        db: &Database,
        dir: &Path,
    ) -> Result<(Vec<(Bytes, KeyEntry)>, HashMap<String, Vec<u8>>), PersistError> {
        let r = |e: redb::Error| corrupt(dir, e);
        let tx = db.begin_read().map_err(|e| r(e.into()))?;
        let mut batches: HashMap<Signature, Arc<BatchAuth>> = HashMap::new();
        for item in tx
            .open_table(BATCHES)
            .map_err(|e| r(e.into()))?
            .iter()
            .map_err(|e| r(e.into()))?
        {
            let (k, v) = item.map_err(|e| r(e.into()))?;
            let auth = pb::DiskBatch::decode(v.value())
                .ok()
                .and_then(|b| codec::batch_from_disk(k.value(), b))
                .ok_or_else(|| corrupt(dir, "a damaged batch"))?;
            batches.insert(auth.signature, Arc::new(auth));
        }
        let mut keys = Vec::new();
        let mut used: HashSet<Signature> = HashSet::new();
        for item in tx
            .open_table(KEYS)
            .map_err(|e| r(e.into()))?
            .iter()
            .map_err(|e| r(e.into()))?
        {
            let (k, v) = item.map_err(|e| r(e.into()))?;
            let key = Bytes::copy_from_slice(k.value());
            let entry = pb::DiskKey::decode(v.value())
                .ok()
                .and_then(|d| codec::key_from_disk(&key, d, &batches))
                .ok_or_else(|| corrupt(dir, format!("the entry of key {:?} is damaged", key)))?;
            used.extend(entry.all().map(|s| s.auth().signature));
            keys.push((key, entry));
        }
        let mut meta = HashMap::new();
        for item in tx
            .open_table(META)
            .map_err(|e| r(e.into()))?
            .iter()
            .map_err(|e| r(e.into()))?
        {
            let (k, v) = item.map_err(|e| r(e.into()))?;
            if k.value().starts_with("x-") {
                meta.insert(k.value().to_string(), v.value().to_vec());
            }
        }
        drop(tx);
        // Batches no kept record names any more (their records were overwritten or pruned).
        let unused: Vec<Signature> = batches.into_keys().filter(|s| !used.contains(s)).collect();
        if !unused.is_empty() {
            let tx = db.begin_write().map_err(|e| r(e.into()))?;
            {
                let mut t = tx.open_table(BATCHES).map_err(|e| r(e.into()))?;
                for s in &unused {
                    t.remove(&s[..]).map_err(|e| r(e.into()))?;
                }
            }
            tx.commit().map_err(|e| r(e.into()))?;
        }
        Ok((keys, meta))
    }

    /// Queues `ops` for the next group commit and returns their sequence number (compare with
    /// [`Committed::Upto`]). Later ops on the same key replace earlier queued ones.
    pub fn submit(&self, ops: impl IntoIterator<Item = Op>) -> u64 {
        let mut p = self.shared.lock();
        let mut any = false;
        for op in ops {
            any = true;
            match op {
                Op::Put(k, e) => {
                    p.keys.insert(k, Some(e));
                }
                Op::Del(k) => {
                    p.keys.insert(k, None);
                }
                Op::Meta(k, v) => p.meta.push((k, v)),
            }
        }
        if any {
            p.seq += 1;
            if p.idle {
                p.idle = false;
                self.shared.wake.notify_one();
            }
        }
        p.seq
    }

    /// Whether writes wait for the disk.
    pub fn durable(&self) -> bool {
        self.durable
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer's counters.
    pub fn stats(&self) -> DiskStats {
        self.shared.lock().stats.clone()
    }

    /// Commits everything queued and stops the writer; later submissions are dropped. Returns
    /// the last commit error if the final commit could not be made.
    pub fn close(&self) -> Result<(), PersistError> {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        let p = self.shared.lock();
        if p.keys.is_empty() && p.meta.is_empty() {
            Ok(())
        } else {
            Err(PersistError::Write(format!(
                "{} key entries could not be written before closing",
                p.keys.len()
            )))
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// In the default mode, commits start at most this often: the bound on what a crash loses is
/// the writes of this window plus one commit.
pub const GATHER: Duration = Duration::from_millis(10);

/// Retries after a failed commit wait this long.
const RETRY: Duration = Duration::from_millis(100);
/// Failed commits at close before giving up.
const CLOSE_TRIES: u32 = 3;

fn writer(db: Database, shared: Arc<Shared>, gather: Duration, on_commit: impl Fn(Committed)) {
    let mut known: HashSet<Signature> = HashSet::new();
    let mut close_failures = 0;
    let mut last_start = Instant::now() - gather;
    loop {
        let (keys, meta, seq, closing) = {
            let mut p = shared.lock();
            while p.keys.is_empty() && p.meta.is_empty() && !p.closing {
                p.idle = true;
                p = shared.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            p.idle = false;
            // Group commit: at most one commit per `gather`, so a busy node writes many keys
            // per transaction (close does not wait).
            let next = last_start + gather;
            while !p.closing {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                p = shared
                    .wake
                    .wait_timeout(p, next - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            last_start = Instant::now();
            if p.keys.is_empty() && p.meta.is_empty() {
                return;
            }
            (
                std::mem::take(&mut p.keys),
                std::mem::take(&mut p.meta),
                p.seq,
                p.closing,
            )
        };
        let n = keys.len() as u64;
        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit(&db, &mut known, &keys, &meta)
        }))
        .unwrap_or_else(|_| Err("the database panicked while writing".into()));
        match done {
            Ok(()) => {
                {
                    let mut p = shared.lock();
                    p.stats.commits += 1;
                    p.stats.keys_written += n;
                    p.stats.committed = seq;
                }
                on_commit(Committed::Upto(seq));
            }
            Err(e) => {
                {
                    // Put the writes back under any newer ones and try again.
                    let mut p = shared.lock();
                    p.stats.failures += 1;
                    for (k, v) in keys {
                        p.keys.entry(k).or_insert(v);
                    }
                    let newer = std::mem::replace(&mut p.meta, meta);
                    p.meta.extend(newer);
                }
                on_commit(Committed::Failed(e));
                if closing {
                    close_failures += 1;
                    if close_failures >= CLOSE_TRIES {
                        return;
                    }
                }
                std::thread::sleep(RETRY);
            }
        }
    }
}

fn commit(
    db: &Database,
    known: &mut HashSet<Signature>,
    keys: &HashMap<Bytes, Option<KeyEntry>>,
    meta: &[(String, Vec<u8>)],
) -> Result<(), String> {
    fn err(e: impl Into<redb::Error>) -> String {
        e.into().to_string()
    }
    let tx = db.begin_write().map_err(err)?;
    let mut added: HashSet<Signature> = HashSet::new();
    {
        let mut kt = tx.open_table(KEYS).map_err(err)?;
        let mut bt = tx.open_table(BATCHES).map_err(err)?;
        let mut buf = Vec::new();
        for (k, v) in keys {
            match v {
                None => {
                    kt.remove(k.as_ref()).map_err(err)?;
                }
                Some(e) => {
                    for s in e.all() {
                        let sig = s.auth().signature;
                        // A batch of one record is rebuilt from the record itself on load.
                        let alone = s.auth().leaves.len() == 1;
                        if !alone && !known.contains(&sig) && !added.contains(&sig) {
                            buf.clear();
                            codec::batch_to_disk(s.auth())
                                .encode(&mut buf)
                                .expect("a Vec grows");
                            bt.insert(&sig[..], buf.as_slice()).map_err(err)?;
                            added.insert(sig);
                        }
                    }
                    buf.clear();
                    codec::key_to_disk(e).encode(&mut buf).expect("a Vec grows");
                    kt.insert(k.as_ref(), buf.as_slice()).map_err(err)?;
                }
            }
        }
        let mut mt = tx.open_table(META).map_err(err)?;
        for (k, v) in meta {
            mt.insert(k.as_str(), v.as_slice()).map_err(err)?;
        }
    }
    tx.commit().map_err(err)?;
    known.extend(added);
    Ok(())
}
