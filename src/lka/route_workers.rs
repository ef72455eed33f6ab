//! lka's route workers: a few threads that run [`route`] so lka's loop
//! never waits for a name server. A look-up can take its full deadline
//! (a dead server, a zone of dead MXs); in the loop, every RCPT check,
//! AUTH and bounce of that time would wait behind it.
//!
//! The loop submits each question to a bounded queue (full: the answer
//! is a TempFail at once, the dispatcher retries later, A5); a free
//! worker takes it, answers, and wakes the loop through a socket pair
//! (one byte, as the queue's flusher does, [`crate::spool::flusher`]);
//! the loop takes every answer waiting and sends each to the dispatcher.
//! Answers come back in the order they finish, each with its `req`.
//!
//! The threads are started after pledge (threads are "stdio"), so they
//! run under lka's seccomp filter and Landlock domain; their sockets are
//! the "dns" promise's.

#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dns::Resolver;
use super::route::{route, RouteQuery};
use crate::ipc::msg::RouteAnswer;

/// Threads in lka's pool: look-ups wait on the network, not the CPU, so
/// this is how many slow domains can be looked up at once.
pub const WORKERS: usize = 4;
/// Questions waiting for a worker beyond those being answered.
pub const QUEUE: usize = 256;
/// Bound on one whole route (MX look-up and every host's addresses).
pub const ROUTE_TIME: Duration = Duration::from_secs(60);

/// What the workers share: how to look up, and who we are.
pub struct RouteConfig {
    pub resolver: Resolver,
    /// This host's names, for the MX loop rule.
    pub names: Vec<String>,
    pub route_time: Duration,
}

struct Job {
    req: u64,
    query: RouteQuery,
}

/// The loop's end of the workers.
pub struct RouteWorkers {
    jobs: SyncSender<Job>,
    results: Receiver<(u64, RouteAnswer)>,
    /// Readable when an answer is waiting (a byte per answer, or fewer).
    wake: UnixStream,
}

impl RouteWorkers {
    /// Start `workers` threads sharing a queue of `queue` questions.
    pub fn start(config: RouteConfig, workers: usize, queue: usize) -> io::Result<RouteWorkers> {
        let (wake, wake_thread) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        // A worker never waits for the loop: a full socket already holds
        // a byte that wakes it.
        wake_thread.set_nonblocking(true)?;
        let wake_thread = Arc::new(wake_thread);
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(queue);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (result_tx, results) = mpsc::channel();
        let config = Arc::new(config);
        for _ in 0..workers.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let result_tx = result_tx.clone();
            let wake_thread = Arc::clone(&wake_thread);
            let config = Arc::clone(&config);
            // No thread name: naming is prctl(PR_SET_NAME), not in the
            // filter.
            std::thread::Builder::new().spawn(move || loop {
                // One idle worker waits on the queue; the others on the
                // lock. Gone when the loop drops its sender.
                let next = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => break,
                };
                let Ok(job) = next else { break };
                let answer = answer(&config, &job.query);
                if result_tx.send((job.req, answer)).is_err() {
                    break;
                }
                match (&*wake_thread).write(&[1]) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            })?;
        }
        Ok(RouteWorkers {
            jobs,
            results,
            wake,
        })
    }

    /// The descriptor to watch (readable when answers are waiting).
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Queue a question. When the queue is full, or the workers are gone,
    /// the reason: the caller answers now, try again later.
    pub fn submit(&self, req: u64, query: RouteQuery) -> Result<(), &'static str> {
        match self.jobs.try_send(Job { req, query }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err("Too many DNS lookups in progress"),
            Err(TrySendError::Disconnected(_)) => Err("DNS lookups are not available"),
        }
    }

    /// Every answer waiting (call when [`RouteWorkers::fd`] is readable;
    /// the loop is edge-triggered, so this reads the socket empty). An
    /// error means every worker is gone, which ends the role.
    pub fn take(&mut self) -> io::Result<Vec<(u64, RouteAnswer)>> {
        let mut bytes = [0u8; 256];
        loop {
            match self.wake.read(&mut bytes) {
                Ok(0) => return Err(gone()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A worker sends its answer before its byte: every answer whose
        // byte was read is here.
        let mut out = Vec::new();
        loop {
            match self.results.try_recv() {
                Ok(a) => out.push(a),
                Err(TryRecvError::Empty) => return Ok(out),
                Err(TryRecvError::Disconnected) => return Err(gone()),
            }
        }
    }
}

// Dropping RouteWorkers closes the queue: idle workers end, busy ones
// after their look-up. They are not joined: a look-up may take its full
// deadline, longer than the parent waits for lka to stop.

fn gone() -> io::Error {
    io::Error::other("the route workers are gone")
}

/// One question, in a worker.
fn answer(config: &RouteConfig, query: &RouteQuery) -> RouteAnswer {
    let names: Vec<&str> = config.names.iter().map(String::as_str).collect();
    route(
        &config.resolver,
        query,
        &names,
        Instant::now() + config.route_time,
    )
}

#[cfg(test)]
mod tests;
