//! Nodes on separate hosts: Linux network namespaces on one bridge, one `rs2p node` process each,
//! with addresses that exist only inside those namespaces. Needs root and iproute2, so the tests
//! are `#[ignore]`d; `cargo xtask test` runs them with `--ignored` when it is root.

use std::time::Duration;

use rs2p_tests::hosts::Hosts;

#[test]
#[ignore = "needs root and iproute2: run by `cargo xtask test` as root"]
fn three_hosts_converge_after_a_partition_with_writes_on_both_sides() {
    let hosts = Hosts::new(3);
    let mut n1 = hosts.start(1, &[], &[]);
    let mut n2 = hosts.start(2, &[1], &[]);
    let mut n3 = hosts.start(3, &[1], &[]);
    for n in [&mut n1, &mut n2, &mut n3] {
        n.wait_peers(2, Duration::from_secs(15));
    }
    assert_eq!(n1.ask("set before partition")["ok"], true);
    assert_eq!(n3.ask("wait-len 1 10000")["ok"], true);

    // Cut host 3 off, write on both sides, then heal.
    hosts.link(3, false);
    for i in 0..20 {
        assert_eq!(n1.ask(&format!("set left{i} from-1"))["ok"], true);
        assert_eq!(n3.ask(&format!("set right{i} from-3"))["ok"], true);
    }
    assert_eq!(n1.ask("set contested one")["ok"], true);
    assert_eq!(n3.ask("set contested three")["ok"], true);
    assert_eq!(
        n2.ask("wait-len 22 10000")["len"],
        22,
        "host 2 still sees host 1's side"
    );
    std::thread::sleep(Duration::from_secs(1));
    hosts.link(3, true);
    let started = std::time::Instant::now();
    for n in [&mut n1, &mut n2, &mut n3] {
        let r = n.ask("wait-len 42 60000");
        assert_eq!(r["ok"], true, "{} after healing: {r}", n.addr);
    }
    let items = n1.ask("items")["items"].clone();
    assert_eq!(n2.ask("items")["items"], items);
    assert_eq!(n3.ask("items")["items"], items);
    let contested = n2.ask("get contested")["value"].clone();
    assert!(contested == "one" || contested == "three");
    println!(
        "netns: 3 hosts converged {:.0} ms after healing; contested key went to {contested}",
        started.elapsed().as_secs_f64() * 1000.0
    );
}
