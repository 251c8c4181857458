//! Nodes on separate hosts: Linux network namespaces on one bridge, one `rs2p node` process each,
//! with addresses that exist only inside those namespaces. Needs root and iproute2, so the tests
//! are `#[ignore]`d; `cargo xtask test` runs them with `--ignored` when it is root.

use std::process::Command;
use std::time::Duration;

use rs2p_tests::NodeProc;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces `<tag>-br` (holding the bridge) and `<tag>-1..=n`, each host at 10.77.0.i/24.
struct Hosts {
    tag: String,
    n: usize,
}

impl Hosts {
    fn new(n: usize) -> Hosts {
        let tag = format!("r2p{}", std::process::id() % 100_000);
        let h = Hosts { tag, n };
        let br = h.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = h.ns(i);
            ip(&["netns", "add", &ns]);
            let (host_end, bridge_end) = (format!("{}v{i}", h.tag), format!("{}b{i}", h.tag));
            ip(&[
                "link",
                "add",
                &host_end,
                "type",
                "veth",
                "peer",
                "name",
                &bridge_end,
            ]);
            ip(&["link", "set", &host_end, "netns", &ns]);
            ip(&["link", "set", &bridge_end, "netns", &br]);
            ip(&["-n", &br, "link", "set", &bridge_end, "master", "br0"]);
            ip(&["-n", &br, "link", "set", &bridge_end, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.77.0.{i}/24"),
                "dev",
                &host_end,
            ]);
            ip(&["-n", &ns, "link", "set", &host_end, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        h
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.tag)
    }

    fn addr(i: usize) -> String {
        format!("10.77.0.{i}:7000")
    }

    /// Takes host `i`'s link to the bridge down or up.
    fn link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &format!("{}b{i}", self.tag),
            if up { "up" } else { "down" },
        ]);
    }

    fn start(&self, i: usize, peers: &[usize]) -> NodeProc {
        let ns = self.ns(i);
        let peers: Vec<String> = peers.iter().map(|&p| Self::addr(p)).collect();
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        NodeProc::start(&["ip", "netns", "exec", &ns], &Self::addr(i), &peers)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 1..=self.n {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge_ns()])
            .status();
    }
}

#[test]
#[ignore = "needs root and iproute2: run by `cargo xtask test` as root"]
fn three_hosts_converge_after_a_partition_with_writes_on_both_sides() {
    let hosts = Hosts::new(3);
    let mut n1 = hosts.start(1, &[]);
    let mut n2 = hosts.start(2, &[1]);
    let mut n3 = hosts.start(3, &[1]);
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
