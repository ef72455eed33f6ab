//! The event loop every process runs: one mio `Poll`, a few registered
//! descriptors, and a deadline. No threads, no async runtime.

#![forbid(unsafe_code)]

use mio::{unix::SourceFd, Events, Interest, Poll, Token};
use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// What happened to one registered descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    pub closed: bool,
}

pub struct Loop {
    poll: Poll,
    events: Events,
}

impl Loop {
    pub fn new() -> io::Result<Self> {
        Ok(Loop {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
        })
    }

    /// Watch `fd` (level of interest: readable, or readable and writable).
    pub fn watch(&self, fd: RawFd, token: Token, write: bool) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest(write))
    }

    /// Change what `fd` is watched for.
    pub fn rewatch(&self, fd: RawFd, token: Token, write: bool) -> io::Result<()> {
        self.poll
            .registry()
            .reregister(&mut SourceFd(&fd), token, interest(write))
    }

    /// Stop watching `fd` (before closing it).
    pub fn unwatch(&self, fd: RawFd) -> io::Result<()> {
        self.poll.registry().deregister(&mut SourceFd(&fd))
    }

    /// Wait until something is ready or `deadline` passes.
    pub fn wait(&mut self, deadline: Option<Instant>) -> io::Result<Vec<Ready>> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match self.poll.poll(
            &mut self.events,
            timeout.map(|t| t.max(Duration::from_millis(1))),
        ) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        Ok(self
            .events
            .iter()
            .map(|e| Ready {
                token: e.token(),
                readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                writable: e.is_writable(),
                closed: e.is_read_closed() || e.is_error(),
            })
            .collect())
    }
}

fn interest(write: bool) -> Interest {
    if write {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}
