//! SMTP without I/O: the server's protocol engine (`server`), the
//! client's (`client`) and mail addresses (`address`). Bytes in, bytes
//! and events out; the dispatcher drives them from its event loop.

#![forbid(unsafe_code)]

pub mod address;
pub mod client;
pub mod server;
