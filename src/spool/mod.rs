//! The on-disk queue: its layout, the versioned envelope format, and the
//! durable commit that stands behind every 250.

#![forbid(unsafe_code)]

mod crc32;
pub mod envelope;
pub mod flusher;
pub mod id;
pub mod store;

pub use envelope::{
    unix_now, DsnRet, Envelope, Flags, FormatError, Kind, LocalAccount, LocalTarget, Notify,
};
pub use flusher::{Flusher, Job};
pub use id::{BadId, EvpId, MsgId};
pub use store::{is_storage_full, Corrupt, Flush, Published, Recovered, Spool};
