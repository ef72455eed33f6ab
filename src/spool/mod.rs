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
/// sendmail's offline queue (`spool::store::DIRS` makes it, 0770
/// root:_smtpq): messages written while smtpd was not running.
pub const OFFLINE_DIR: &str = "/var/spool/smtpd/offline";

pub use store::{is_storage_full, Corrupt, Flush, Published, Recovered, Spool};
