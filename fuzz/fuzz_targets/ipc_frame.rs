//! Every received frame goes through `frame::parse` with its channel's
//! enum: no input may panic, overflow or allocate without bound (A4, A7).
//! The first byte picks the descriptor count the "kernel" reported.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::config::view::View;
use smtpd::ipc::ctl::{Reply, Request};
use smtpd::ipc::frame;
use smtpd::ipc::msg::{self, FromParent, ToParent};
use smtpd::proc::{links, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&nfds, packet)) = data.split_first() else { return };
    let nfds = usize::from(nfds % 6);
    let _ = frame::parse::<FromParent>(packet, nfds);
    let _ = frame::parse::<ToParent>(packet, nfds);
    // Any local user's bytes on /var/run/smtpd.sock, and what smtpctl reads.
    let _ = msg::parse::<Request>(packet, nfds);
    let _ = msg::parse::<Reply>(packet, nfds);
    for (a, b) in links() {
        let _ = msg::decode_hello(a, b, packet, nfds);
        let _ = msg::decode_hello(b, a, packet, nfds);
    }
    let _ = msg::decode_hello(Role::Ca, Role::Scheduler, packet, nfds);
    // Config views arrive in chunks and are decoded whole.
    let _ = frame::decode::<View>(packet);
});
