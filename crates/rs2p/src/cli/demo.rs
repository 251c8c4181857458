//! `rs2p demo`: a local mesh of sync nodes converging, with progress bars and timings.

use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rs2p_sync::{SyncOptions, SyncSocket};

const BATCH: usize = 1000;

pub(crate) async fn run(nodes: usize, keys: usize) -> Result<(), String> {
    if nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    println!("rs2p demo: {nodes} sync nodes on loopback, {keys} keys written through node 0");
    let started = Instant::now();
    let mut socks = Vec::with_capacity(nodes);
    for _ in 0..nodes {
        socks.push(
            SyncSocket::bind(SyncOptions::default())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let first = socks[0].mesh().local_addr();
    for s in &socks[1..] {
        s.mesh().connect(first).await.map_err(|e| e.to_string())?;
    }
    let want_peers = (nodes - 1).min(8);
    for s in &socks {
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.mesh().peers().await.map_err(|e| e.to_string())?.len() < want_peers {
            if Instant::now() > deadline {
                return Err("the nodes did not find each other within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!(
        "mesh formed in {:.1} ms (each node has {want_peers}+ peers)",
        ms(started.elapsed())
    );

    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(20));
    let style =
        ProgressStyle::with_template("node {prefix:>2} [{bar:40}] {pos:>7}/{len} keys {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> ");
    let bars: Vec<ProgressBar> = (0..nodes)
        .map(|i| {
            let b = multi.add(ProgressBar::new(keys as u64));
            b.set_style(style.clone());
            b.set_prefix(i.to_string());
            b
        })
        .collect();

    let t0 = Instant::now();
    let writer = socks[0].clone();
    let write = tokio::spawn(async move {
        let mut i = 0;
        while i < keys {
            let end = (i + BATCH).min(keys);
            writer
                .update((i..end).map(|k| (format!("key-{k:07}"), format!("value-{k}"))))
                .await
                .map_err(|e| e.to_string())?;
            i = end;
        }
        Ok::<Duration, String>(t0.elapsed())
    });
    let mut done: Vec<Option<Duration>> = vec![None; nodes];
    let deadline = t0 + Duration::from_secs(120);
    while done.iter().any(Option::is_none) {
        for (i, s) in socks.iter().enumerate() {
            let len = s.len();
            bars[i].set_position(len as u64);
            if len >= keys && done[i].is_none() {
                done[i] = Some(t0.elapsed());
                bars[i].finish_with_message(format!("in {:.1} ms", ms(t0.elapsed())));
            }
        }
        if Instant::now() > deadline {
            return Err("not every node converged within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wrote = write.await.map_err(|e| e.to_string())??;
    drop(bars);
    let reference = socks[0].items();
    let equal = socks.iter().all(|s| s.items() == reference);
    println!();
    println!(
        "writes returned on node 0 after {:.1} ms ({} batches of up to {BATCH})",
        ms(wrote),
        keys.div_ceil(BATCH)
    );
    for (i, d) in done.iter().enumerate() {
        println!(
            "node {i:>2} holds all {keys} keys after {:>8.1} ms",
            ms(d.unwrap_or_default())
        );
    }
    let last = done.iter().flatten().max().copied().unwrap_or_default();
    println!(
        "every node converged in {:.1} ms ({:.0} keys/s end to end); replicas identical: {}",
        ms(last),
        keys as f64 / last.as_secs_f64().max(1e-9),
        if equal { "yes" } else { "NO" }
    );
    for s in &socks {
        let _ = s.close().await;
    }
    if equal {
        Ok(())
    } else {
        Err("replicas differ".into())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `rs2p demo --socket chord`: a ring of local nodes storing keys and finding them, with the
/// hops each lookup took.
pub(crate) async fn run_chord(nodes: usize, keys: usize) -> Result<(), String> {
    use rs2p_chord::{ChordOptions, ChordSocket};
    if nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    println!("rs2p demo: a chord ring of {nodes} nodes on loopback, {keys} keys");
    let started = Instant::now();
    let mut opts = ChordOptions::default();
    opts.chord.stabilize = Duration::from_millis(250);
    let mut ring: Vec<ChordSocket> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let s = ChordSocket::bind(opts.clone())
            .await
            .map_err(|e| e.to_string())?;
        if i > 0 {
            let via = ring[i / 2].mesh().local_addr();
            s.mesh().connect(via).await.map_err(|e| e.to_string())?;
            if !s.wait_joined(Duration::from_secs(20)).await {
                return Err(format!("node {i} did not join within 20 s"));
            }
        }
        ring.push(s);
    }
    // A few stabilisation rounds for fingers.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!("ring formed in {:.1} ms", ms(started.elapsed()));

    let bar = ProgressBar::with_draw_target(
        Some(keys as u64 * 2),
        ProgressDrawTarget::stderr_with_hz(20),
    );
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {pos:>7}/{len} {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    bar.set_message("writes");
    let t0 = Instant::now();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(BATCH) {
        let writer = &ring[chunk[0] / BATCH % nodes];
        writer
            .update(
                chunk
                    .iter()
                    .map(|k| (format!("key-{k:07}"), format!("value-{k}"))),
            )
            .await
            .map_err(|e| e.to_string())?;
        bar.inc(chunk.len() as u64);
    }
    let wrote = t0.elapsed();
    bar.set_message("reads");
    let mut hops = [0u64; 16];
    let mut lat = Vec::with_capacity(keys);
    let t1 = Instant::now();
    for k in 0..keys {
        let reader = &ring[(k * 7 + 3) % nodes];
        let t = Instant::now();
        let (v, h) = reader
            .get_with_hops(format!("key-{k:07}"))
            .await
            .map_err(|e| e.to_string())?;
        lat.push(t.elapsed());
        if v.as_deref() != Some(format!("value-{k}").as_bytes()) {
            return Err(format!("key-{k:07} read back wrong: {v:?}"));
        }
        hops[(h as usize).min(15)] += 1;
        bar.inc(1);
    }
    let read = t1.elapsed();
    bar.finish_and_clear();
    lat.sort();
    let pct = |p: f64| ms(lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]);
    let total: u64 = hops.iter().sum();
    let mean = hops
        .iter()
        .enumerate()
        .map(|(h, n)| h as f64 * *n as f64)
        .sum::<f64>()
        / total as f64;
    println!(
        "{keys} writes in {:.1} ms; {keys} reads from every node in {:.1} ms (p50 {:.3} ms, p99 {:.3} ms)",
        ms(wrote),
        ms(read),
        pct(0.5),
        pct(0.99)
    );
    println!(
        "hops per lookup: mean {mean:.2} (½·log2 N = {:.2})",
        (nodes as f64).log2() / 2.0
    );
    for (h, n) in hops.iter().enumerate().filter(|(_, n)| **n > 0) {
        println!(
            "  {h:>2} hops: {n:>7} {}",
            "#".repeat(((n * 50) / total.max(1)) as usize)
        );
    }
    let held: Vec<usize> = ring.iter().map(ChordSocket::held).collect();
    println!(
        "records held per node (each key on {} nodes): min {} max {} total {}",
        opts.chord.replicas,
        held.iter().min().unwrap_or(&0),
        held.iter().max().unwrap_or(&0),
        held.iter().sum::<usize>()
    );
    let t2 = Instant::now();
    let len = ring[0].len().await.map_err(|e| e.to_string())?;
    println!(
        "len() walked the ring in {:.1} ms: {len} keys",
        ms(t2.elapsed())
    );
    for s in &ring {
        let _ = s.close().await;
    }
    if len == keys {
        Ok(())
    } else {
        Err(format!("the ring holds {len} keys, not {keys}"))
    }
}
