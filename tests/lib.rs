//! Helpers shared by rs2p's workspace integration tests.

pub mod hosts;
pub mod sync_world;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The `rs2p` binary built for this test run (`cargo xtask test` builds it before the tests).
pub fn rs2p_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RS2P_BIN") {
        return PathBuf::from(p);
    }
    let mut dir = std::env::current_exe().expect("the test binary's path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("rs2p")
}

/// An `rs2p node --json` process, driven through its standard input.
pub struct NodeProc {
    /// The process.
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Its peer id.
    pub id: String,
    /// The address it listens on.
    pub addr: String,
}

impl NodeProc {
    /// Starts `rs2p node --listen LISTEN --json --peer P…`, prefixed by `wrapper` (for instance
    /// `ip netns exec NS`), and reads its ready line.
    pub fn start(wrapper: &[&str], listen: &str, peers: &[&str]) -> NodeProc {
        Self::start_with(wrapper, listen, peers, &[])
    }

    /// [`NodeProc::start`] with more arguments (such as `--socket chord`).
    pub fn start_with(wrapper: &[&str], listen: &str, peers: &[&str], extra: &[&str]) -> NodeProc {
        let bin = rs2p_bin();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(["node", "--listen", listen, "--json"]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (cargo build -p rs2p)", bin.display())
            });
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the ready line");
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("ready line {line:?}: {e}"));
        assert_eq!(ready["event"], "ready");
        NodeProc {
            id: ready["id"].as_str().expect("id").into(),
            addr: ready["addr"].as_str().expect("addr").into(),
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command line and returns the JSON answer.
    pub fn ask(&mut self, line: &str) -> Value {
        self.send(line);
        self.answer(line)
    }

    /// Sends every line at once, as a script piped into the node would, then reads one answer per
    /// line.
    pub fn pipe(&mut self, lines: &[String]) -> Vec<Value> {
        let script: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.stdin
            .write_all(script.as_bytes())
            .expect("the node's stdin");
        self.stdin.flush().expect("the node's stdin");
        lines.iter().map(|line| self.answer(line)).collect()
    }

    /// Reads the JSON answer to `line`.
    fn answer(&mut self, line: &str) -> Value {
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("the node's answer");
        serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{line:?} answered {answer:?}: {e}"))
    }

    /// Sends one command line without reading its answer (to kill the node mid-command).
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the node's stdin");
        self.stdin.flush().expect("the node's stdin");
    }

    /// Sends `quit` and waits for the exit status.
    pub fn quit(mut self) -> bool {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the node has at least `n` peers.
    pub fn wait_peers(&mut self, n: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.ask("peers")["peers"].as_array().map_or(0, Vec::len) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("node {} never reached {n} peers", self.addr);
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback (for a node that must be restarted on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the initiator's side of the handshake on `stream` with a fresh identity in the default
/// network, as a peer driven by hand would (to send raw frames, or to go silent).
pub async fn handshake_as_new_peer(
    stream: tokio::net::TcpStream,
    timeout: Duration,
) -> Result<(rs2p_base::PeerId, rs2p_base::net::SecureConnection), rs2p_base::HandshakeError> {
    let identity = rs2p_base::LocalIdentity::new(rs2p_base::Keypair::generate());
    rs2p_base::net::handshake(
        stream,
        rs2p_base::net::Role::Initiator(None),
        &identity,
        &rs2p_base::Network::default(),
        rs2p_base::handshake::LocalInfo::default(),
        1 << 20,
        timeout,
    )
    .await
    .map(|c| (identity.peer_id(), c))
}

/// A fresh, empty directory for one test (under the system's temporary directory; removed
/// first if a previous run left it).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rs2p-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
