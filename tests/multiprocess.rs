//! Several `rs2p node` processes on loopback, driven through their standard input as scripts
//! would: they connect, writes through one appear on the others, a lease held by one refuses the
//! others, and a process killed with SIGKILL and started again catches up.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

struct Node {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    id: String,
    addr: String,
}

impl Node {
    fn start(listen: &str, peers: &[&str]) -> Node {
        let mut cmd = Command::new(rs2p_tests::rs2p_bin());
        cmd.args(["node", "--listen", listen, "--json"]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("the rs2p binary (cargo build -p rs2p)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        assert_eq!(ready["event"], "ready");
        Node { id: ready["id"].as_str().unwrap().into(), addr: ready["addr"].as_str().unwrap().into(), child, stdin, stdout }
    }

    fn ask(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{line:?} answered {answer:?}: {e}"))
    }

    fn wait_peers(&mut self, n: usize) {
        for _ in 0..500 {
            if self.ask("peers")["peers"].as_array().unwrap().len() >= n {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("node {} never reached {n} peers", self.addr);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn three_processes_share_a_dictionary_and_a_killed_one_catches_up() {
    let a_addr = format!("127.0.0.1:{}", free_port());
    let mut a = Node::start(&a_addr, &[]);
    let mut b = Node::start("127.0.0.1:0", &[&a_addr]);
    let c_addr = format!("127.0.0.1:{}", free_port());
    let mut c = Node::start(&c_addr, &[&a_addr]);
    a.wait_peers(2);
    b.wait_peers(2);
    c.wait_peers(2);

    assert_eq!(a.ask("set greeting hello from a")["ok"], true);
    assert_eq!(b.ask("wait-len 1 10000")["len"], 1);
    assert_eq!(c.ask("wait-len 1 10000")["len"], 1);
    assert_eq!(c.ask("get greeting")["value"], "hello from a");

    // A's lease refuses the others.
    let r = b.ask("set greeting from b");
    assert_eq!(r["error"], "lease_held", "{r}");
    assert_eq!(r["owner"], a.id.as_str());
    assert_eq!(c.ask("del greeting")["error"], "lease_held");

    // Kill C without a chance to say goodbye; write while it is gone; restart it.
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    for i in 0..50 {
        assert_eq!(b.ask(&format!("set k{i} v{i}"))["ok"], true);
    }
    let mut c = Node::start(&c_addr, &[&a_addr]);
    let r = c.ask("wait-len 51 15000");
    assert_eq!(r["ok"], true, "the restarted node caught up: {r}");
    assert_eq!(c.ask("get k49")["value"], "v49");
    assert_eq!(c.ask("items")["items"], a.ask("items")["items"]);
    writeln!(c.stdin, "quit").unwrap();
    c.stdin.flush().unwrap();
    assert!(c.child.wait().unwrap().success(), "quit exits with status 0");
}
