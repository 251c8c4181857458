//! rs2p's benchmark scenarios. Run through `cargo xtask bench [--quick] [SCENARIO…]`, which
//! builds in release mode. Prints a table and writes `target/bench/results.json`.
//!
//! The scenarios run on loopback with the default secure configuration (Noise-encrypted links,
//! signed floods and records), in this process unless their names say otherwise (P1 across
//! processes, py2p's, P7 in a child process of its own). `floor` comes first: what one
//! signature, one check and one loopback round trip cost on this machine, the limits of P2.
//!
//! To study one scenario, the environment narrows it (a full run sets none of these):
//! - `RS2P_BENCH_MODE=signed|unsigned`: only one mode in P2/P3/P8 and P4;
//! - `RS2P_BENCH_SIZES=3,16`: the node counts of P2/P3/P8 and P4;
//! - `RS2P_BENCH_SECS`, `RS2P_BENCH_REPEAT`: P4's seconds per run and runs (P2: rounds × R);
//! - `RS2P_BENCH_RATE`: the rate of P4's paced runs (default the target for the size:
//!   100,000 writes/s for N=3, 25,000 for N=16);
//! - `RS2P_BENCH_KEYS=100000`: the dictionary sizes of P5 (default 100,000 both modes, then
//!   1,000,000 signed).

mod plots;

use std::time::{Duration, Instant};

use rs2p::mesh::net::EventItem;
use rs2p::mesh::{MeshEvent, MeshOptions, MeshSocket};
use rs2p::sync::{SyncEvent, SyncEventItem, SyncOptions, SyncSocket};
use serde_json::json;

struct Result {
    scenario: String,
    unit: &'static str,
    samples: Vec<f64>,
    note: String,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

impl Result {
    fn stats(&self) -> (f64, f64, f64, f64) {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        (
            pct(&s, 0.5),
            pct(&s, 0.99),
            s.first().copied().unwrap_or(f64::NAN),
            s.last().copied().unwrap_or(f64::NAN),
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn mesh_nodes(n: usize) -> Vec<MeshSocket> {
    let first = MeshSocket::bind(MeshOptions::default())
        .await
        .expect("bind");
    let mut v = vec![first.clone()];
    for _ in 1..n {
        let s = MeshSocket::bind(MeshOptions::default())
            .await
            .expect("bind");
        s.connect(first.local_addr()).await.expect("connect");
        v.push(s);
    }
    let want = (n - 1).min(8);
    for s in &v {
        while s.peers().await.expect("peers").len() < want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    v
}

/// One broadcast at a time from a rotating origin; time until all other nodes delivered it.
async fn mesh_broadcast(n: usize, reps: usize) -> Result {
    let nodes = mesh_nodes(n).await;
    let mut streams: Vec<_> = nodes.iter().map(|s| s.events()).collect();
    let mut samples = Vec::with_capacity(reps);
    for r in 0..reps {
        let origin = r % n;
        let payload = format!("msg {r}");
        let t0 = Instant::now();
        nodes[origin]
            .broadcast("/bench/1", payload.clone())
            .await
            .expect("broadcast");
        for (i, s) in streams.iter_mut().enumerate() {
            if i == origin {
                continue;
            }
            loop {
                match s.next().await {
                    Some(EventItem::Event(MeshEvent::Message { payload: p, .. }))
                        if p == payload.as_bytes() =>
                    {
                        break
                    }
                    Some(_) => {}
                    None => panic!("node {i} stopped"),
                }
            }
        }
        samples.push(ms(t0.elapsed()));
    }
    for s in &nodes {
        let _ = s.close().await;
    }
    Result {
        scenario: format!("mesh-broadcast N={n}"),
        unit: "ms",
        samples,
        note: "until every other node delivered it".into(),
    }
}

/// Options for a bench node: the default secure configuration, or unsigned records.
fn sync_options(signed: bool) -> SyncOptions {
    let mut o = SyncOptions::default();
    o.sync.signed = signed;
    o
}

/// " unsigned" for the scenario names of unsigned runs.
fn mode(signed: bool) -> &'static str {
    if signed {
        ""
    } else {
        " unsigned"
    }
}

async fn sync_nodes(n: usize) -> Vec<SyncSocket> {
    sync_nodes_as(n, true).await
}

async fn sync_nodes_as(n: usize, signed: bool) -> Vec<SyncSocket> {
    let first = SyncSocket::bind(sync_options(signed)).await.expect("bind");
    let mut v = vec![first.clone()];
    for _ in 1..n {
        let s = SyncSocket::bind(sync_options(signed)).await.expect("bind");
        s.mesh()
            .connect(first.mesh().local_addr())
            .await
            .expect("connect");
        v.push(s);
    }
    let want = (n - 1).min(8);
    for s in &v {
        while s.mesh().peers().await.expect("peers").len() < want {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    v
}

/// The machine's floor for one write's way (P2): what an ed25519 signature and its check cost
/// here (rs2p's own calls, each sample the mean of 200), and a loopback TCP round trip (1 byte
/// each way between two threads, each sample the mean of 200). A signed write is signed once
/// and checked once on every node, so at N nodes on 2 cores the checks alone take about
/// N × verify / 2.
fn floor(samples: usize) -> Vec<Result> {
    use std::io::{Read, Write};
    let kp = rs2p_base::Keypair::generate();
    let id = kp.peer_id();
    let msg = [7u8; 200];
    let per = 200;
    let mut sign = Vec::new();
    let mut verify = Vec::new();
    for _ in 0..samples {
        let t = Instant::now();
        let mut sig = kp.sign(&msg);
        for _ in 1..per {
            sig = kp.sign(&msg);
        }
        sign.push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
        let t = Instant::now();
        for _ in 0..per {
            assert!(id.verify(&msg, &sig));
        }
        verify.push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let mut c = std::net::TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    let mut rtt = Vec::new();
    let mut b = [0u8; 1];
    for _ in 0..samples {
        let t = Instant::now();
        for _ in 0..per {
            c.write_all(&b).expect("write");
            c.read_exact(&mut b).expect("read");
        }
        rtt.push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
    }
    drop(c);
    let _ = echo.join();
    vec![
        Result {
            scenario: "floor ed25519 sign".into(),
            unit: "us",
            samples: sign,
            note: "one signature over 200 B (once per write, on its origin)".into(),
        },
        Result {
            scenario: "floor ed25519 verify".into(),
            unit: "us",
            samples: verify,
            note: "one check over 200 B (once per write on every other node)".into(),
        },
        Result {
            scenario: "floor loopback round trip".into(),
            unit: "us",
            samples: rtt,
            note: "1 byte each way, two threads, TCP_NODELAY".into(),
        },
    ]
}

/// P1 in one process: 3 nodes, `keys` keys set one call at a time on one; until the last holds all.
async fn sync_p1(keys: usize, reps: usize) -> Result {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let nodes = sync_nodes(3).await;
        let t0 = Instant::now();
        for k in 0..keys {
            nodes[0]
                .set(format!("key{k:06}-pad-16b"), [b'v'; 100])
                .await
                .expect("set");
        }
        while nodes.iter().any(|s| s.len() < keys) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(ms(t0.elapsed()));
        for s in &nodes {
            let _ = s.close().await;
        }
    }
    Result {
        scenario: format!("sync-P1 3 nodes, {keys} sets"),
        unit: "ms",
        samples,
        note: "in one process; py2p: about 1 s".into(),
    }
}

/// P2: one write at a time from a rotating origin; time until every node applied it. Each
/// origin's first write is reported apart (the second result): it is flooded on every link and
/// builds that origin's relay tree, which every later write of that origin follows; the first
/// result is the steady state, the writes after those.
async fn sync_p2(n: usize, writes: usize, signed: bool) -> (Result, Result, Result, Result) {
    assert!(writes > n, "P2 writes more than once per node");
    let nodes = sync_nodes_as(n, signed).await;
    let mut subs: Vec<_> = nodes.iter().map(|s| s.subscribe()).collect();
    let mut samples = Vec::with_capacity(writes);
    let (mut before, mut msgs_before) = (0u64, 0u64);
    for s in &nodes {
        let st = s.mesh().stats().await.expect("stats");
        before += st.sent.bytes;
        msgs_before += st.received.messages;
    }
    let mut msgs_first_round = 0u64;
    for w in 0..writes {
        let origin = w % n;
        // 32 B keys, as P8 asks.
        let key = format!("k{w:08}-pad-to-32-bytes-xxxxxx");
        debug_assert_eq!(key.len(), 32);
        let t0 = Instant::now();
        nodes[origin].set(&key, [b'x'; 100]).await.expect("set");
        for (i, sub) in subs.iter_mut().enumerate() {
            loop {
                match sub.next().await {
                    Some(SyncEventItem::Event(SyncEvent::Updated { key: k, .. }))
                        if k == key.as_bytes() =>
                    {
                        break
                    }
                    Some(_) => {}
                    None => panic!("node {i} stopped"),
                }
            }
        }
        samples.push(ms(t0.elapsed()));
        if w + 1 == n {
            // Every origin has written once: its relay tree has formed.
            for s in &nodes {
                msgs_first_round += s.mesh().stats().await.expect("stats").received.messages;
            }
        }
    }
    let (mut after, mut msgs_after, mut drops, mut repaired) = (0u64, 0u64, 0u64, 0u64);
    for s in &nodes {
        let st = s.mesh().stats().await.expect("stats");
        after += st.sent.bytes;
        msgs_after += st.received.messages;
        drops += st.send_queue_drops;
        repaired += s.stats().records_sent_repair;
    }
    let per_update = (after - before) as f64 / writes as f64 / (n - 1) as f64;
    let copies = |msgs: u64, writes: usize| msgs as f64 / writes as f64 / (n - 1) as f64;
    let first_round = copies(msgs_first_round - msgs_before, n);
    let redundancy = copies(msgs_after - msgs_first_round, writes - n);
    for s in &nodes {
        let _ = s.close().await;
    }
    let first_writes = samples.drain(..n).collect();
    (
        Result {
            scenario: format!("sync-P2 N={n}{}", mode(signed)),
            unit: "ms",
            samples,
            note: format!("write until every node applied, each origin's writes after its first; {drops} frames dropped on full send queues, {repaired} records sent by repair"),
        },
        Result {
            scenario: format!("sync-P2 first writes N={n}{}", mode(signed)),
            unit: "ms",
            samples: first_writes,
            note: "each origin's first write, which builds its relay tree".into(),
        },
        Result {
            scenario: format!("sync-P8 N={n}{}", mode(signed)),
            unit: "B",
            samples: vec![per_update],
            note: format!(
                "frame bytes sent per update per receiving node, one write at a time, 32 B key / 100 B value, {}",
                if signed { "signed" } else { "unsigned" }
            ),
        },
        Result {
            scenario: format!("sync-P3 N={n}{}", mode(signed)),
            unit: "msgs",
            samples: vec![redundancy],
            note: format!(
                "payload messages received per update / (N-1), from the counters, after each origin's first write ({first_round:.2} over those); {}",
                if n <= 9 {
                    "every node directly connected (target 1.00)"
                } else {
                    "min_peers 8: relayed (target 1.15)"
                }
            ),
        },
    )
}

/// P4: writes per second that reach every node, sustained for `secs` seconds by 4 tasks on one
/// node writing batches of 64 keys, with a probe from another node every 50 ms measuring the
/// convergence time under that load. The writers go as fast as the node takes their writes
/// (`pace` `None`: the capacity, where every queue on the way is as full as backpressure lets
/// it be), or at `pace` writes per second between them (the convergence at that sustained
/// rate).
async fn sync_p4(n: usize, secs: f64, signed: bool, pace: Option<f64>) -> (Result, Result, Result) {
    let nodes = sync_nodes_as(n, signed).await;
    let mut bytes_before = 0u64;
    for s in &nodes {
        bytes_before += s.mesh().stats().await.expect("stats").sent.bytes;
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let s = nodes[0].clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut written = 0u64;
                let mut batch = 0u64;
                let start = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(rate) = pace {
                        // Each task writes a quarter of the rate, on a schedule (not a fixed
                        // sleep), so a late batch does not lower the rate.
                        let due = start + Duration::from_secs_f64(written as f64 / (rate / 4.0));
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let items: Vec<(String, [u8; 100])> = (0..64)
                        .map(|i| {
                            (
                                format!("w{t}-{batch:08}-{i:02}-pad-to-32-bytes-x"),
                                [b'v'; 100],
                            )
                        })
                        .collect();
                    s.update(items).await.expect("update");
                    written += 64;
                    batch += 1;
                }
                written
            })
        })
        .collect();
    let mut probes = Vec::new();
    let mut p = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        let key = format!("probe-{p}");
        let sent = Instant::now();
        nodes[1].set(&key, b"p").await.expect("probe");
        while nodes.iter().any(|s| !s.contains(&key)) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        probes.push(ms(sent.elapsed()));
        p += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0u64;
    for w in writers {
        total += w.await.expect("writer");
    }
    let want = total as usize + p as usize;
    while nodes.iter().any(|s| s.len() < want) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    let mut bytes_after = 0u64;
    for s in &nodes {
        bytes_after += s.mesh().stats().await.expect("stats").sent.bytes;
    }
    let per_update = (bytes_after - bytes_before) as f64 / want as f64 / (n - 1) as f64;
    for s in &nodes {
        let _ = s.close().await;
    }
    let (what, load) = match pace {
        None => (
            "throughput".to_owned(),
            "as fast as the node takes them".to_owned(),
        ),
        Some(r) => (
            format!("paced at {r:.0} w/s"),
            format!("paced at {r:.0} w/s"),
        ),
    };
    (
        Result {
            scenario: format!("sync-P4 N={n}{} {what}", mode(signed)),
            unit: "w/s",
            samples: vec![rate],
            note: format!("{total} keys in batches of 64 by 4 tasks for {secs} s, {load}, until every node held them"),
        },
        Result {
            scenario: format!(
                "sync-P4 N={n}{} convergence {}",
                mode(signed),
                if pace.is_some() { "paced" } else { "saturated" }
            ),
            unit: "ms",
            samples: probes,
            note: format!("a probe write every 50 ms while the writers write {load}, until every node held it (p99 target 50 ms)"),
        },
        Result {
            scenario: format!("sync-P8 N={n}{} under load", mode(signed)),
            unit: "B",
            samples: vec![per_update],
            note: format!(
                "frame bytes sent per update per receiving node during P4 (batches of 64), 32 B key / 100 B value, {}",
                if signed { "signed" } else { "unsigned" }
            ),
        },
    )
}

/// Fills `s` with `keys` keys (32-byte keys, 100-byte values) in batches of 1000.
async fn fill(s: &SyncSocket, keys: usize, tag: &str) {
    let mut i = 0;
    while i < keys {
        let end = (i + 1000).min(keys);
        s.update((i..end).map(|k| (format!("{tag}-{k:027}"), [b'v'; 100])))
            .await
            .expect("update");
        i = end;
    }
}

/// P5: a new node joins two nodes holding `keys` keys; time until it holds them all.
async fn sync_p5(keys: usize, reps: usize, signed: bool) -> Result {
    let nodes = sync_nodes_as(2, signed).await;
    fill(&nodes[0], keys, "key").await;
    while nodes[1].len() < keys {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = Vec::new();
    for _ in 0..reps {
        let new = SyncSocket::bind(sync_options(signed)).await.expect("bind");
        let t0 = Instant::now();
        new.mesh()
            .connect(nodes[0].mesh().local_addr())
            .await
            .expect("connect");
        while new.len() < keys {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(ms(t0.elapsed()));
        let _ = new.close().await;
    }
    for s in &nodes {
        let _ = s.close().await;
    }
    Result {
        scenario: format!("sync-P5 join {keys} keys{}", mode(signed)),
        unit: "ms",
        samples,
        note: "connect to a node holding them (32 B / 100 B) until the newcomer holds all".into(),
    }
}

/// P6: a node that missed 1% of `keys` keys reconnects; time and bytes until it is whole.
async fn sync_p6(keys: usize, reps: usize) -> (Result, Result) {
    let quiet = || {
        let mut mesh = rs2p::mesh::MeshOptions::default();
        mesh.config.min_peers = 0;
        SyncOptions {
            mesh,
            ..SyncOptions::default()
        }
    };
    let (mut times, mut ratios) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let a = SyncSocket::bind(quiet()).await.expect("bind");
        let b = SyncSocket::bind(quiet()).await.expect("bind");
        let a_id = b
            .mesh()
            .connect(a.mesh().local_addr())
            .await
            .expect("connect");
        fill(&a, keys, "key").await;
        while b.len() < keys {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b.mesh().disconnect(a_id).await.expect("disconnect");
        while !a.mesh().peers().await.expect("peers").is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let missed = keys / 100;
        fill(&a, missed, &format!("missed{rep}")).await;
        let before = b.mesh().stats().await.expect("stats").received.bytes;
        let t0 = Instant::now();
        b.mesh()
            .connect(a.mesh().local_addr())
            .await
            .expect("reconnect");
        while b.len() < keys + missed {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(ms(t0.elapsed()));
        let got = b.mesh().stats().await.expect("stats").received.bytes - before;
        // The difference itself: each missed key and value (32 B + 100 B).
        ratios.push(got as f64 / (missed as f64 * 132.0));
        let _ = a.close().await;
        let _ = b.close().await;
    }
    (
        Result {
            scenario: format!("sync-P6 repair 1% of {keys}"),
            unit: "ms",
            samples: times,
            note: "reconnect until whole (target 50 ms)".into(),
        },
        Result {
            scenario: format!("sync-P6 repair 1% of {keys} bytes"),
            unit: "x",
            samples: ratios,
            note: "bytes received / bytes of the missed keys and values (target 3x)".into(),
        },
    )
}

/// A comma-separated list of numbers from the environment (to run one size alone, say, while
/// profiling), or `default`.
fn env_list(var: &str, default: &[usize]) -> Vec<usize> {
    match std::env::var(var) {
        Ok(v) => v.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

/// A number from the environment, or `default`.
fn env_num(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Signed then unsigned, or one of them with `RS2P_BENCH_MODE=signed` or `unsigned`.
fn modes() -> Vec<bool> {
    match std::env::var("RS2P_BENCH_MODE").as_deref() {
        Ok("signed") => vec![true],
        Ok("unsigned") => vec![false],
        _ => vec![true, false],
    }
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The argument that makes the bench binary run P7 alone and print its figure.
const P7_CHILD: &str = "--p7-child";

/// [`sync_p7`] in a fresh process: in this one, memory that the scenarios before freed would be
/// reused by the store and hide part of its size (a full run measured 596 B per key where a
/// process of its own measured 722). In this process if the child cannot be run.
fn sync_p7_fresh(keys: usize) -> Result {
    let figure = std::env::current_exe().ok().and_then(|exe| {
        let out = std::process::Command::new(exe)
            .args([P7_CHILD, &keys.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    });
    match figure {
        Some(f) => {
            let mut r = sync_p7_described(keys, vec![f]);
            r.note = format!("measured in a process of its own; {}", r.note);
            r
        }
        None => sync_p7(keys),
    }
}

/// P7: resident memory per key of a replica's store holding `keys` keys (32 B key, 100 B value),
/// written in signed batches of 1000, as a receiver holds them (one record per key), each batch
/// decoded from its encoded bytes as a frame brings it (the records point into those bytes).
fn sync_p7(keys: usize) -> Result {
    use rs2p::sync::proto::record::{open, seal, Limits, Record};
    use rs2p::sync::proto::store::Store;
    let kp = rs2p_base::Keypair::from_seed([7; 32]);
    let limits = Limits {
        network_id: [0; 32],
        now: 1_700_000_000_000,
        max_skew: 10_000,
        max_lease: 3_600_000,
        max_key_len: 1024,
        max_value_len: 1 << 20,
        accept_unsigned: false,
    };
    let before = rss_bytes().unwrap_or(0);
    let mut store = Store::new(true);
    let mut i = 0;
    while i < keys {
        let end = (i + 1000).min(keys);
        let records: Vec<Record> = (i..end)
            .map(|k| Record {
                key: bytes::Bytes::from(format!("key-{k:028}")),
                value: bytes::Bytes::from(vec![b'v'; 100]),
                tombstone: false,
                owner: kp.peer_id(),
                issued_at: 1_700_000_000_000,
                version: k as u64 + 1,
                lease_until: 1_700_003_600_000,
            })
            .collect();
        // As a receiving replica holds them: decoded from the bytes a frame brings, then
        // opened (verified).
        let (_, wire) = seal(&kp, &[0; 32], records);
        let bytes = rs2p_base::wire::encode(&wire);
        let wire = rs2p_base::wire::decode_bytes::<rs2p_base::wire::pb::RecordBatch>(bytes)
            .expect("decodes");
        for s in open(wire, &limits).expect("a valid batch") {
            store.insert(s);
        }
        i = end;
    }
    let after = rss_bytes().unwrap_or(0);
    let per_key = after.saturating_sub(before) as f64 / keys as f64;
    drop(store);
    sync_p7_described(keys, vec![per_key])
}

fn sync_p7_described(keys: usize, samples: Vec<f64>) -> Result {
    Result {
        scenario: format!("sync-P7 {keys} keys"),
        unit: "B/key",
        samples,
        note: format!(
            "resident memory per key of a receiving replica's store (32 B key, 100 B value, signed batches of 1000); per record: one allocation of {} B and the signed bytes, KeyState {} B in a map entry, a leaf hash of 32 B",
            rs2p::sync::proto::record::Stored::FIXED_BYTES,
            std::mem::size_of::<rs2p::sync::proto::store::KeyState>(),
        ),
    }
}

/// P9: lookups on a ring of `n` chord nodes in this process, over loopback TCP.
async fn chord_p9(n: usize, lookups: usize) -> Result {
    use rs2p::chord::{ChordOptions, ChordSocket};
    let mut opts = ChordOptions::default();
    opts.chord.stabilize = Duration::from_millis(250);
    let mut ring: Vec<ChordSocket> = Vec::with_capacity(n);
    for i in 0..n {
        let s = ChordSocket::bind(opts.clone()).await.expect("bind");
        if i > 0 {
            s.mesh()
                .connect(ring[i / 2].mesh().local_addr())
                .await
                .expect("connect");
            assert!(
                s.wait_joined(Duration::from_secs(30)).await,
                "node {i} joins"
            );
        }
        ring.push(s);
    }
    // Stabilisation rounds for successors and fingers.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for k in 0..200 {
        ring[k % n]
            .set(format!("key-{k}"), format!("value-{k}"))
            .await
            .expect("set");
    }
    let mut samples = Vec::with_capacity(lookups);
    let (mut hops_total, mut hops_max) = (0u64, 0u32);
    for q in 0..lookups + 100 {
        let reader = &ring[(q * 7 + 1) % n];
        let t = Instant::now();
        let (_, hops) = reader
            .get_with_hops(format!("key-{}", q % 400))
            .await
            .expect("get");
        if q >= 100 {
            samples.push(ms(t.elapsed()));
            hops_total += u64::from(hops);
            hops_max = hops_max.max(hops);
        }
    }
    for s in &ring {
        let _ = s.close().await;
    }
    Result {
        scenario: format!("chord-P9-loopback get, N={n}"),
        unit: "ms",
        note: format!(
            "mean hops {:.2}, max {hops_max} (half of the keys missing: answered None by the owner)",
            hops_total as f64 / samples.len() as f64
        ),
        samples,
    }
}

/// P9 hop figures in the deterministic simulation: `lookups` gets on a settled ring of `n`.
fn chord_hops_sim(n: usize, lookups: usize) -> Result {
    use rs2p::chord::sim::SimRing;
    use rs2p::chord::ChordConfig;
    let mut cfg = ChordConfig::default();
    cfg.stabilize = Duration::from_millis(500);
    let started = Instant::now();
    let mut ring = SimRing::build(n as u64, n, n, cfg, rs2p_testkit::Faults::NONE, 50, 20_000);
    ring.check_ring().expect("a settled ring");
    let mut samples = Vec::with_capacity(lookups);
    for q in 0..lookups {
        let (_, hops) = ring
            .get((q * 7 + 3) % n, format!("key-{q}").as_bytes())
            .expect("get");
        samples.push(f64::from(hops));
    }
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let max = samples.iter().copied().fold(0.0, f64::max);
    let log = (n as f64).log2();
    Result {
        scenario: format!("chord-P9-hops, N={n} simulated"),
        unit: "hops",
        note: format!(
            "mean {mean:.2} (target ≤ {:.2}), max {max} (target ≤ {log}); built and measured in {:.0} s",
            log / 2.0 + 0.5,
            started.elapsed().as_secs_f64()
        ),
        samples,
    }
}

/// py2p's chord socket in the same run (P9's comparison), from a virtualenv under `target/`
/// that this creates on first use (`pip install py2p==0.7.878`). `None` when Python or the
/// package is unavailable; the reason is printed.
/// The Python of `target/py2p-venv`, with py2p 0.7.878 installed into it on first use; `None`
/// (said on stderr) if that cannot be done.
fn py2p_python(root: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::process::Command;
    let venv = root.join("target/py2p-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "py2p==0.7.878"])
                .status()
                .is_ok_and(|s| s.success());
        if !made {
            eprintln!(
                "py2p comparison skipped: could not set up {} with py2p 0.7.878",
                venv.display()
            );
            return None;
        }
    }
    Some(python)
}

fn py2p_chord(gets: usize) -> Option<Result> {
    use std::process::Command;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = py2p_python(&root)?;
    let script = root.join("crates/bench/py/py2p_chord.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["100", &gets.to_string()])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    let samples: Vec<f64> = v["get_ms"]
        .as_array()?
        .iter()
        .filter_map(|x| x.as_f64())
        .collect();
    Some(Result {
        scenario: "py2p-0.7.878 chord get, N=3".into(),
        unit: "ms",
        note: format!(
            "{} of {} gets correct (a get that fails waits for its 5 s timeout)",
            v["correct"], v["gets"]
        ),
        samples,
    })
}

/// An `rs2p node --json` process (the release binary), driven through its standard input.
struct Proc {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: std::io::BufReader<std::process::ChildStdout>,
    addr: String,
}

impl Proc {
    fn start(bin: &std::path::Path, peers: &[&str]) -> Option<Proc> {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["node", "--listen", "127.0.0.1:0", "--json"]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut out = std::io::BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        out.read_line(&mut line).ok()?;
        let ready: serde_json::Value = serde_json::from_str(&line).ok()?;
        Some(Proc {
            addr: ready["addr"].as_str()?.to_string(),
            child,
            stdin,
            out,
        })
    }

    fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let _ = self.stdin.write_all(bytes);
    }

    fn answer(&mut self) -> serde_json::Value {
        use std::io::{BufRead, Write};
        let _ = self.stdin.flush();
        let mut line = String::new();
        let _ = self.out.read_line(&mut line);
        serde_json::from_str(&line).unwrap_or_default()
    }

    fn ask(&mut self, line: &str) -> serde_json::Value {
        self.send(line);
        self.answer()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// P1 as the issue states it: three `rs2p node` processes on loopback, `keys` keys (16-byte keys,
/// 100-byte values) set on the first (pipelined through its standard input), until the other two
/// hold them all.
fn sync_p1_processes(keys: usize, reps: usize) -> Option<Result> {
    let bin = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/rs2p");
    if !bin.exists() {
        eprintln!(
            "sync-P1 across processes skipped: {} is not built (cargo xtask bench builds it)",
            bin.display()
        );
        return None;
    }
    let mut samples = Vec::new();
    for _ in 0..reps {
        let mut a = Proc::start(&bin, &[])?;
        let addr = a.addr.clone();
        let mut b = Proc::start(&bin, &[&addr])?;
        let mut c = Proc::start(&bin, &[&addr])?;
        for p in [&mut a, &mut b, &mut c] {
            while p.ask("peers")["peers"].as_array().map_or(0, Vec::len) < 2 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let value = "v".repeat(100);
        // The commands go as a script would pipe them: all at once.
        let script: String = (0..keys)
            .map(|k| format!("set k{k:015} {value}\n"))
            .collect();
        let t0 = Instant::now();
        a.send_raw(script.as_bytes());
        let wait = format!("wait-len {keys} 30000");
        b.send(&wait);
        c.send(&wait);
        let (rb, rc) = (b.answer(), c.answer());
        let took = ms(t0.elapsed());
        if rb["ok"] == true && rc["ok"] == true {
            samples.push(took);
        }
    }
    Some(Result {
        scenario: format!("sync-P1 3 processes, {keys} sets"),
        unit: "ms",
        note: format!(
            "{} of {reps} runs complete; `rs2p node` over stdin, as py2p below",
            samples.len()
        ),
        samples,
    })
}

/// py2p 0.7.878's sync socket in the same scenario (`py/py2p_sync.py`): three processes, `keys`
/// keys set on the first, until the last holds them. Runs that never deliver every key (py2p's
/// link bugs) are counted, with a bounded wait of 30 s.
fn py2p_sync(keys: usize, reps: usize, wait_secs: u32) -> Option<Result> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = py2p_python(&root)?;
    let script = root.join("crates/bench/py/py2p_sync.py");
    let mut samples = Vec::new();
    let mut stalled = Vec::new();
    for _ in 0..reps {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg(keys.to_string())
            .env("PY2P_WAIT", wait_secs.to_string())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = text
            .lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default();
        match v["ms"].as_f64() {
            Some(t) => samples.push(t),
            None => stalled.push(v["held"].to_string()),
        }
    }
    Some(Result {
        scenario: format!("py2p-0.7.878 sync-P1 3 processes, {keys} sets"),
        unit: "ms",
        note: format!(
            "{} of {reps} runs delivered every key; the others held {} after {wait_secs} s",
            samples.len(),
            if stalled.is_empty() {
                "-".to_string()
            } else {
                stalled.join(" ")
            }
        ),
        samples,
    })
}

/// Storage modes compared by `sync-persist`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Memory,
    GroupCommit,
    Durable,
}

/// Sustained writes on a 3-node mesh, each node with its own data directory (or none): 4 tasks
/// on one node each `set` keys one after another; writes per second until every node holds them.
async fn sync_persist(mode: Mode, writes: usize, reps: usize) -> Result {
    let mut samples = Vec::new();
    let mut commits = 0u64;
    for rep in 0..reps {
        let dirs: Vec<_> = (0..3)
            .map(|i| {
                std::env::temp_dir().join(format!("rs2p-bench-{}-{rep}-{i}", std::process::id()))
            })
            .collect();
        let mut nodes: Vec<SyncSocket> = Vec::new();
        for d in &dirs {
            let _ = std::fs::remove_dir_all(d);
            let mut o = SyncOptions::default();
            if mode != Mode::Memory {
                o.data = Some(rs2p::sync::DataOptions::new(d).durable(mode == Mode::Durable));
            }
            let s = SyncSocket::bind(o).await.expect("bind");
            if let Some(first) = nodes.first() {
                s.mesh()
                    .connect(first.mesh().local_addr())
                    .await
                    .expect("connect");
            }
            nodes.push(s);
        }
        for s in &nodes {
            while s.mesh().peers().await.expect("peers").len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|t| {
                let s = nodes[0].clone();
                tokio::spawn(async move {
                    for k in (t..writes).step_by(4) {
                        s.set(format!("key{k:08}-pad-32-bytes-long-xx"), [b'v'; 100])
                            .await
                            .expect("set");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
        while nodes.iter().any(|s| s.len() < writes) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(writes as f64 / t0.elapsed().as_secs_f64());
        commits += nodes[0].disk_stats().map_or(0, |d| d.commits);
        for s in &nodes {
            let _ = s.close().await;
        }
        for d in &dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let name = match mode {
        Mode::Memory => "in memory",
        Mode::GroupCommit => "--data-dir",
        Mode::Durable => "--data-dir --durable",
    };
    Result {
        scenario: format!("sync-persist {name}"),
        unit: "w/s",
        samples,
        note: if mode == Mode::Memory {
            format!("3 nodes, {writes} sets by 4 tasks, until all hold them")
        } else {
            format!(
                "same; {:.1} writes per commit on the writing node",
                (writes * reps) as f64 / commits.max(1) as f64
            )
        },
    }
}

#[tokio::main]
async fn main() {
    // The scenarios run as a task on the runtime, as an application's code would: `block_on`'s
    // thread is not one of the runtime's workers, and every wake-up between it and a node's
    // task would cross threads (a parked thread woken by a system call, 10–30 µs here) that an
    // application's task does not cross.
    tokio::spawn(run()).await.expect("the scenarios");
}

async fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [child, keys] = &args[..] {
        if child == P7_CHILD {
            // P7 measured in a process of its own (see `sync_p7_fresh`): one line, the figure.
            let r = sync_p7(keys.parse().expect("a key count"));
            println!("{}", r.samples[0]);
            return;
        }
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| name.starts_with(o.as_str()));
    let scale = if quick { 1 } else { 4 };
    let mut results = Vec::new();
    if want("floor") {
        results.extend(floor(if quick { 5 } else { 20 }));
    }
    if want("mesh-broadcast") {
        results.push(mesh_broadcast(10, 100 * scale).await);
    }
    // `sync-P1` runs all three parts; `sync-P1-in-process`, `sync-P1-processes` and
    // `sync-P1-py2p` (or `py2p-sync`) one each.
    let reps = if quick { 3 } else { 5 };
    if want("sync-P1-in-process") {
        results.push(sync_p1(1000, reps).await);
    }
    if want("sync-P1-processes") {
        results.extend(sync_p1_processes(1000, reps));
    }
    if want("sync-P1-py2p") || want("py2p-sync") {
        // A bounded wait per run: py2p's runs often stall (5 s in --quick, about six times its
        // complete runs' 0.8 s, so that three stalled runs keep --quick under two minutes; 30 s
        // otherwise).
        results.extend(py2p_sync(1000, reps, if quick { 5 } else { 30 }));
    }
    if want("sync-P2") || want("sync-P8") || want("sync-P3") {
        let sizes = env_list(
            "RS2P_BENCH_SIZES",
            if quick { &[3, 16] } else { &[3, 16, 64] },
        );
        let repeat = env_num("RS2P_BENCH_REPEAT", 1);
        for signed in modes() {
            for &n in &sizes {
                let (p2, first, p8, p3) = sync_p2(n, 100 * scale * repeat, signed).await;
                results.push(p2);
                results.push(first);
                results.push(p3);
                results.push(p8);
            }
        }
    }
    if want("sync-persist") {
        let writes = if quick { 5_000 } else { 20_000 };
        for mode in [Mode::Memory, Mode::GroupCommit, Mode::Durable] {
            let w = if mode == Mode::Durable {
                writes / 4
            } else {
                writes
            };
            results.push(sync_persist(mode, w, 3).await);
        }
    }
    if want("sync-P4") {
        for signed in modes() {
            for n in env_list("RS2P_BENCH_SIZES", &[3, 16]) {
                // Three runs (one in --quick); each run's rate is one sample, its probes all
                // count.
                let (secs, runs) = if quick { (1.0, 1) } else { (10.0, 3) };
                let (secs, runs) = (
                    env_num("RS2P_BENCH_SECS", secs as usize) as f64,
                    env_num("RS2P_BENCH_REPEAT", runs),
                );
                // At capacity, then paced at the target rate for this size.
                let target = if n <= 3 { 100_000.0 } else { 25_000.0 };
                for pace in [
                    None,
                    Some(env_num("RS2P_BENCH_RATE", target as usize) as f64),
                ] {
                    let (mut rate, mut conv, mut bytes) = sync_p4(n, secs, signed, pace).await;
                    for _ in 1..runs {
                        let (r, c, b) = sync_p4(n, secs, signed, pace).await;
                        rate.samples.extend(r.samples);
                        conv.samples.extend(c.samples);
                        bytes.samples.extend(b.samples);
                    }
                    rate.note = format!("{runs} run(s); the first: {}", rate.note);
                    results.push(rate);
                    results.push(conv);
                    if pace.is_none() {
                        results.push(bytes);
                    }
                }
            }
        }
    }
    if want("sync-P5") {
        if let Ok(keys) = std::env::var("RS2P_BENCH_KEYS") {
            for keys in keys.split(',').filter_map(|k| k.trim().parse().ok()) {
                for signed in modes() {
                    results.push(sync_p5(keys, 3, signed).await);
                }
            }
        } else {
            for signed in [true, false] {
                results.push(sync_p5(if quick { 20_000 } else { 100_000 }, 3, signed).await);
            }
            if !quick {
                results.push(sync_p5(1_000_000, 3, true).await);
            }
        }
    }
    if want("sync-P6") {
        let (t, b) = sync_p6(if quick { 20_000 } else { 100_000 }, 3).await;
        results.push(t);
        results.push(b);
    }
    if want("sync-P7") {
        results.push(sync_p7_fresh(if quick { 100_000 } else { 1_000_000 }));
    }
    if want("chord-P9-loopback") {
        results.push(chord_p9(64, 500 * scale).await);
    }
    if want("chord-P9-hops") {
        let sizes: &[usize] = if quick {
            &[16, 64]
        } else {
            &[16, 64, 256, 1024]
        };
        for &n in sizes {
            results.push(chord_hops_sim(n, 500 * scale));
        }
    }
    if want("py2p-chord") || want("chord-P9-loopback") {
        results.extend(py2p_chord(if quick { 5 } else { 20 }));
    }
    println!(
        "{:<34} {:>6} {:>10} {:>10} {:>21} {:>6}  note",
        "scenario", "unit", "median", "p99", "min – max", "n"
    );
    let mut json_rows = Vec::new();
    for r in &results {
        let (p50, p99, min, max) = r.stats();
        println!(
            "{:<34} {:>6} {:>10.3} {:>10.3} {:>10.3} – {:<8.3} {:>6}  {}",
            r.scenario,
            r.unit,
            p50,
            p99,
            min,
            max,
            r.samples.len(),
            r.note
        );
        json_rows.push(json!({"scenario": r.scenario, "unit": r.unit, "median": p50, "p99": p99, "min": min, "max": max, "samples": r.samples.len(), "values": r.samples, "note": r.note}));
    }
    // P1's figure is a ratio against py2p in the same run.
    let median_of = |prefix: &str| {
        results
            .iter()
            .find(|r| r.scenario.starts_with(prefix) && !r.samples.is_empty())
            .map(|r| r.stats().0)
    };
    let mut ratios = Vec::new();
    if let (Some(rs), Some(py)) = (
        median_of("sync-P1 3 processes"),
        median_of("py2p-0.7.878 sync-P1"),
    ) {
        println!(
            "\nP1: rs2p {rs:.1} ms against py2p {py:.1} ms (medians of the complete runs): {:.0}x faster (target: 300x)",
            py / rs
        );
        ratios.push(json!({"figure": "P1 py2p/rs2p", "ratio": py / rs}));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&out);
    let doc = json!({"quick": quick, "results": json_rows, "ratios": ratios});
    for p in plots::draw(&results, &out) {
        println!("drew {}", p.display());
    }
    match std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nwrote {}", out.join("results.json").display()),
        Err(e) => eprintln!("could not write results.json: {e}"),
    }
}
