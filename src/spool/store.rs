//! The spool on disk: layout, group commit, recovery.
//!
//! # Layout
//! Under the spool root (/var/spool/smtpd, the queue role's chroot, so "/"
//! once it runs), OpenSMTPD's names and modes:
//!
//! ```text
//! incoming/            0700  messages being received, never acknowledged
//!   <msgid>/           0700  one per message (8 hex digits)
//!     message          0600  the message, written by the dispatcher
//!     <evpid>          0600  one envelope per recipient (16 hex digits)
//! queue/               0700  committed messages: a 250 was (or may be) sent
//!   <bb>/              0700  bucket: the msgid's high byte, 2 hex digits
//!     <msgid>/               the same directory, moved here whole
//! temporary/           0700  envelope updates before their rename
//! purge/               0700  messages being removed (moved here, then deleted)
//! corrupt/             0700  what recovery could not read, kept for the admin
//! offline/             0770  smtpctl's offline queue (not ours; created only)
//! ```
//!
//! Envelope files hold one frame each (see [`super::envelope`]).
//!
//! # The guarantee
//! A message is committed iff its directory is under queue/ and its
//! message file is the one its envelopes describe: each envelope records
//! the file's size and CRC-32, taken by the queue at commit. A directory
//! only ever gets under queue/ by one rename(2) of the complete
//! `incoming/<msgid>` directory, message and envelopes written; the 250
//! is sent only after one flush has made all of it durable, rename
//! included. So after a crash queue/ holds every acknowledged message
//! whole. It may also hold a message whose flush a crash interrupted (its
//! client had no 250): after kill -9 it is whole (the page cache
//! survives) and is delivered, as SMTP allows for a reply the client never
//! saw; after a power cut its data may be short or missing, and
//! [`Spool::recover`] tells so from the size and CRC and moves it to
//! corrupt/ rather than deliver it. incoming/ holds only what was never
//! acknowledged, and recovery deletes it. A rename onto a non-empty
//! directory fails, so a commit can never replace a committed message.
//!
//! # The commit, step by step ([`Spool::commit`])
//! 1. For each message of the batch ([`Spool::stage`]): check it
//!    (`incoming/<msgid>/` is a real directory, `message` a regular file,
//!    every envelope belongs to the message, no id twice), read the
//!    message file for its size and CRC-32, write each envelope to a new
//!    file `incoming/<msgid>/<evpid>` (O_CREAT|O_EXCL|O_NOFOLLOW, 0600),
//!    and `rename(incoming/<msgid>, queue/<bb>/<msgid>)`, creating the
//!    bucket first if needed. A message that fails here is deleted and
//!    reported; the others go on.
//! 2. One flush for the batch: the message files (the dispatcher's
//!    writes), the envelopes, the directories and the renames. On Linux
//!    one syncfs(2) on the spool's file system ([`Flush::Filesystem`]);
//!    with [`Flush::PerFile`] (and always on OpenBSD, which has no syncfs)
//!    an fsync of every message file, envelope file and message directory,
//!    of incoming/, of each bucket renamed into, and of queue/ if a bucket
//!    was created.
//! 3. Report Ok per message: now the 250 may go out. If the flush failed,
//!    the batch's directories are moved out to purge/ and deleted, and the
//!    clients get 4xx (a power cut before that may still deliver one: a
//!    duplicate, never a loss).
//!
//! One flush per batch, whatever its size. The rename may reach the
//! journal before the data of the files it moves (delayed allocation;
//! ext4's auto_da_alloc only covers rename-over-a-file), which is why
//! recovery checks the data against the envelopes instead of a second
//! flush between the writes and the rename: that flush would double the
//! time to every 250. The price is that recovery reads every queued
//! message once at start-up.
//!
//! Why syncfs: it writes back the whole file system and commits the
//! journal once, so a batch of 32 messages costs the same journal
//! commit (and device cache flush) as a batch of 1, where fsync per
//! file costs one flush per file on ext4 (a second fsync of an inode whose
//! transaction is already committed still issues a cache flush). Its cost:
//! it also writes back unrelated dirty data on the same file system (other
//! programs' files on /var, the messages still being received), so a
//! spool on a busy shared file system should use [`Flush::PerFile`] or,
//! better, a file system of its own. It reports writeback errors since
//! Linux 5.8 only.
//!
//! Measured (`cargo test --release -- --ignored --nocapture
//! bench_commit_rates`: 4 KiB messages with one envelope each, median of
//! five 1 s runs, time spent in `commit()` alone) on this project's Linux
//! 6.18 VM, ext4 on virtio (/work and /tmp alike; its disk does a 4 KiB
//! write + fsync 3,200-3,500 times a second):
//!
//! ```text
//!                 batch 1          batch 8           batch 32
//! Filesystem   2,150-2,400/s   7,050-7,200/s   10,100-10,350/s  messages
//!              (0.41-0.46 ms)  (1.1 ms)        (3.1 ms)         per commit()
//! PerFile        935-1,000/s   1,300-1,400/s    1,400-1,550/s
//!              (1.0-1.1 ms)    (5.6-6.1 ms)     (20.6-22.8 ms)
//! ```
//!
//! On tmpfs (/dev/shm), where a flush is free, both reach 24,000-28,000/s:
//! the rest is the cost of the files and renames themselves.
//!
//! # What the queue role does with it
//! The parent (root) calls [`prepare`] before starting the queue role; the
//! queue role, chrooted in the spool as _smtpq, calls [`Spool::open`]("/")
//! and [`Spool::recover`] before it serves anyone, and hands the recovered
//! envelopes to the scheduler. It then answers create requests with
//! [`Spool::create_message`] (passing the file to the dispatcher), and
//! runs the commit's steps itself: [`Spool::stage`] as each commit
//! request arrives, the flushes in a [`Flusher`] thread, each covering
//! everything staged while the one before ran, so concurrent sessions
//! share the flushes without any timer. System calls: open/openat (read, write, O_CREAT,
//! O_EXCL, O_NOFOLLOW, O_DIRECTORY), mkdir, rename, unlink, rmdir,
//! getdents, fstat/lstat, fstatvfs (fstatfs on Linux), fsync, and on Linux
//! syncfs; and sendmsg with SCM_RIGHTS for the message files.
//!
//! # Disk full
//! ENOSPC and EDQUOT, from any step, fail the messages they touch and
//! delete them; [`is_storage_full`] tells the queue role to answer
//! "452 4.3.1 Insufficient system storage". `create_message` also refuses
//! new messages while less than `min_free_percent` (5, as OpenSMTPD) of
//! the blocks or inodes are left, so the spool never fills to the point
//! where committing an already received message fails.
//!
//! # Reading back
//! Every file in the spool is untrusted input (A4): names must parse as
//! ids, types are checked with lstat and with fstat after an
//! O_NOFOLLOW|O_NONBLOCK open, sizes are capped, and envelopes go through
//! the total decoder. Symbolic links are never followed; they are moved to
//! corrupt/ like any other stray entry. (Directories are checked with
//! lstat before being listed; only the queue user and root can write the
//! spool, so that check is not raced by anyone with less power than the
//! queue itself.)

use super::crc32::Crc32;
use super::envelope::{Envelope, MAX_FILE};
use super::flusher::{Flusher, Job};
use super::id::{random_u64, EvpId, MsgId};
use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directories of the spool and their modes (OpenSMTPD's).
pub const DIRS: &[(&str, u32)] = &[
    ("incoming", 0o700),
    ("queue", 0o700),
    ("temporary", 0o700),
    ("purge", 0o700),
    ("corrupt", 0o700),
    ("offline", 0o770),
];

/// The message file's name inside a message directory.
pub const MESSAGE: &str = "message";

/// OpenSMTPD's MINSPACE / MININODES: below this share of free blocks or
/// inodes, new messages are refused.
pub const MIN_FREE_PERCENT: u8 = 5;

/// How long a free-space check far from the limit holds.
const SPACE_RECHECK: Duration = Duration::from_millis(250);

/// How many fresh ids `create_message` tries before giving up.
const CREATE_TRIES: usize = 64;

/// How commit makes things durable; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// syncfs(2) of the spool's file system, twice per batch. Linux only:
    /// elsewhere it behaves as `PerFile`.
    Filesystem,
    /// fsync(2) of every file and directory involved.
    PerFile,
}

impl Default for Flush {
    fn default() -> Flush {
        if cfg!(target_os = "linux") {
            Flush::Filesystem
        } else {
            Flush::PerFile
        }
    }
}

/// True if `e` means the disk (blocks or inodes) or the quota is full:
/// the queue role answers "452 4.3.1 Insufficient system storage". Any
/// other error from the spool is "451 4.3.0" (a temporary local problem).
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every readable envelope of every committed message, by id.
    pub envelopes: Vec<Envelope>,
    /// Entries deleted from incoming/ (messages never acknowledged).
    pub removed_incoming: usize,
    /// What could not be read, and where it went.
    pub corrupt: Vec<Corrupt>,
}

/// One entry recovery moved aside.
#[derive(Debug)]
pub struct Corrupt {
    /// Where it was, relative to the spool root.
    pub path: PathBuf,
    /// Why it was refused.
    pub reason: String,
    /// Where it is now, relative to the spool root; None if it could not
    /// be moved (it then stays where it was, and is refused again on the
    /// next start).
    pub moved_to: Option<PathBuf>,
}

/// What commit step 3 renamed, for the flush that follows it.
#[derive(Debug, Default)]
pub struct Published {
    /// Buckets renamed into.
    pub buckets: BTreeSet<u8>,
    /// True if a bucket was created (queue/ itself changed).
    pub new_bucket: bool,
}

/// The spool. All paths are under `root`; the directories are held open
/// for fsync and syncfs.
#[derive(Debug)]
pub struct Spool {
    root: PathBuf,
    incoming: PathBuf,
    queue: PathBuf,
    temporary: PathBuf,
    purge: PathBuf,
    corrupt: PathBuf,
    incoming_dir: File,
    queue_dir: File,
    flush: Flush,
    min_free_percent: u8,
    /// Buckets known to exist under queue/, one bit each.
    buckets: Cell<[u64; 4]>,
    /// Until when the last free-space check holds (see `check_space`).
    space_ok_until: Cell<Option<Instant>>,
}

impl Spool {
    /// Open the spool at `root` (a directory, which must exist), creating
    /// any missing subdirectory with its mode. Existing subdirectories
    /// must be real directories (not symbolic links) on the root's file
    /// system; their owners and modes are the parent's to check
    /// ([`prepare`]), since the queue role cannot fix them.
    pub fn open(root: &Path) -> io::Result<Spool> {
        let meta = fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("spool root {} is not a directory", root.display()),
            ));
        }
        let dev = meta.dev();
        for &(name, mode) in DIRS {
            let p = root.join(name);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_dir() => {
                    if m.dev() != dev {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{} is not on the spool's file system", p.display()),
                        ));
                    }
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", p.display()),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(mode).create(&p)?;
                    // The umask may have taken bits off.
                    if fs::symlink_metadata(&p)?.mode() & 0o7777 != mode {
                        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let incoming_dir = open_dir(&root.join("incoming"))?;
        let queue_dir = open_dir(&root.join("queue"))?;
        Ok(Spool {
            root: root.to_path_buf(),
            incoming: root.join("incoming"),
            queue: root.join("queue"),
            temporary: root.join("temporary"),
            purge: root.join("purge"),
            corrupt: root.join("corrupt"),
            incoming_dir,
            queue_dir,
            flush: Flush::default(),
            min_free_percent: MIN_FREE_PERCENT,
            buckets: Cell::new([0; 4]),
            space_ok_until: Cell::new(None),
        })
    }

    /// Choose how commits flush (the default: [`Flush::Filesystem`] on
    /// Linux, [`Flush::PerFile`] elsewhere).
    pub fn set_flush(&mut self, flush: Flush) {
        self.flush = flush;
    }

    pub fn flush(&self) -> Flush {
        self.flush
    }

    /// Refuse new messages while less than `percent` of the blocks or
    /// inodes are free (0 disables the check).
    pub fn set_min_free_percent(&mut self, percent: u8) {
        self.min_free_percent = percent.min(100);
        self.space_ok_until.set(None);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn incoming_path(&self, msgid: MsgId) -> PathBuf {
        self.incoming.join(msgid.to_string())
    }

    fn bucket_path(&self, msgid: MsgId) -> PathBuf {
        self.queue.join(format!("{:02x}", msgid.bucket()))
    }

    fn queue_path(&self, msgid: MsgId) -> PathBuf {
        self.bucket_path(msgid).join(msgid.to_string())
    }

    fn envelope_path(&self, id: EvpId) -> PathBuf {
        self.queue_path(id.msgid()).join(id.to_string())
    }

    /// The committed message file of `msgid` (which may not exist).
    pub fn message_path(&self, msgid: MsgId) -> PathBuf {
        self.queue_path(msgid).join(MESSAGE)
    }

    /// Refuse with StorageFull when the file system is nearly full.
    pub fn check_space(&self) -> io::Result<()> {
        if self.min_free_percent == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if self.space_ok_until.get().is_some_and(|t| now < t) {
            return Ok(());
        }
        let s = crate::sys::fsync::space(self.incoming_dir.as_fd())?;
        let below = |used: u64, avail: u64, percent: u128| {
            let total = used as u128 + avail as u128;
            total != 0 && (avail as u128) * 100 < total * percent
        };
        let min = u128::from(self.min_free_percent);
        let low = |used, avail| below(used, avail, min);
        // Far from the limit, the answer holds for a moment: one fstatfs
        // per SPACE_RECHECK instead of one per message.
        let roomy = !below(s.blocks_used, s.blocks_avail, 2 * min)
            && !below(s.files_used, s.files_avail, 2 * min);
        self.space_ok_until.set(roomy.then(|| now + SPACE_RECHECK));
        if low(s.blocks_used, s.blocks_avail) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "not enough disk space in the spool",
            ));
        }
        if low(s.files_used, s.files_avail) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "not enough inodes in the spool",
            ));
        }
        Ok(())
    }

    /// Start a message: a fresh id unused in incoming/ and queue/, its
    /// directory `incoming/<msgid>/` (0700) and its empty message file
    /// (O_EXCL, 0600), open for writing. The file is what the dispatcher
    /// writes the message into; it need not fsync it (commit does).
    pub fn create_message(&self) -> io::Result<(MsgId, File)> {
        self.check_space()?;
        for _ in 0..CREATE_TRIES {
            let msgid = MsgId::random();
            match fs::symlink_metadata(self.queue_path(msgid)) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            let dir = self.incoming_path(msgid);
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
            return match create_file(&dir.join(MESSAGE)) {
                Ok(f) => Ok((msgid, f)),
                Err(e) => {
                    let _ = remove_tree(&dir);
                    Err(e)
                }
            };
        }
        Err(io::Error::other("no free message id"))
    }

    /// Forget a message that was never committed (idempotent: Ok if it is
    /// already gone). Never touches queue/.
    pub fn abort(&self, msgid: MsgId) -> io::Result<()> {
        match remove_tree(&self.incoming_path(msgid)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    /// The group commit, synchronously: write every message of `batch`
    /// into queue/ ([`Spool::stage`]), then one flush for the whole batch
    /// (see the module documentation). One result per message, in order;
    /// Ok means committed and durable: the 250 may be sent. A message
    /// that fails is deleted (abort is then a no-op). The queue role runs
    /// the same steps with its flushes in a [`Flusher`], so that the next
    /// batch is staged while one is flushed.
    pub fn commit(&self, batch: &[(MsgId, Vec<Envelope>)]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(batch.len());
        let mut job = Job::default();
        let mut published = Published::default();
        let mut staged: Vec<usize> = Vec::new();
        let mut seen: HashSet<MsgId> = HashSet::new();
        for (i, (msgid, envelopes)) in batch.iter().enumerate() {
            if !seen.insert(*msgid) {
                results.push(Err(invalid("message twice in one commit")));
                continue;
            }
            // stage() records the message's size and CRC in its envelopes.
            let mut envelopes = envelopes.clone();
            match self.stage(*msgid, &mut envelopes, &mut published) {
                Ok(files) => {
                    job.files.extend(files);
                    staged.push(i);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if staged.is_empty() {
            return results;
        }
        let flushed = self.publish_job(&published).and_then(|more| {
            job.files.extend(more.files);
            self.flush_now(job)
        });
        if let Err(e) = flushed {
            for &i in &staged {
                self.take_back(batch[i].0);
                results[i] = Err(copy_error(&e));
            }
        }
        results
    }

    /// How this spool flushes here: [`Flush::PerFile`] wherever syncfs is
    /// missing.
    pub fn effective_flush(&self) -> Flush {
        if cfg!(target_os = "linux") {
            self.flush
        } else {
            Flush::PerFile
        }
    }

    /// A flusher thread for this spool (the queue role's).
    pub fn flusher(&self) -> io::Result<Flusher> {
        Flusher::start(self.incoming_dir.try_clone()?, self.effective_flush())
    }

    /// Run one flush here and now.
    pub fn flush_now(&self, job: Job) -> io::Result<()> {
        match self.effective_flush() {
            Flush::PerFile => job.files.iter().try_for_each(|f| f.sync_all()),
            Flush::Filesystem => super::flusher::syncfs(&self.incoming_dir),
        }
    }

    /// Commit step 1 for one message: check it, record its message
    /// file's size and CRC-32 in each envelope, write the envelopes into
    /// `incoming/<msgid>/`, and rename the directory into queue/ (creating
    /// its bucket if needed, noted in `published`). Nothing is durable
    /// yet: the 250 waits for the flush that follows. Returns what a
    /// [`Flush::PerFile`] flush must fsync (nothing with
    /// [`Flush::Filesystem`]). On error the message is deleted.
    pub fn stage(
        &self,
        msgid: MsgId,
        envelopes: &mut [Envelope],
        published: &mut Published,
    ) -> io::Result<Vec<File>> {
        let per_file = self.effective_flush() == Flush::PerFile;
        let mut files = Vec::new();
        let staged = self
            .stage_files(msgid, envelopes, per_file.then_some(&mut files))
            .and_then(|()| self.make_bucket(msgid, published))
            // Fails (ENOTEMPTY/EEXIST) rather than replace a committed message.
            .and_then(|()| fs::rename(self.incoming_path(msgid), self.queue_path(msgid)));
        match staged {
            Ok(()) => {
                published.buckets.insert(msgid.bucket());
                Ok(files)
            }
            Err(e) => {
                self.forget_bucket(msgid);
                let _ = self.abort(msgid);
                Err(e)
            }
        }
    }

    fn stage_files(
        &self,
        msgid: MsgId,
        envelopes: &mut [Envelope],
        mut to_sync: Option<&mut Vec<File>>,
    ) -> io::Result<()> {
        if envelopes.is_empty() {
            return Err(invalid("a message without envelopes"));
        }
        let mut ids = HashSet::new();
        for e in envelopes.iter() {
            if e.id.msgid() != msgid {
                return Err(invalid("envelope of another message"));
            }
            if !ids.insert(e.id) {
                return Err(invalid("envelope id twice"));
            }
        }
        let dir = self.incoming_path(msgid);
        if !fs::symlink_metadata(&dir)?.file_type().is_dir() {
            return Err(invalid("incoming entry is not a directory"));
        }
        let message = open_regular(&dir.join(MESSAGE))?;
        let (size, crc) = checksum(&message)?;
        for e in envelopes.iter_mut() {
            e.size = size;
            e.body_crc = crc;
        }
        if let Some(v) = to_sync.as_deref_mut() {
            v.push(message);
        }
        for e in envelopes.iter() {
            let bytes = e.encode()?;
            let mut f = create_file(&dir.join(e.id.to_string()))?;
            f.write_all(&bytes)?;
            if let Some(v) = to_sync.as_deref_mut() {
                v.push(f);
            }
        }
        if let Some(v) = to_sync {
            v.push(open_dir(&dir)?);
        }
        Ok(())
    }

    /// Make sure the bucket of `msgid` exists. Buckets are never removed
    /// while the queue runs, so one seen is remembered (a failed rename
    /// into it forgets it again).
    fn make_bucket(&self, msgid: MsgId, published: &mut Published) -> io::Result<()> {
        let b = usize::from(msgid.bucket());
        let mut known = self.buckets.get();
        if known[b / 64] & (1 << (b % 64)) != 0 {
            return Ok(());
        }
        let bucket = self.bucket_path(msgid);
        match fs::DirBuilder::new().mode(0o700).create(&bucket) {
            Ok(()) => published.new_bucket = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&bucket)?.file_type().is_dir() {
                    return Err(invalid("bucket is not a directory"));
                }
            }
            Err(e) => return Err(e),
        }
        known[b / 64] |= 1 << (b % 64);
        self.buckets.set(known);
        Ok(())
    }

    fn forget_bucket(&self, msgid: MsgId) {
        let b = usize::from(msgid.bucket());
        let mut known = self.buckets.get();
        known[b / 64] &= !(1 << (b % 64));
        self.buckets.set(known);
    }

    /// What the flush must make durable besides the staged files: with
    /// [`Flush::PerFile`], incoming/, each bucket renamed into, and queue/
    /// if a bucket was created.
    pub fn publish_job(&self, published: &Published) -> io::Result<Job> {
        let mut job = Job::default();
        if self.effective_flush() == Flush::PerFile && !published.buckets.is_empty() {
            job.files.push(self.incoming_dir.try_clone()?);
            for &b in &published.buckets {
                job.files
                    .push(open_dir(&self.queue.join(format!("{b:02x}")))?);
            }
            if published.new_bucket {
                job.files.push(self.queue_dir.try_clone()?);
            }
        }
        Ok(job)
    }

    /// Undo a staged message when its flush failed: the client gets a
    /// 4xx, so the message leaves the queue (a crash before this may still deliver
    /// it: a duplicate, never a loss).
    pub fn take_back(&self, msgid: MsgId) {
        if let Err(e) = self.purge_dir(&self.queue_path(msgid), msgid) {
            log::warn!("warn: queue: cannot take back msgid={msgid} after a failed flush: {e}");
        }
    }

    /// Move a message directory out to purge/ (one rename: it leaves the
    /// queue whole), then delete it there. Recovery finishes any delete
    /// a crash interrupts.
    fn purge_dir(&self, dir: &Path, msgid: MsgId) -> io::Result<()> {
        let to = self.purge.join(format!("{msgid}.{:016x}", random_u64()));
        fs::rename(dir, &to)?;
        if let Err(e) = remove_tree(&to) {
            log::warn!("warn: queue: cannot empty {}: {e}", to.display());
        }
        Ok(())
    }

    /// Remove a committed message and all its envelopes (delivered,
    /// expired, or removed by the admin).
    pub fn remove_message(&self, msgid: MsgId) -> io::Result<()> {
        let dir = self.queue_path(msgid);
        if !fs::symlink_metadata(&dir)?.file_type().is_dir() {
            return Err(invalid("queue entry is not a directory"));
        }
        self.purge_dir(&dir, msgid)
    }

    /// Remove one envelope (delivered, bounced, expired). The last one
    /// takes its message with it, in one rename, so a message directory
    /// without envelopes is never a normal state. Not flushed: a crash
    /// right after may bring the envelope back (delivered twice, never
    /// lost).
    pub fn remove_envelope(&self, id: EvpId) -> io::Result<()> {
        let path = self.envelope_path(id);
        if !fs::symlink_metadata(&path)?.file_type().is_file() {
            return Err(invalid("envelope is not a regular file"));
        }
        let dir = self.queue_path(id.msgid());
        let own = id.to_string();
        let mut others = false;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.as_bytes() != own.as_bytes() && name.as_bytes() != MESSAGE.as_bytes() {
                others = true;
                break;
            }
        }
        if others {
            fs::remove_file(&path)
        } else {
            self.purge_dir(&dir, id.msgid())
        }
    }

    /// Read one committed envelope back (untrusted: capped, O_NOFOLLOW,
    /// decoded totally, and its id must match its name).
    pub fn load_envelope(&self, id: EvpId) -> io::Result<Envelope> {
        let bytes = read_capped(&self.envelope_path(id), MAX_FILE)?;
        let e = Envelope::decode(&bytes)?;
        if e.id != id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "envelope id does not match its file name",
            ));
        }
        Ok(e)
    }

    /// Replace a committed envelope (the scheduler's retry count, last
    /// error...): write `temporary/<evpid>.<random>`, fsync it, rename it
    /// over the old file, fsync the message directory. Atomic: a crash
    /// leaves the old or the new envelope, never a mix. NotFound if the
    /// envelope is gone (it is never brought back by an update).
    pub fn update_envelope(&self, e: &Envelope) -> io::Result<()> {
        let bytes = e.encode()?;
        let target = self.envelope_path(e.id);
        if !fs::symlink_metadata(&target)?.file_type().is_file() {
            return Err(invalid("envelope is not a regular file"));
        }
        let tmp = self
            .temporary
            .join(format!("{}.{:016x}", e.id, random_u64()));
        let written = create_file(&tmp).and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        });
        let done = written
            .and_then(|()| fs::rename(&tmp, &target))
            .and_then(|()| open_dir(&self.queue_path(e.id.msgid()))?.sync_all());
        if done.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        done
    }

    /// Open a committed message for reading (O_NOFOLLOW|O_NONBLOCK, then
    /// fstat: a regular file).
    pub fn open_message(&self, msgid: MsgId) -> io::Result<File> {
        open_regular(&self.message_path(msgid))
    }

    /// At start-up, before anything else: delete incoming/ (nothing there
    /// was acknowledged), temporary/ and purge/ (interrupted updates and
    /// removals), then read every envelope under queue/. Anything that is
    /// not a well-formed bucket, message directory, message file or
    /// envelope is moved to corrupt/ with a log line; a message directory
    /// without a message file or without any readable envelope goes there
    /// whole. Never panics on what it finds.
    pub fn recover(&self) -> Recovered {
        let mut out = Recovered {
            removed_incoming: self.empty_dir(&self.incoming),
            ..Recovered::default()
        };
        self.empty_dir(&self.temporary);
        self.empty_dir(&self.purge);

        for (name, path) in self.list(&self.queue, &mut out) {
            let bucket = match parse_bucket(&name) {
                Some(b) if is_dir(&path) => b,
                _ => {
                    self.quarantine(&path, "not a bucket directory", &mut out);
                    continue;
                }
            };
            for (name, path) in self.list(&path, &mut out) {
                let msgid = match name.to_str().map(MsgId::parse) {
                    Some(Ok(m))
                        if m.bucket() == bucket
                            && m.to_string().as_bytes() == name.as_bytes()
                            && is_dir(&path) =>
                    {
                        m
                    }
                    _ => {
                        self.quarantine(&path, "not a message directory", &mut out);
                        continue;
                    }
                };
                self.recover_message(msgid, &path, &mut out);
            }
        }
        out.envelopes.sort_by_key(|e| e.id);
        out
    }

    fn recover_message(&self, msgid: MsgId, dir: &Path, out: &mut Recovered) {
        let mut has_message = false;
        let mut found = Vec::new();
        for (name, path) in self.list(dir, out) {
            if name.as_bytes() == MESSAGE.as_bytes() {
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.file_type().is_file() => has_message = true,
                    _ => self.quarantine(&path, "message is not a regular file", out),
                }
                continue;
            }
            let id = match name.to_str().map(EvpId::parse) {
                Some(Ok(id))
                    if id.msgid() == msgid && id.to_string().as_bytes() == name.as_bytes() =>
                {
                    id
                }
                _ => {
                    self.quarantine(&path, "stray file in a message directory", out);
                    continue;
                }
            };
            let loaded = read_capped(&path, MAX_FILE).and_then(|b| {
                let e = Envelope::decode(&b)?;
                if e.id != id {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "id does not match the file name",
                    ));
                }
                Ok(e)
            });
            match loaded {
                Ok(e) => found.push(e),
                Err(e) => self.quarantine(&path, &format!("bad envelope: {e}"), out),
            }
        }
        if !has_message {
            self.quarantine(dir, "message directory without a message file", out);
        } else if found.is_empty() {
            self.quarantine(dir, "message directory without envelopes", out);
        } else if let Err(why) = matches_envelopes(&dir.join(MESSAGE), &found) {
            self.quarantine(dir, &why, out);
        } else {
            out.envelopes.extend(found);
        }
    }

    /// The entries of `dir`, sorted by name; a directory that cannot be
    /// read is reported as corrupt (but left in place) and yields nothing.
    fn list(&self, dir: &Path, out: &mut Recovered) -> Vec<(std::ffi::OsString, PathBuf)> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                self.report(dir, &format!("cannot list: {e}"), None, out);
                return Vec::new();
            }
        };
        let mut v: Vec<_> = rd
            .filter_map(|r| r.ok())
            .map(|d| (d.file_name(), d.path()))
            .collect();
        v.sort();
        v
    }

    /// Move `path` into corrupt/ under a fresh name and record it.
    fn quarantine(&self, path: &Path, reason: &str, out: &mut Recovered) {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let name = format!(
            "{}.{:016x}",
            sanitize(rel.as_os_str().as_bytes()),
            random_u64()
        );
        let to = self.corrupt.join(&name);
        let moved = match fs::rename(path, &to) {
            Ok(()) => Some(PathBuf::from("corrupt").join(name)),
            Err(e) => {
                log::warn!(
                    "warn: queue: cannot move path=\"{}\" to corrupt/: {e}",
                    crate::log::escape(rel.as_os_str().as_bytes())
                );
                None
            }
        };
        self.report(path, reason, moved, out);
    }

    fn report(&self, path: &Path, reason: &str, moved: Option<PathBuf>, out: &mut Recovered) {
        let rel = path.strip_prefix(&self.root).unwrap_or(path).to_path_buf();
        log::warn!(
            "warn: queue: corrupt path=\"{}\" reason=\"{}\" moved-to=\"{}\"",
            crate::log::escape(rel.as_os_str().as_bytes()),
            crate::log::escape(reason.as_bytes()),
            moved
                .as_deref()
                .map(|m| crate::log::escape(m.as_os_str().as_bytes()))
                .unwrap_or_default()
        );
        out.corrupt.push(Corrupt {
            path: rel,
            reason: reason.to_string(),
            moved_to: moved,
        });
    }

    /// Delete everything in `dir`; how many entries went.
    fn empty_dir(&self, dir: &Path) -> usize {
        let mut n = 0;
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                log::warn!("warn: queue: cannot list {}: {e}", dir.display());
                return 0;
            }
        };
        for entry in rd.filter_map(|r| r.ok()) {
            match remove_tree(&entry.path()) {
                Ok(()) => n += 1,
                Err(e) => log::warn!(
                    "warn: queue: cannot remove path=\"{}\": {e}",
                    crate::log::escape(entry.path().as_os_str().as_bytes())
                ),
            }
        }
        n
    }
}

/// For the parent, as root, before it starts the queue role: create the
/// spool as OpenSMTPD's `queue_init` and `ckdir` do, and check what exists
/// already. The root is 0711 root:wheel (so the chrooted queue role can
/// enter it but not list it); offline/ 0770 root:`offline_gid`; the
/// others 0700 `uid`:`gid` (the queue user). A wrong type, owner or mode
/// is an error naming the path: the admin fixes it; nothing is chmod'ed
/// behind their back but what this call just created.
pub fn prepare(root: &Path, uid: u32, gid: u32, offline_gid: u32) -> io::Result<()> {
    ckdir(root, 0o711, 0, 0)?;
    for &(name, mode) in DIRS {
        let (u, g) = if name == "offline" {
            (0, offline_gid)
        } else {
            (uid, gid)
        };
        ckdir(&root.join(name), mode, u, g)?;
    }
    // The new directories' entries in the root.
    open_dir(root)?.sync_all()
}

fn ckdir(path: &Path, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Created with no permissions, then given owner and mode, so
            // it is never briefly open to anyone (as OpenSMTPD).
            fs::DirBuilder::new().mode(0o000).create(path)?;
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            fs::symlink_metadata(path)?
        }
        Err(e) => return Err(e),
    };
    let fail = |what: String| Err(io::Error::other(format!("{}: {what}", path.display())));
    if !meta.file_type().is_dir() {
        return fail("not a directory".into());
    }
    if meta.uid() != uid || meta.gid() != gid {
        return fail(format!("must be owned by {uid}:{gid}"));
    }
    if meta.mode() & 0o7777 != mode {
        return fail(format!("must have mode {mode:04o}"));
    }
    Ok(())
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// io::Error is not Clone: the same errno (so StorageFull stays
/// StorageFull), or the same kind and text.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)
}

/// A new file: O_CREAT|O_EXCL (which never follows a link), 0600.
fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// An existing regular file, for reading, without following a link or
/// blocking on a fifo.
fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// Whether a committed message file is the one its envelopes recorded:
/// a commit renames a message into queue/ before the flush, so after a
/// power cut one whose flush never ended (and that was never
/// acknowledged) may be there with its data short or missing.
fn matches_envelopes(path: &Path, envelopes: &[Envelope]) -> Result<(), String> {
    let (size, crc) = open_regular(path)
        .and_then(|f| checksum(&f))
        .map_err(|e| format!("cannot read the message: {e}"))?;
    if envelopes
        .iter()
        .any(|e| (e.size, e.body_crc) != (size, crc))
    {
        return Err(format!(
            "message file ({size} bytes, CRC {crc:08x}) does not match its envelopes \
             (a commit a crash interrupted: never acknowledged)"
        ));
    }
    Ok(())
}

/// The size and CRC-32 of a message file, read from its start.
fn checksum(f: &File) -> io::Result<(u64, u32)> {
    let mut crc = Crc32::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut r = f;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok((size, crc.finish())),
            Ok(n) => {
                crc.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A regular file's bytes, refusing more than `cap`.
fn read_capped(path: &Path, cap: usize) -> io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    if f.metadata()?.len() > cap as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
    }
    let mut buf = Vec::new();
    f.take(cap as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > cap {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
    }
    Ok(buf)
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

/// Delete a file, a link (not what it points at) or a directory tree.
/// std's remove_dir_all does not follow symbolic links.
fn remove_tree(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.file_type().is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

fn parse_bucket(name: &OsStr) -> Option<u8> {
    let b = name.as_bytes();
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match b {
        [h, l] => Some(hex(*h)? << 4 | hex(*l)?),
        _ => None,
    }
}

/// A path as a harmless file name: [A-Za-z0-9._-] kept, the rest `_`,
/// at most 100 bytes.
fn sanitize(b: &[u8]) -> String {
    b.iter()
        .take(100)
        .map(|&c| {
            if c.is_ascii_alphanumeric() || c == b'.' || c == b'-' {
                c as char
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
