//! `chaos-proxy LISTEN TARGET`: rs2p-testkit's [`ChaosProxy`] as a process (so it can run inside
//! a network namespace). Prints `ready ADDR`, then answers each stdin line: `stall`, `resume`,
//! `stats` (bytes forwarded and connections) or `quit`.

use std::io::BufRead;

use rs2p_testkit::proxy::ChaosProxy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(target)) = (
        args.first().and_then(|a| a.parse().ok()),
        args.get(1).and_then(|a| a.parse().ok()),
    ) else {
        eprintln!("usage: chaos-proxy LISTEN_ADDR TARGET_ADDR");
        std::process::exit(2);
    };
    let proxy = match ChaosProxy::spawn(listen, target) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chaos-proxy: cannot listen on {listen}: {e}");
            std::process::exit(1);
        }
    };
    println!("ready {}", proxy.local_addr());
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "stall" => proxy.stall(),
            "resume" => proxy.resume(),
            "stats" => {}
            "quit" => break,
            other => {
                println!("error unknown command {other:?}");
                continue;
            }
        }
        println!("ok {} {}", proxy.forwarded(), proxy.connections());
    }
}
