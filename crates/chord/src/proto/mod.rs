//! The chord socket without I/O: the record store and the state machine.

pub mod machine;
pub mod store;

pub use machine::{ChordMachine, ChordStats, Completion, NodeRef, Outcome, PROTOCOL};
