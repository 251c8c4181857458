//! The tokio driver: [`MeshSocket`] owns a task that runs a [`crate::proto::Node`] over real TCP.

mod driver;
mod socket;

pub use socket::{EventItem, EventStream, Events, MeshOptions, MeshSocket};

/// Unix milliseconds from the system clock (the only clock the mesh reads, here in the driver).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
