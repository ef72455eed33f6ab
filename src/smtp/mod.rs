//! SMTP without I/O: the server's protocol engine (`server`) and mail
//! addresses (`address`). Bytes in, replies and events out; the
//! dispatcher drives them from its event loop.

#![forbid(unsafe_code)]

pub mod address;
pub mod server;
