//! `rs2p node`: one sync or chord node driven by standard input, one answer line per command
//! line. Both sockets answer the same commands with the same JSON; for the chord socket `len`,
//! `keys`, `items` and `wait-len` walk the whole ring.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rs2p_chord::{ChordError, ChordOptions, ChordSocket};
use rs2p_mesh::{MeshOptions, MeshSocket, Network};
use rs2p_sync::{DelError, SetError, SyncConfig, SyncOptions, SyncSocket};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

pub(crate) struct NodeArgs {
    pub(crate) listen: SocketAddr,
    pub(crate) peers: Vec<SocketAddr>,
    pub(crate) network: String,
    pub(crate) leasing: bool,
    pub(crate) signed: bool,
    pub(crate) json: bool,
    pub(crate) chord: bool,
    pub(crate) data: Option<rs2p_sync::DataOptions>,
}

/// The socket a node runs: the same commands work on both.
enum Socket {
    Sync(SyncSocket),
    Chord(ChordSocket),
}

fn chord_error(e: ChordError) -> Value {
    let code = match &e {
        ChordError::TooLarge { key, .. } if *key == 0 || *key > 1024 => "bad_key",
        ChordError::TooLarge { .. } => "value_too_large",
        ChordError::Unreachable { .. } => "unreachable",
        ChordError::NotJoined => "not_joined",
        ChordError::NotFound => "not_found",
        ChordError::Superseded => "superseded",
        _ => "closed",
    };
    json!({"ok": false, "error": code, "message": e.to_string()})
}

impl Socket {
    fn mesh(&self) -> &MeshSocket {
        match self {
            Socket::Sync(s) => s.mesh(),
            Socket::Chord(c) => c.mesh(),
        }
    }

    async fn set(&self, k: &str, v: &str) -> Result<(), Value> {
        match self {
            Socket::Sync(s) => s.set(k, v).await.map_err(set_error),
            Socket::Chord(c) => c.set(k, v).await.map_err(chord_error),
        }
    }

    async fn get(&self, k: &str) -> Result<Option<Bytes>, Value> {
        match self {
            Socket::Sync(s) => Ok(s.get(k)),
            Socket::Chord(c) => c.get(k).await.map_err(chord_error),
        }
    }

    async fn del(&self, k: &str) -> Result<(), Value> {
        match self {
            Socket::Sync(s) => s.del(k).await.map_err(del_error),
            Socket::Chord(c) => {
                // As the sync node: deleting a missing key is `not_found`.
                if c.get(k).await.map_err(chord_error)?.is_none() {
                    return Err(chord_error(ChordError::NotFound));
                }
                c.del(k).await.map_err(chord_error)
            }
        }
    }

    async fn pop(&self, k: &str) -> Result<Bytes, Value> {
        match self {
            Socket::Sync(s) => s.pop(k).await.map_err(del_error),
            Socket::Chord(c) => c.pop(k).await.map_err(chord_error),
        }
    }

    async fn items(&self) -> Result<Vec<(Bytes, Bytes)>, Value> {
        match self {
            Socket::Sync(s) => Ok(s.items()),
            Socket::Chord(c) => c.items().await.map_err(chord_error),
        }
    }

    async fn keys(&self) -> Result<Vec<Bytes>, Value> {
        match self {
            Socket::Sync(s) => Ok(s.keys()),
            Socket::Chord(c) => c.keys().await.map_err(chord_error),
        }
    }

    async fn len(&self) -> Result<usize, Value> {
        match self {
            Socket::Sync(s) => Ok(s.len()),
            Socket::Chord(c) => c.len().await.map_err(chord_error),
        }
    }

    async fn close(&self) {
        let _ = match self {
            Socket::Sync(s) => s.close().await.map_err(|e| e.to_string()),
            Socket::Chord(c) => c.close().await.map_err(|e| e.to_string()),
        };
    }
}

pub(crate) async fn run(args: NodeArgs) -> Result<(), String> {
    let mesh = MeshOptions {
        listen: args.listen,
        network: Network::named(args.network),
        ..MeshOptions::default()
    };
    let socket = if args.chord {
        let mut opts = ChordOptions::default();
        opts.mesh = MeshOptions {
            config: opts.mesh.config,
            ..mesh
        };
        opts.data = args.data;
        Socket::Chord(
            ChordSocket::bind(opts)
                .await
                .map_err(|e| format!("cannot start the node on {}: {e}", args.listen))?,
        )
    } else {
        let mut sync = SyncConfig::default();
        sync.leasing = args.leasing;
        sync.signed = args.signed;
        Socket::Sync(
            SyncSocket::bind(SyncOptions {
                mesh,
                sync,
                data: args.data,
            })
            .await
            .map_err(|e| format!("cannot start the node on {}: {e}", args.listen))?,
        )
    };
    for peer in args.peers {
        let mesh = socket.mesh().clone();
        // Persistent: the node keeps redialing with backoff until the peer answers.
        tokio::spawn(async move { mesh.connect(peer).await });
    }
    let out = Output { json: args.json };
    out.line(&json!({"event": "ready", "id": socket.mesh().local_id().to_string(), "addr": socket.mesh().local_addr().to_string()}));
    // Lines come in batches: every complete line already read, so that a run of `set` lines
    // can be written together (below) rather than one awaited write at a time.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<std::io::Result<String>>>(16);
    tokio::spawn(async move {
        let mut lines = BufReader::with_capacity(1 << 16, tokio::io::stdin()).lines();
        loop {
            let mut batch = Vec::new();
            let mut end = false;
            loop {
                match lines.next_line().await.transpose() {
                    Some(Ok(l)) => batch.push(Ok(l)),
                    Some(Err(e)) => {
                        batch.push(Err(e));
                        end = true;
                    }
                    None => end = true,
                }
                if end || batch.len() >= RUN || !lines.get_ref().buffer().contains(&b'\n') {
                    break;
                }
            }
            if tx.send(batch).await.is_err() || end {
                break;
            }
        }
    });
    let ok_line = out.render(&json!({"ok": true}));
    let mut pending: VecDeque<std::io::Result<String>> = VecDeque::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(batch) => pending.extend(batch),
                None => break,
            }
        }
        let line = match pending.pop_front() {
            Some(Ok(l)) => l,
            None => continue,
            Some(Err(e)) => {
                out.line(&json!({"ok": false, "error": "bad_input", "message": e.to_string()}));
                break;
            }
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        // Pipelining: `set` lines that have already arrived behind this one are written
        // together (one signed batch; each still gets its own answer, in order).
        if let (Socket::Sync(sync), Some(first)) = (&socket, set_args(line)) {
            let mut run = vec![first];
            while run.len() < RUN {
                if pending.is_empty() {
                    match rx.try_recv() {
                        Ok(batch) => pending.extend(batch),
                        Err(_) => break,
                    }
                }
                let next = pending.front().and_then(|l| l.as_deref().ok());
                match next.and_then(|l| set_args(l.trim_end_matches('\r'))) {
                    Some(kv) => {
                        run.push(kv);
                        pending.pop_front();
                    }
                    None => break,
                }
            }
            if run.len() > 1 {
                // Most answers are the same `{"ok":true}`: written as text, without building a
                // JSON value for each (a map allocation per answer: 7.5% of the writing node's
                // CPU in a run of a thousand `set` lines).
                let mut text = String::new();
                for r in sync.set_many(run).await {
                    match r {
                        Ok(()) => text.push_str(&ok_line),
                        Err(e) => text.push_str(&out.render(&set_error(e))),
                    }
                    text.push('\n');
                }
                out.write(&text);
                continue;
            }
        }
        match answer(&socket, line).await {
            Some(v) => out.line(&v),
            None => break,
        }
    }
    socket.close().await;
    Ok(())
}

/// The most `set` lines written together.
const RUN: usize = 1024;

/// The key and value of a well-formed `set` line.
fn set_args(line: &str) -> Option<(String, String)> {
    match line.strip_prefix("set ")?.split_once(' ') {
        Some((k, v)) if !k.is_empty() => Some((k.to_owned(), v.to_owned())),
        _ => None,
    }
}

struct Output {
    json: bool,
}

impl Output {
    fn line(&self, v: &Value) {
        self.write(&(self.render(v) + "\n"));
    }

    /// One answer as the line it is written as (without the newline).
    fn render(&self, v: &Value) -> String {
        if self.json {
            v.to_string()
        } else {
            human(v)
        }
    }

    /// Several answers' lines, written together: one system call, where a line at a time would
    /// make standard output (line-buffered) write each line alone.
    fn write(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
}

/// The same answer in a form a person reads easily.
fn human(v: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    };
    if v.get("event").is_some() {
        return format!(
            "ready: node {} listening on {}",
            text(&v["id"]),
            text(&v["addr"])
        );
    }
    if v["ok"] == Value::Bool(false) {
        let mut s = format!("error: {}", text(&v["error"]));
        for (k, val) in v.as_object().into_iter().flatten() {
            if k != "ok" && k != "error" {
                s.push_str(&format!(" {k}={}", text(val)));
            }
        }
        return s;
    }
    if let Some(value) = v.get("value") {
        return text(value);
    }
    if let Some(len) = v.get("len") {
        return format!("{len}");
    }
    for list in ["keys", "peers"] {
        if let Some(Value::Array(items)) = v.get(list) {
            return items.iter().map(text).collect::<Vec<_>>().join("\n");
        }
    }
    if let Some(Value::Array(items)) = v.get("items") {
        return items
            .iter()
            .map(|kv| format!("{} = {}", text(&kv[0]), text(&kv[1])))
            .collect::<Vec<_>>()
            .join("\n");
    }
    "ok".into()
}

fn utf8(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bad(usage: &str) -> Value {
    json!({"ok": false, "error": "bad_arguments", "message": format!("usage: {usage}")})
}

fn set_error(e: SetError) -> Value {
    match e {
        SetError::LeaseHeld { owner, until } => {
            json!({"ok": false, "error": "lease_held", "owner": owner.to_string(), "until_ms": until})
        }
        SetError::BadKey { .. } => {
            json!({"ok": false, "error": "bad_key", "message": e.to_string()})
        }
        SetError::ValueTooLarge { .. } => {
            json!({"ok": false, "error": "value_too_large", "message": e.to_string()})
        }
        SetError::Storage(_) => {
            json!({"ok": false, "error": "storage", "message": e.to_string()})
        }
        other => json!({"ok": false, "error": "closed", "message": other.to_string()}),
    }
}

fn del_error(e: DelError) -> Value {
    match e {
        DelError::LeaseHeld { owner, until } => {
            json!({"ok": false, "error": "lease_held", "owner": owner.to_string(), "until_ms": until})
        }
        DelError::NotFound => json!({"ok": false, "error": "not_found"}),
        DelError::Storage(_) => {
            json!({"ok": false, "error": "storage", "message": e.to_string()})
        }
        other => json!({"ok": false, "error": "closed", "message": other.to_string()}),
    }
}

fn reply<T>(r: Result<T, Value>, ok: impl FnOnce(T) -> Value) -> Value {
    r.map_or_else(|e| e, ok)
}

/// `wait-len`: waits until the dictionary holds at least `n` keys, or `t` has passed. A sync
/// node checks after each change it hears of; a chord node's len walks the ring, so it polls.
async fn wait_len(s: &Socket, n: usize, t: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + t;
    let mut events = match s {
        Socket::Sync(sync) => Some(sync.subscribe()),
        Socket::Chord(_) => None,
    };
    loop {
        // A walk that fails while the ring forms counts as not there yet.
        let len = s.len().await.unwrap_or(0);
        if len >= n {
            return json!({"ok": true, "len": len});
        }
        let wake = async {
            match &mut events {
                // Any event (or a lag) is a reason to look again; the end of the stream (the
                // node closed) means polling from now on.
                Some(ev) => {
                    let open = ev.next().await.is_some();
                    // Events come in bursts (a batch of records): look again once per burst.
                    while ev.try_next().is_some() {}
                    open
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    true
                }
            }
        };
        match tokio::time::timeout_at(deadline, wake).await {
            Ok(true) => {}
            Ok(false) => events = None,
            Err(_) => {
                let len = s.len().await.unwrap_or(0);
                return if len >= n {
                    json!({"ok": true, "len": len})
                } else {
                    json!({"ok": false, "error": "timeout", "len": len})
                };
            }
        }
    }
}

/// The answer to one command line, or `None` for `quit`.
async fn answer(s: &Socket, line: &str) -> Option<Value> {
    let (cmd, rest) = match line.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (line, ""),
    };
    let mut args = rest.split_whitespace();
    let v = match cmd {
        "quit" | "exit" => return None,
        "set" => match set_args(line) {
            Some((k, v)) => reply(s.set(&k, &v).await, |()| json!({"ok": true})),
            None => bad("set K V"),
        },
        "get" => match (args.next(), args.next()) {
            (Some(k), None) => reply(
                s.get(k).await,
                |v| json!({"ok": true, "value": v.as_ref().map(utf8)}),
            ),
            _ => bad("get K"),
        },
        "del" => match (args.next(), args.next()) {
            (Some(k), None) => reply(s.del(k).await, |()| json!({"ok": true})),
            _ => bad("del K"),
        },
        "pop" => match (args.next(), args.next()) {
            (Some(k), None) => reply(s.pop(k).await, |v| json!({"ok": true, "value": utf8(&v)})),
            _ => bad("pop K"),
        },
        "len" => reply(s.len().await, |n| json!({"ok": true, "len": n})),
        "keys" => reply(
            s.keys().await,
            |k| json!({"ok": true, "keys": k.iter().map(utf8).collect::<Vec<_>>()}),
        ),
        "items" => reply(
            s.items().await,
            |items| json!({"ok": true, "items": items.iter().map(|(k, v)| [utf8(k), utf8(v)]).collect::<Vec<_>>()}),
        ),
        "peers" => match s.mesh().peers().await {
            Ok(p) => {
                json!({"ok": true, "peers": p.iter().map(ToString::to_string).collect::<Vec<_>>()})
            }
            Err(e) => json!({"ok": false, "error": "closed", "message": e.to_string()}),
        },
        "stats" => match s {
            Socket::Sync(s) => {
                let st = s.stats();
                let disk = s.disk_stats();
                json!({
                    "ok": true,
                    "len": s.len(),
                    "digest": format!("{:016x}", s.digest()),
                    "records_received": st.records_received,
                    "repairs_started": st.repairs_started,
                    "records_sent_repair": st.records_sent_repair,
                    "stale": st.stale,
                    "disk_commits": disk.as_ref().map_or(0, |d| d.commits),
                    "disk_keys_written": disk.as_ref().map_or(0, |d| d.keys_written),
                })
            }
            Socket::Chord(c) => json!({"ok": true, "held": c.held()}),
        },
        "wait-len" => {
            let n = args.next().and_then(|a| a.parse::<usize>().ok());
            let t = args.next().and_then(|a| a.parse::<u64>().ok());
            match (n, t, args.next()) {
                (Some(n), Some(t), None) => wait_len(s, n, Duration::from_millis(t)).await,
                _ => bad("wait-len N T (a count and milliseconds)"),
            }
        }
        other => {
            json!({"ok": false, "error": "unknown_command", "message": format!("unknown command {other:?}; commands: set get del pop len keys items peers wait-len stats quit")})
        }
    };
    Some(v)
}
