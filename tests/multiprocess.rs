//! Several `rs2p node` processes on loopback, driven through their standard input as scripts
//! would: they connect, writes through one appear on the others, a lease held by one refuses the
//! others, and a process killed with SIGKILL and started again catches up.

use std::time::Duration;

use rs2p_tests::{free_port, NodeProc};

const T: Duration = Duration::from_secs(10);

#[test]
fn three_processes_share_a_dictionary_and_a_killed_one_catches_up() {
    let a_addr = format!("127.0.0.1:{}", free_port());
    let mut a = NodeProc::start(&[], &a_addr, &[]);
    let mut b = NodeProc::start(&[], "127.0.0.1:0", &[&a_addr]);
    let c_addr = format!("127.0.0.1:{}", free_port());
    let mut c = NodeProc::start(&[], &c_addr, &[&a_addr]);
    a.wait_peers(2, T);
    b.wait_peers(2, T);
    c.wait_peers(2, T);

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
    c.kill();
    for i in 0..50 {
        assert_eq!(b.ask(&format!("set k{i} v{i}"))["ok"], true);
    }
    let mut c = NodeProc::start(&[], &c_addr, &[&a_addr]);
    let r = c.ask("wait-len 51 15000");
    assert_eq!(r["ok"], true, "the restarted node caught up: {r}");
    assert_eq!(c.ask("get k49")["value"], "v49");
    assert_eq!(c.ask("items")["items"], a.ask("items")["items"]);
    assert!(c.quit(), "quit exits with status 0");
}
