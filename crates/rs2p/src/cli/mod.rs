//! Command-line parsing and dispatch.

mod demo;
mod node;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// rs2p: peer-to-peer sockets in Rust.
#[derive(Debug, Parser)]
#[command(name = "rs2p", version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

/// The socket types the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SocketKind {
    /// The replicated dictionary (every node holds everything).
    Sync,
    /// The distributed hash table (each key on a few nodes).
    Chord,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts a mesh of sync nodes on loopback, writes keys through one and shows every node
    /// converge (or, with `--socket chord`, a ring that stores and finds keys).
    Demo {
        /// Which socket to show.
        #[arg(long, value_enum, default_value_t = SocketKind::Sync)]
        socket: SocketKind,
        /// How many nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// How many keys to write.
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
    },
    /// Runs one long-lived sync or chord node driven by standard input (one command per line).
    Node {
        /// Which socket to run.
        #[arg(long, value_enum, default_value_t = SocketKind::Sync)]
        socket: SocketKind,
        /// Where to listen (ip:port).
        #[arg(long)]
        listen: SocketAddr,
        /// A peer to connect to and keep connected (repeatable).
        #[arg(long = "peer")]
        peers: Vec<SocketAddr>,
        /// The network (nodes of other networks are refused).
        #[arg(long, default_value = "rs2p")]
        network: String,
        /// Plain last-writer-wins instead of leases.
        #[arg(long)]
        no_leasing: bool,
        /// Sync only: unsigned records, for a trusted network (any member can then write in any
        /// other's name; links stay encrypted). Such nodes share a dictionary only with each
        /// other.
        #[arg(long)]
        unsigned: bool,
        /// Answer in JSON, one object per line.
        #[arg(long)]
        json: bool,
        /// Keep the node's identity and records in this directory (created if missing), so a
        /// restarted node comes back with the same id, its leases and its data.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
        /// With --data-dir: acknowledge a write only once it is on disk (default: at once, on
        /// disk with the next group commit, a few milliseconds later).
        #[arg(long, requires = "data_dir")]
        durable: bool,
        /// Threads that run the node. 1 (the default) runs it all on one thread: no hand-offs
        /// between threads, the least CPU per write. 0 is one per core, for a node whose links'
        /// encryption needs more than one core.
        #[arg(long, default_value_t = 1, value_name = "N")]
        threads: usize,
    },
}

impl Args {
    /// The threads the runtime should have: `None` for one per core.
    pub(crate) fn threads(&self) -> Option<usize> {
        match self.command {
            Command::Node { threads: 0, .. } | Command::Demo { .. } => None,
            Command::Node { threads, .. } => Some(threads),
        }
    }
}

pub(crate) async fn run(args: Args) -> Result<(), String> {
    match args.command {
        Command::Demo {
            socket: SocketKind::Sync,
            nodes,
            keys,
        } => demo::run(nodes, keys).await,
        Command::Demo {
            socket: SocketKind::Chord,
            nodes,
            keys,
        } => demo::run_chord(nodes, keys).await,
        Command::Node {
            socket,
            listen,
            peers,
            network,
            no_leasing,
            unsigned,
            json,
            data_dir,
            durable,
            threads: _,
        } => {
            if unsigned && socket == SocketKind::Chord {
                return Err("--unsigned is for the sync socket only".into());
            }
            node::run(node::NodeArgs {
                listen,
                peers,
                network,
                leasing: !no_leasing,
                signed: !unsigned,
                json,
                chord: socket == SocketKind::Chord,
                data: data_dir.map(|d| rs2p_sync::DataOptions::new(d).durable(durable)),
            })
            .await
        }
    }
}
