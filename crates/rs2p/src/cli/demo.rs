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
