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
//! A message is committed iff its directory is under queue/. A directory
//! only ever gets there by one rename(2) of the complete `incoming/<msgid>`
//! directory, after its message file, its envelope files and its own
//! entries are durable; the 250 is sent only after that rename is durable
//! too. So after a crash, queue/ holds every acknowledged message whole,
//! and nothing else but whole messages; incoming/ holds only what was never
//! acknowledged, and [`Spool::recover`] deletes it. A rename onto a
//! non-empty directory fails, so a commit can never replace a committed
//! message.
//!
//! # The commit, step by step ([`Spool::commit`])
//! 1. For each message of the batch: check it (`incoming/<msgid>/` is a real
//!    directory, `message` a regular file, every envelope belongs to the
//!    message, no id twice), and write each envelope to a new file
//!    `incoming/<msgid>/<evpid>` (O_CREAT|O_EXCL|O_NOFOLLOW, 0600). A message
//!    that fails here is deleted and reported; the others go on.
//! 2. Flush #1, once for the batch: everything written in step 1 and the
//!    dispatcher's message files, data and metadata. On Linux one
//!    syncfs(2) on the spool's file system ([`Flush::Filesystem`]); with
//!    [`Flush::PerFile`] (and always on OpenBSD, which has no syncfs) an
//!    fsync of every message file, envelope file and message directory.
//! 3. `rename(incoming/<msgid>, queue/<bb>/<msgid>)` for each message,
//!    creating the bucket first if needed. Nothing is acknowledged yet;
//!    a crash here leaves some renames done and some not: both are whole.
//! 4. Flush #2, once for the batch: the renames. syncfs again, or an fsync
//!    of incoming/, of each bucket renamed into, and of queue/ if a bucket
//!    was created.
//! 5. Report Ok per message: now the 250 may go out.
//!
//! Two flushes per batch, whatever its size: flush #1 must come before the
//! renames (with delayed allocation a rename can reach the journal before
//! the data of the files it moves; ext4's auto_da_alloc only covers
//! rename-over-a-file), and flush #2 before the reply. If flush #1 fails
//! nothing was renamed: every message of the batch is deleted and fails.
//! If flush #2 fails the renamed directories are moved out to purge/ and
//! deleted, and the batch fails: the clients get 4xx. A power cut in
//! between may still have made such a rename durable: the message is then
//! delivered although the client was told to retry, a duplicate, never a
//! loss.
//!
//! Why syncfs: it writes back the whole file system and commits the
//! journal once, so a batch of 32 messages costs the same two journal
//! commits (and two device cache flushes) as a batch of 1, where fsync per
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
//! collects commit requests while a commit runs: everything that arrived
//! meanwhile is the next batch, so concurrent sessions share the flushes
//! without any timer. System calls: open/openat (read, write, O_CREAT,
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

use super::envelope::{Envelope, MAX_FILE};
use super::id::{random_u64, EvpId, MsgId};
use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
        let s = crate::sys::fsync::space(self.incoming_dir.as_fd())?;
        let low = |used: u64, avail: u64| {
            let total = used as u128 + avail as u128;
            total != 0 && (avail as u128) * 100 < total * self.min_free_percent as u128
        };
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

    /// The group commit: make every message of `batch` and its envelopes
    /// durable and move it into queue/, with two flushes for the whole
    /// batch (see the module documentation). One result per message, in
    /// order; Ok means committed and durable: the 250 may be sent. A
    /// message that fails is deleted (abort is then a no-op).
    pub fn commit(&self, batch: &[(MsgId, Vec<Envelope>)]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = Vec::with_capacity(batch.len());
        // Files kept open for Flush::PerFile.
        let per_file = self.effective_flush() == Flush::PerFile;
        let mut to_sync: Vec<File> = Vec::new();
        let mut pending: Vec<usize> = Vec::new();
        let mut seen: HashSet<MsgId> = HashSet::new();

        // Step 1: write the envelopes.
        for (i, (msgid, envelopes)) in batch.iter().enumerate() {
            if !seen.insert(*msgid) {
                results.push(Err(invalid("message twice in one commit")));
                continue;
            }
            match self.stage(*msgid, envelopes, per_file.then_some(&mut to_sync)) {
                Ok(()) => {
                    pending.push(i);
                    results.push(Ok(()));
                }
                Err(e) => {
                    let _ = self.abort(*msgid);
                    results.push(Err(e));
                }
            }
        }
        if pending.is_empty() {
            return results;
        }

        // Step 2: flush #1.
        let flushed = if per_file {
            to_sync.iter().try_for_each(|f| f.sync_all())
        } else {
            self.syncfs()
        };
        drop(to_sync);
        if let Err(e) = flushed {
            for &i in &pending {
                let _ = self.abort(batch[i].0);
                results[i] = Err(copy_error(&e));
            }
            return results;
        }

        // Step 3: the renames.
        let mut renamed: Vec<usize> = Vec::new();
        let mut buckets: BTreeSet<u8> = BTreeSet::new();
        let mut new_bucket = false;
        for &i in &pending {
            let msgid = batch[i].0;
            match self.publish(msgid, &mut new_bucket) {
                Ok(()) => {
                    buckets.insert(msgid.bucket());
                    renamed.push(i);
                }
                Err(e) => {
                    let _ = self.abort(msgid);
                    results[i] = Err(e);
                }
            }
        }
        if renamed.is_empty() {
            return results;
        }

        // Step 4: flush #2.
        let flushed = if per_file {
            let mut r = self.incoming_dir.sync_all();
            for &b in &buckets {
                if r.is_ok() {
                    r = open_dir(&self.queue.join(format!("{b:02x}"))).and_then(|d| d.sync_all());
                }
            }
            if r.is_ok() && new_bucket {
                r = self.queue_dir.sync_all();
            }
            r
        } else {
            self.syncfs()
        };
        if let Err(e) = flushed {
            for &i in &renamed {
                let msgid = batch[i].0;
                if let Err(e2) = self.purge_dir(&self.queue_path(msgid), msgid) {
                    log::warn!(
                        "warn: queue: cannot take back msgid={msgid} after a failed flush: {e2}"
                    );
                }
                results[i] = Err(copy_error(&e));
            }
        }
        results
    }

    fn effective_flush(&self) -> Flush {
        if cfg!(target_os = "linux") {
            self.flush
        } else {
            Flush::PerFile
        }
    }

    #[cfg(target_os = "linux")]
    fn syncfs(&self) -> io::Result<()> {
        crate::sys::fsync::syncfs(self.incoming_dir.as_fd())
    }

    #[cfg(not(target_os = "linux"))]
    fn syncfs(&self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Step 1 for one message.
    fn stage(
        &self,
        msgid: MsgId,
        envelopes: &[Envelope],
        mut to_sync: Option<&mut Vec<File>>,
    ) -> io::Result<()> {
        if envelopes.is_empty() {
            return Err(invalid("a message without envelopes"));
        }
        let mut ids = HashSet::new();
        for e in envelopes {
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
        if let Some(v) = to_sync.as_deref_mut() {
            v.push(message);
        }
        for e in envelopes {
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

    /// Step 3 for one message.
    fn publish(&self, msgid: MsgId, new_bucket: &mut bool) -> io::Result<()> {
        let bucket = self.bucket_path(msgid);
        match fs::DirBuilder::new().mode(0o700).create(&bucket) {
            Ok(()) => *new_bucket = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if !fs::symlink_metadata(&bucket)?.file_type().is_dir() {
                    return Err(invalid("bucket is not a directory"));
                }
            }
            Err(e) => return Err(e),
        }
        // Fails (ENOTEMPTY/EEXIST) rather than replace a committed message.
        fs::rename(self.incoming_path(msgid), self.queue_path(msgid))
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
