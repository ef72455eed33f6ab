//! Inter-process communication: frames (`frame`), the non-blocking channel
//! that sends and receives them with descriptors (`channel`), and the typed
//! messages of each channel (`msg`).

#![forbid(unsafe_code)]

pub mod channel;
pub mod ctl;
pub mod frame;
pub mod msg;

pub use channel::{Channel, IpcError, Received};
pub use msg::Message;
