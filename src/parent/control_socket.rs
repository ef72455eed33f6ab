//! /var/run/smtpd.sock: bound by the parent, as root, before any role
//! exists, then handed to control alone (as the SMTP listeners go to the
//! dispatcher), so control needs no right to create files.

use crate::ipc::ctl::SOCKET_PATH;
use crate::sys::unixsock;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

/// OpenSMTPD's mode: every local user may connect; control checks each
/// client's uid before it does anything for it.
const MODE: u32 = 0o666;
/// Connections the kernel holds for control until it accepts them.
const BACKLOG: i32 = 128;

/// Bind the control socket. A daemon already answering there means this
/// one must not start (two daemons would share one spool); a socket left
/// by a daemon that died is removed.
pub fn bind() -> Result<OwnedFd, String> {
    let path = Path::new(SOCKET_PATH);
    match unixsock::connect(path) {
        Ok(_) => return Err("control socket already listening".into()),
        // A stream socket: OpenSMTPD's own daemon is running.
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            return Err("control socket already listening".into())
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ECONNREFUSED) | Some(libc::ENOENT)
            ) => {}
        Err(e) => return Err(format!("control socket {SOCKET_PATH}: {e}")),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("control: cannot unlink socket {SOCKET_PATH}: {e}")),
    }
    unixsock::listen(path, MODE, BACKLOG).map_err(|e| format!("control: bind {SOCKET_PATH}: {e}"))
}
