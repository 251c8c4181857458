//! `rs2p node`: one sync node driven by standard input, one answer line per command line.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rs2p_mesh::{MeshOptions, Network};
use rs2p_sync::{DelError, SetError, SyncConfig, SyncOptions, SyncSocket};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

pub(crate) struct NodeArgs {
    pub(crate) listen: SocketAddr,
    pub(crate) peers: Vec<SocketAddr>,
    pub(crate) network: String,
    pub(crate) leasing: bool,
    pub(crate) json: bool,
}

pub(crate) async fn run(args: NodeArgs) -> Result<(), String> {
    let mut sync = SyncConfig::default();
    sync.leasing = args.leasing;
    let opts = SyncOptions {
        mesh: MeshOptions {
            listen: args.listen,
            network: Network::named(args.network),
            ..MeshOptions::default()
        },
        sync,
    };
    let socket = SyncSocket::bind(opts)
        .await
        .map_err(|e| format!("cannot start the node on {}: {e}", args.listen))?;
    for peer in args.peers {
        let mesh = socket.mesh().clone();
        // Persistent: the node keeps redialing with backoff until the peer answers.
        tokio::spawn(async move { mesh.connect(peer).await });
    }
    let out = Output { json: args.json };
    out.line(&json!({"event": "ready", "id": socket.local_id().to_string(), "addr": socket.mesh().local_addr().to_string()}));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                out.line(&json!({"ok": false, "error": "bad_input", "message": e.to_string()}));
                break;
            }
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        match answer(&socket, line).await {
            Some(v) => out.line(&v),
            None => break,
        }
    }
    let _ = socket.close().await;
    Ok(())
}

struct Output {
    json: bool,
}

impl Output {
    fn line(&self, v: &Value) {
        let text = if self.json { v.to_string() } else { human(v) };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
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
        other => json!({"ok": false, "error": "closed", "message": other.to_string()}),
    }
}

fn del_error(e: DelError) -> Value {
    match e {
        DelError::LeaseHeld { owner, until } => {
            json!({"ok": false, "error": "lease_held", "owner": owner.to_string(), "until_ms": until})
        }
        DelError::NotFound => json!({"ok": false, "error": "not_found"}),
        other => json!({"ok": false, "error": "closed", "message": other.to_string()}),
    }
}

/// The answer to one command line, or `None` for `quit`.
async fn answer(s: &SyncSocket, line: &str) -> Option<Value> {
    let (cmd, rest) = match line.split_once(' ') {
        Some((c, r)) => (c, r),
        None => (line, ""),
    };
    let mut args = rest.split_whitespace();
    let v = match cmd {
        "quit" | "exit" => return None,
        "set" => match rest.split_once(' ') {
            Some((k, v)) if !k.is_empty() => match s.set(k, v).await {
                Ok(()) => json!({"ok": true}),
                Err(e) => set_error(e),
            },
            _ => bad("set K V"),
        },
        "get" => match (args.next(), args.next()) {
            (Some(k), None) => json!({"ok": true, "value": s.get(k).as_ref().map(utf8)}),
            _ => bad("get K"),
        },
        "del" => match (args.next(), args.next()) {
            (Some(k), None) => match s.del(k).await {
                Ok(()) => json!({"ok": true}),
                Err(e) => del_error(e),
            },
            _ => bad("del K"),
        },
        "pop" => match (args.next(), args.next()) {
            (Some(k), None) => match s.pop(k).await {
                Ok(v) => json!({"ok": true, "value": utf8(&v)}),
                Err(e) => del_error(e),
            },
            _ => bad("pop K"),
        },
        "len" => json!({"ok": true, "len": s.len()}),
        "keys" => json!({"ok": true, "keys": s.keys().iter().map(utf8).collect::<Vec<_>>()}),
        "items" => {
            json!({"ok": true, "items": s.items().iter().map(|(k, v)| [utf8(k), utf8(v)]).collect::<Vec<_>>()})
        }
        "peers" => match s.mesh().peers().await {
            Ok(p) => {
                json!({"ok": true, "peers": p.iter().map(ToString::to_string).collect::<Vec<_>>()})
            }
            Err(e) => json!({"ok": false, "error": "closed", "message": e.to_string()}),
        },
        "wait-len" => {
            let n = args.next().and_then(|a| a.parse::<usize>().ok());
            let t = args.next().and_then(|a| a.parse::<u64>().ok());
            match (n, t, args.next()) {
                (Some(n), Some(t), None) => {
                    let deadline = Instant::now() + Duration::from_millis(t);
                    loop {
                        let len = s.len();
                        if len >= n {
                            break json!({"ok": true, "len": len});
                        }
                        if Instant::now() >= deadline {
                            break json!({"ok": false, "error": "timeout", "len": len});
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                _ => bad("wait-len N T (a count and milliseconds)"),
            }
        }
        other => {
            json!({"ok": false, "error": "unknown_command", "message": format!("unknown command {other:?}; commands: set get del pop len keys items peers wait-len quit")})
        }
    };
    Some(v)
}
