//! The queue's flusher: one thread that makes the spool durable while the
//! queue role's loop goes on.
//!
//! A flush (syncfs(2), or an fsync per file) takes a journal commit and a
//! device cache flush: on this project's VM a millisecond or more under
//! load. Done in the loop, every session waiting for a new message file
//! or an envelope waited for it too, and the flushes of one batch could
//! not overlap the writing of the next. The thread does only the flush;
//! the files, renames and replies stay in the loop, so the spool's rules
//! (see [`super::store`]) are kept by one thread as before. One job runs
//! at a time: the loop submits the next only after taking the result of
//! the last.
//!
//! The thread is started after pledge (threads are "stdio", as on
//! OpenBSD), so it runs under the role's seccomp filter and Landlock
//! domain. It ends when the loop drops its [`Flusher`].

use super::store::Flush;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

/// What one flush makes durable: with [`Flush::PerFile`] these files and
/// directories (fsync of each); with [`Flush::Filesystem`] the whole file
/// system (the list is then empty).
#[derive(Debug, Default)]
pub struct Job {
    pub files: Vec<File>,
}

/// The loop's end of the flusher thread.
pub struct Flusher {
    jobs: Option<Sender<Job>>,
    results: Receiver<io::Result<()>>,
    /// Readable when a result is waiting: one byte per finished job.
    wake: UnixStream,
    busy: bool,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Start the thread. `dir` is any directory of the spool (the file
    /// system syncfs flushes); `mode` how to flush.
    pub fn start(dir: File, mode: Flush) -> io::Result<Flusher> {
        let (wake, wake_thread) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel();
        let thread = std::thread::Builder::new().spawn(move || {
            let mut wake_thread = wake_thread;
            for job in job_rx {
                let r = run(&dir, mode, job);
                // The loop is gone if either fails: nothing left to tell.
                if result_tx.send(r).is_err() || wake_thread.write_all(&[1]).is_err() {
                    break;
                }
            }
        })?;
        Ok(Flusher {
            jobs: Some(jobs),
            results,
            wake,
            busy: false,
            thread: Some(thread),
        })
    }

    /// The descriptor to watch (readable when a job is done).
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// True while a job runs.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Start a flush. Only one at a time: an error if one runs.
    pub fn submit(&mut self, job: Job) -> io::Result<()> {
        if self.busy {
            return Err(io::Error::other("a flush is already running"));
        }
        let jobs = self.jobs.as_ref().ok_or_else(gone)?;
        jobs.send(job).map_err(|_| gone())?;
        self.busy = true;
        Ok(())
    }

    /// The result of the running job if it is done (call when [`fd`] is
    /// readable). Err(Err) means the thread is gone, which ends the role.
    ///
    /// [`fd`]: Flusher::fd
    pub fn take(&mut self) -> Result<Option<io::Result<()>>, io::Error> {
        let mut byte = [0u8; 16];
        match self.wake.read(&mut byte) {
            Ok(0) => return Err(gone()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        match self.results.try_recv() {
            Ok(r) => {
                self.busy = false;
                Ok(Some(r))
            }
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(gone()),
        }
    }

    /// Wait for the running job, if any (tests and shutdown).
    pub fn wait(&mut self) -> io::Result<Option<io::Result<()>>> {
        if !self.busy {
            return Ok(None);
        }
        let r = self.results.recv().map_err(|_| gone())?;
        self.busy = false;
        Ok(Some(r))
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Closing the job channel ends the thread after its current job.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn gone() -> io::Error {
    io::Error::other("the flusher thread is gone")
}

/// One flush, in the thread.
fn run(dir: &File, mode: Flush, job: Job) -> io::Result<()> {
    match mode {
        Flush::PerFile => job.files.iter().try_for_each(|f| f.sync_all()),
        Flush::Filesystem => syncfs(dir),
    }
}

#[cfg(target_os = "linux")]
pub(super) fn syncfs(dir: &File) -> io::Result<()> {
    crate::sys::fsync::syncfs(dir.as_fd())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn syncfs(dir: &File) -> io::Result<()> {
    let _ = dir.as_fd();
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_readable(f: &mut Flusher) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = f.take().expect("thread") {
                return r;
            }
            assert!(Instant::now() < deadline, "no result");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn runs_one_job_at_a_time_and_reports_each() {
        let dir = tempdir();
        for mode in [Flush::Filesystem, Flush::PerFile] {
            let mut f = Flusher::start(File::open(&dir).expect("dir"), mode).expect("start");
            assert!(!f.busy());
            assert!(f.take().expect("thread").is_none());
            let file = File::create(dir.join("a")).expect("create");
            f.submit(Job { files: vec![file] }).expect("submit");
            assert!(f.busy());
            assert!(f.submit(Job::default()).is_err(), "second job while busy");
            wait_readable(&mut f).expect("flush");
            assert!(!f.busy());
            f.submit(Job::default()).expect("again");
            assert!(f.wait().expect("thread").expect("a job").is_ok());
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_failed_fsync_is_reported() {
        // fsync of a pipe fails with EINVAL: the error reaches the loop.
        let dir = tempdir();
        let (r, _w) = std::io::pipe().expect("pipe");
        let pipe = File::from(std::os::fd::OwnedFd::from(r));
        let mut f = Flusher::start(File::open(&dir).expect("dir"), Flush::PerFile).expect("start");
        f.submit(Job { files: vec![pipe] }).expect("submit");
        assert!(wait_readable(&mut f).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "smtpd-flusher-{}-{:x}",
            std::process::id(),
            super::super::id::random_u64()
        ));
        std::fs::create_dir(&d).expect("mkdir");
        d
    }
}
