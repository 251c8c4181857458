//! Hosts for the network-namespace tiers: namespaces `<tag>-1..=n` on one bridge (in namespace
//! `<tag>-br`), host `i` at 10.77.0.i/24, addresses that exist only inside those namespaces.
//! Faults are injected on the bridge with `nft` (partitions, random loss) or by taking a host's
//! port down. Everything is removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::NodeProc;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// `n` hosts on one bridge. See the [module docs](self).
pub struct Hosts {
    tag: String,
    n: usize,
    nft: bool,
}

impl Hosts {
    /// Creates the namespaces, the bridge and the links.
    pub fn new(n: usize) -> Hosts {
        let tag = format!(
            "r2p{}{}",
            std::process::id() % 10_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let h = Hosts { tag, n, nft: false };
        let br = h.bridge_ns();
        ip(&["netns", "add", &br]);
        ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = h.ns(i);
            ip(&["netns", "add", &ns]);
            let (host_end, bridge_end) = (format!("{}v{i}", h.tag), h.port(i));
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

    /// Host `i`'s namespace.
    pub fn ns(&self, i: usize) -> String {
        format!("{}-{i}", self.tag)
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.tag)
    }

    /// Host `i`'s port on the bridge.
    fn port(&self, i: usize) -> String {
        format!("{}b{i}", self.tag)
    }

    /// Host `i`'s node address.
    pub fn addr(i: usize) -> String {
        format!("10.77.0.{i}:7000")
    }

    /// Takes host `i`'s link to the bridge down or up.
    pub fn link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &self.port(i),
            if up { "up" } else { "down" },
        ]);
    }

    /// Runs an nft script in the bridge's namespace.
    fn nft(&mut self, script: &str) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.bridge_ns(), "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("stdin")
                    .write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("nft");
        assert!(
            out.status.success(),
            "nft {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.nft = true;
    }

    fn ports(&self, hosts: &[usize]) -> String {
        let names: Vec<String> = hosts
            .iter()
            .map(|&i| format!("\"{}\"", self.port(i)))
            .collect();
        format!("{{ {} }}", names.join(", "))
    }

    /// Drops every frame between the two groups (a partition; connections are not reset).
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        let (pa, pb) = (self.ports(a), self.ports(b));
        self.nft(&format!(
            "table bridge rs2p_chaos {{\n chain chaos_forward {{\n  type filter hook forward priority 0; policy accept;\n  iifname {pa} oifname {pb} drop\n  iifname {pb} oifname {pa} drop\n }}\n}}\n"
        ));
    }

    /// Drops `percent`% of all frames crossing the bridge, at random.
    pub fn loss(&mut self, percent: u32) {
        self.nft(&format!(
            "table bridge rs2p_chaos {{\n chain chaos_forward {{\n  type filter hook forward priority 0; policy accept;\n  numgen random mod 100 < {percent} drop\n }}\n}}\n"
        ));
    }

    /// Removes every partition and loss rule.
    pub fn heal(&mut self) {
        if self.nft {
            self.nft("delete table bridge rs2p_chaos\n");
            self.nft = false;
        }
    }

    /// Starts `rs2p node` in host `i` with `peers` (host numbers) and `extra` arguments.
    pub fn start(&self, i: usize, peers: &[usize], extra: &[&str]) -> NodeProc {
        let ns = self.ns(i);
        let peers: Vec<String> = peers.iter().map(|&p| Self::addr(p)).collect();
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        NodeProc::start_with(&["ip", "netns", "exec", &ns], &Self::addr(i), &peers, extra)
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
