//! Signals as readable bytes: a handler writes the signal number into a
//! non-blocking pipe the event loop watches (the self-pipe trick), so no
//! other code runs in signal context.

use super::cvt;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) and errno access are async-signal-safe; errno is
        // saved and restored so the interrupted code sees its own.
        unsafe {
            let saved = *errno_ptr();
            libc::write(fd, &b as *const u8 as *const libc::c_void, 1);
            *errno_ptr() = saved;
        }
    }
}

#[cfg(target_os = "linux")]
unsafe fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno location.
    unsafe { libc::__errno_location() }
}

#[cfg(target_os = "openbsd")]
unsafe fn errno_ptr() -> *mut libc::c_int {
    // SAFETY: returns the calling thread's errno location.
    unsafe { libc::__errno() }
}

/// Route `signals` into a pipe; returns its read end (non-blocking,
/// close-on-exec). Call once per process.
pub fn pipe_for(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    let mut fds = [0 as RawFd; 2];
    #[cfg(target_os = "linux")]
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    #[cfg(target_os = "openbsd")]
    // SAFETY: fds is a valid array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: pipe2 returned two fresh descriptors; the write end is kept
    // open for the life of the process (the handler uses it).
    let read = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    PIPE_WRITE.store(fds[1], Ordering::Relaxed);
    for &sig in signals {
        set_handler(sig, on_signal as *const () as libc::sighandler_t)?;
    }
    Ok(read)
}

/// Ignore `signals` (SIG_IGN survives execve, which is why roles reset
/// what they need themselves).
pub fn ignore(signals: &[libc::c_int]) -> io::Result<()> {
    for &sig in signals {
        set_handler(sig, libc::SIG_IGN)?;
    }
    Ok(())
}

fn set_handler(sig: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: sigaction is plain data; zeroed is a valid empty mask/flags.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = libc::SA_RESTART;
    // SAFETY: sa is initialised; the old action is not needed.
    cvt(unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) }).map(drop)
}

/// Drain the pipe: the signals received since the last call, in order.
pub fn drain(read: &OwnedFd) -> Vec<libc::c_int> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        // SAFETY: buf is a valid writable buffer of the given length.
        let n = unsafe {
            libc::read(
                read.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
            )
        };
        if n <= 0 {
            break;
        }
        out.extend(buf[..n as usize].iter().map(|&b| b as libc::c_int));
    }
    out
}
