//! rs2p's benchmark scenarios. Run through `cargo xtask bench [--quick] [SCENARIO…]`, which
//! builds in release mode. Prints a table and writes `target/bench/results.json`.
//!
//! Every scenario runs in one process on loopback with the default secure configuration
//! (Noise-encrypted links, signed floods and records).

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

async fn sync_nodes(n: usize) -> Vec<SyncSocket> {
    let first = SyncSocket::bind(SyncOptions::default())
        .await
        .expect("bind");
    let mut v = vec![first.clone()];
    for _ in 1..n {
        let s = SyncSocket::bind(SyncOptions::default())
            .await
            .expect("bind");
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

/// P2: one write at a time from a rotating origin; time until every node applied it.
async fn sync_p2(n: usize, writes: usize) -> (Result, Result) {
    let nodes = sync_nodes(n).await;
    let mut subs: Vec<_> = nodes.iter().map(|s| s.subscribe()).collect();
    let mut samples = Vec::with_capacity(writes);
    let before: u64 = {
        let mut b = 0;
        for s in &nodes {
            b += s.mesh().stats().await.expect("stats").sent.bytes;
        }
        b
    };
    for w in 0..writes {
        let origin = w % n;
        let key = format!("k{w:08}-16-bytes");
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
    }
    let mut after = 0;
    for s in &nodes {
        after += s.mesh().stats().await.expect("stats").sent.bytes;
    }
    let per_update = (after - before) as f64 / writes as f64 / (n - 1) as f64;
    for s in &nodes {
        let _ = s.close().await;
    }
    (
        Result {
            scenario: format!("sync-P2 N={n}"),
            unit: "ms",
            samples,
            note: "write until every node applied".into(),
        },
        Result {
            scenario: format!("sync-P8 N={n}"),
            unit: "B",
            samples: vec![per_update],
            note: "frame bytes sent per update per receiving node, 16 B key / 100 B value, signed"
                .into(),
        },
    )
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// P7: resident memory per key of a replica's store holding `keys` keys (32 B key, 100 B value),
/// written in signed batches of 1000, as a receiver holds them (one record per key).
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
        // As a receiving replica holds them: opened (verified) from the wire batch.
        let (_, wire) = seal(&kp, &[0; 32], records);
        for s in open(wire, &limits).expect("a valid batch") {
            store.insert(s);
        }
        i = end;
    }
    let after = rss_bytes().unwrap_or(0);
    let per_key = after.saturating_sub(before) as f64 / keys as f64;
    drop(store);
    Result {
        scenario: format!("sync-P7 {keys} keys"),
        unit: "B/key",
        samples: vec![per_key],
        note: "resident memory per key of a receiving replica's store (32 B key, 100 B value, signed batches of 1000)".into(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let want = |name: &str| only.is_empty() || only.iter().any(|o| name.starts_with(o.as_str()));
    let scale = if quick { 1 } else { 4 };
    let mut results = Vec::new();
    if want("mesh-broadcast") {
        results.push(mesh_broadcast(10, 100 * scale).await);
    }
    if want("sync-P1") {
        results.push(sync_p1(1000, if quick { 3 } else { 5 }).await);
    }
    if want("sync-P2") || want("sync-P8") {
        for n in [3, 16] {
            let (p2, p8) = sync_p2(n, 100 * scale).await;
            results.push(p2);
            results.push(p8);
        }
    }
    if want("sync-P7") {
        results.push(sync_p7(if quick { 100_000 } else { 1_000_000 }));
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
        json_rows.push(json!({"scenario": r.scenario, "unit": r.unit, "median": p50, "p99": p99, "min": min, "max": max, "samples": r.samples.len(), "note": r.note}));
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench");
    let _ = std::fs::create_dir_all(&out);
    let doc = json!({"quick": quick, "results": json_rows});
    match std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&doc).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nwrote {}", out.join("results.json").display()),
        Err(e) => eprintln!("could not write results.json: {e}"),
    }
}
