//! The on-disk queue: its layout, the versioned envelope format, and the
//! durable commit that stands behind every 250.

#![forbid(unsafe_code)]
