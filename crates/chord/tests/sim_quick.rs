#![cfg(feature = "sim")]
use rs2p_chord::sim::SimRing;
use rs2p_chord::ChordConfig;
use rs2p_testkit::Faults;

#[test]
fn quick() {
    let mut cfg = ChordConfig::default();
    cfg.stabilize = std::time::Duration::from_millis(500);
    let n = 16;
    let mut ring = SimRing::build(1, n, n, cfg, Faults::NONE, 300, 10_000);
    println!("{:?}", ring.check_ring());
    for k in 0..50u32 {
        let c = ring.put((k as usize) % n, &k.to_le_bytes(), Some(b"v"));
        if c.is_err() {
            for i in 0..n {
                let m = ring.machine(i);
                println!("{i} {:?} store {}", m.stats(), m.store().len());
            }
        }
        assert!(c.is_ok(), "{c:?}");
    }
    let mut hops = vec![];
    for k in 0..50u32 {
        let (v, h) = ring
            .get((k as usize * 7) % n, &k.to_le_bytes())
            .expect("get");
        assert_eq!(v.as_deref(), Some(&b"v"[..]));
        hops.push(h);
    }
    println!("hops {hops:?}");
    ring.sim.advance(3000);
    for k in 0..50u32 {
        assert!(ring.fully_replicated(&k.to_le_bytes()), "key {k}");
    }
    ring.check_ring().unwrap();
}

#[test]
fn scale() {
    for n in [64usize, 256, 1024] {
        let t = std::time::Instant::now();
        let mut cfg = ChordConfig::default();
        cfg.stabilize = std::time::Duration::from_millis(500);
        let mut ring = SimRing::build(2, n, n, cfg, Faults::NONE, 50, 20_000);
        let built = t.elapsed();
        let ok = ring.check_ring();
        let mut hops = vec![];
        for k in 0..300u32 {
            let (_, h) = ring
                .get((k as usize * 7) % n, &k.to_le_bytes())
                .expect("get");
            hops.push(h);
        }
        let mean = hops.iter().sum::<u32>() as f64 / hops.len() as f64;
        let conns: usize = (0..n).map(|i| ring.sim.node(i).mesh().peers().len()).sum();
        println!(
            "n={n} ring={ok:?} mean={mean:.2} max={} conns/node={} built in {built:?} total {:?}",
            hops.iter().max().unwrap(),
            conns / n,
            t.elapsed()
        );
    }
}
