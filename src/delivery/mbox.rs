//! mbox delivery (smtpd.conf `mbox`): append one message to the user's
//! mailbox file, normally /var/mail/<user>, as OpenSMTPD's mail.local
//! does, under the locks other mail programs honour.
//!
//! Decisions, against mail.local.c:
//! - A mailbox that is a symlink, not a regular file, hard-linked, or not
//!   the user's is refused as a temporary failure: mail.local's "linked
//!   or special file" path leaves with EX_OSERR, which smtpd.c's SIGCHLD
//!   handler maps to MDA_TEMPFAIL. The message waits for the admin.
//!   (mail.local does not check the owner; we do, since we run as the
//!   user and should only ever append to the user's own file.)
//! - Escaping is mboxrd: every line matching `^>*From ` gets one more
//!   '>', so readers can undo it exactly. mail.local escapes only "From "
//!   right after an empty line (mboxo).
//! - The From_ line's date is in UTC: this process may have no zoneinfo.
//! - mail.local takes a dotlock then flock/O_EXLOCK; we take a dotlock
//!   then a POSIX fcntl lock, the one Linux mail readers use.

#![forbid(unsafe_code)]

use super::message::{delivery_headers, tempfail, Lines};
use super::{Outcome, Recipient};
use crate::sys::lock::try_write_lock;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long to wait for other programs to let go of the mailbox.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between two tries at a busy lock.
const LOCK_RETRY: Duration = Duration::from_millis(200);

/// A dotlock older than this is a leftover of a crashed program.
const STALE_DOTLOCK: Duration = Duration::from_secs(5 * 60);

/// Append `message` (the spool file, CRLF endings) to the mbox at
/// `path`, creating it (mode 0600) if missing.
pub fn deliver(r: &Recipient, path: &Path, message: &mut dyn Read) -> Outcome {
    deliver_within(r, path, message, LOCK_TIMEOUT)
}

/// [`deliver`], giving up on busy locks after `lock_timeout`.
fn deliver_within(
    r: &Recipient,
    path: &Path,
    message: &mut dyn Read,
    lock_timeout: Duration,
) -> Outcome {
    let file = match open_mailbox(r, path) {
        Ok(f) => f,
        Err(o) => return o,
    };
    let deadline = Instant::now() + lock_timeout;
    // Dotlock first, then the kernel lock, as procmail and mail.local do.
    let _dotlock = match DotLock::acquire(path, deadline) {
        Ok(l) => l,
        Err(o) => return o,
    };
    if let Err(o) = fcntl_lock(&file, path, deadline) {
        return o;
    }
    // Measured under the lock: the file may have grown while we waited.
    let start = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return tempfail(&path.display().to_string(), &e),
    };
    let outcome = match append(r, &file, message, SystemTime::now()) {
        Ok(()) => Outcome::Delivered,
        Err(e) => {
            // Never leave half a message for the next one to be glued to.
            truncate_back(&file, start);
            tempfail(&path.display().to_string(), &e)
        }
    };
    // Close (dropping the fcntl lock) before the dotlock goes.
    drop(file);
    outcome
}

/// Open for appending without following a symlink or blocking on a
/// FIFO, then check what was opened: one regular file, one link, ours.
fn open_mailbox(r: &Recipient, path: &Path) -> Result<File, Outcome> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // O_NONBLOCK: opening a FIFO for writing would otherwise wait for
        // a reader; on a regular file it changes nothing.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                Outcome::TempFail(format!("{}: is a symbolic link, refused", path.display()))
            } else {
                tempfail(&path.display().to_string(), &e)
            }
        })?;
    let m = file
        .metadata()
        .map_err(|e| tempfail(&path.display().to_string(), &e))?;
    let refuse = |why: &str| Outcome::TempFail(format!("{}: {why}, refused", path.display()));
    if !m.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    if m.nlink() != 1 {
        return Err(refuse("has more than one link"));
    }
    if m.uid() != r.uid {
        return Err(refuse(&format!("owned by uid {}, not {}", m.uid(), r.uid)));
    }
    Ok(file)
}

/// Take the fcntl write lock, retrying until `deadline`.
fn fcntl_lock(file: &File, path: &Path, deadline: Instant) -> Result<(), Outcome> {
    loop {
        match try_write_lock(file.as_fd()) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(tempfail(&format!("lock {}", path.display()), &e)),
        }
        if !pause_until(deadline) {
            return Err(locked(path));
        }
    }
}

fn locked(path: &Path) -> Outcome {
    Outcome::TempFail(format!("{}: mailbox is locked", path.display()))
}

/// Sleep a retry interval, or until `deadline` if sooner. False when the
/// deadline has passed already.
fn pause_until(deadline: Instant) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep(LOCK_RETRY.min(deadline - now));
    true
}

/// `<mbox>.lock`, held while it exists; removed on drop. None when the
/// directory does not let the user create it (a mail spool writable only
/// by root or group mail): the fcntl lock then stands alone.
struct DotLock(Option<PathBuf>);

impl DotLock {
    fn acquire(mbox: &Path, deadline: Instant) -> Result<DotLock, Outcome> {
        let mut name = mbox.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(_) => return Ok(DotLock(Some(path))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Two deliveries could both judge one lock stale and
                    // the second remove the first one's fresh lock; the
                    // fcntl lock behind it still keeps them apart.
                    if is_stale(&path) {
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => return Ok(DotLock(None)),
                Err(e) => return Err(tempfail(&format!("dotlock {}", path.display()), &e)),
            }
            if !pause_until(deadline) {
                return Err(locked(mbox));
            }
        }
    }
}

impl Drop for DotLock {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

/// Whether the lock file at `path` was last touched long enough ago to be
/// a crashed program's.
fn is_stale(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age > STALE_DOTLOCK)
}

/// Write the From_ line, the delivery headers, the escaped message and
/// the closing empty line, then flush and fsync.
fn append(r: &Recipient, file: &File, message: &mut dyn Read, now: SystemTime) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    let sender = if r.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        &r.sender
    };
    writeln!(out, "From {sender} {}", asctime(now))?;
    // Our headers never start with "From ", so they need no escaping.
    out.write_all(delivery_headers(r).as_bytes())?;
    let mut lines = Lines::new(message);
    let mut line = Vec::new();
    while lines.next_into(&mut line)? {
        if needs_escape(&line) {
            out.write_all(b">")?;
        }
        out.write_all(&line)?;
    }
    // The empty line that ends a message in an mbox (mail.local's putc).
    out.write_all(b"\n")?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// mboxrd: "From ", ">From ", ">>From "... each gain one '>'.
fn needs_escape(line: &[u8]) -> bool {
    let quotes = line.iter().take_while(|&&b| b == b'>').count();
    line[quotes..].starts_with(b"From ")
}

/// Cut the mailbox back to `len` and flush that, best effort: the write
/// already failed, and this is all that is left to try.
fn truncate_back(file: &File, len: u64) {
    if file.set_len(len).is_ok() {
        let _ = file.sync_all();
    }
}

/// asctime(3) in UTC without the newline: "Thu Mar  5 18:38:28 2026".
fn asctime(t: SystemTime) -> String {
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86400;
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WD[(days % 7) as usize],
        MON[(mo - 1) as usize],
        d,
        (secs % 86400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
        y
    )
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(mo <= 2), mo, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testutil::{recipient, Scratch};
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};

    fn deliver_bytes(r: &Recipient, path: &Path, msg: &[u8], timeout: Duration) -> Outcome {
        let mut m = msg;
        deliver_within(r, path, &mut m, timeout)
    }

    /// Split an mbox into its messages at the From_ lines.
    fn messages(mbox: &[u8]) -> Vec<String> {
        let text = String::from_utf8(mbox.to_vec()).expect("utf8");
        let mut out: Vec<String> = Vec::new();
        for line in text.split_inclusive('\n') {
            if line.starts_with("From ") {
                out.push(String::new());
            }
            out.last_mut().expect("starts with From_").push_str(line);
        }
        out
    }

    #[test]
    fn two_messages_escaped() {
        let s = Scratch::new("mbox-two");
        let r = recipient(s.path(), "alice@example.com");
        let mbox = s.path().join("bob");
        let msg1 = b"Subject: one\r\n\r\nFrom here\r\n>From there\r\nnot From x\r\n";
        assert_eq!(
            deliver_bytes(&r, &mbox, msg1, LOCK_TIMEOUT),
            Outcome::Delivered
        );
        let bounce = recipient(s.path(), "");
        assert_eq!(
            deliver_bytes(&bounce, &mbox, b"Subject: two\r\n\r\nbody", LOCK_TIMEOUT),
            Outcome::Delivered
        );
        let meta = fs::metadata(&mbox).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(!s.path().join("bob.lock").exists(), "dotlock removed");

        let all = fs::read(&mbox).expect("read");
        let msgs = messages(&all);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        let (from1, rest1) = msgs[0].split_once('\n').expect("line");
        assert!(from1.starts_with("From alice@example.com "), "{from1}");
        assert_eq!(
            rest1,
            "Return-Path: <alice@example.com>\nDelivered-To: bob+lists@example.org\n\
             Subject: one\n\n>From here\n>>From there\nnot From x\n\n"
        );
        let (from2, rest2) = msgs[1].split_once('\n').expect("line");
        assert!(from2.starts_with("From MAILER-DAEMON "), "{from2}");
        assert_eq!(
            rest2,
            "Delivered-To: bob+lists@example.org\nSubject: two\n\nbody\n\n"
        );
    }

    #[test]
    fn escape_rule() {
        assert!(needs_escape(b"From x\n"));
        assert!(needs_escape(b">>From x\n"));
        assert!(!needs_escape(b"From:x\n"));
        assert!(!needs_escape(b" From x\n"));
        assert!(!needs_escape(b">\n"));
    }

    #[test]
    fn asctime_format() {
        // 2026-03-05 18:38:28 UTC was a Thursday.
        let t = UNIX_EPOCH + Duration::from_secs(1_772_735_908);
        assert_eq!(asctime(t), "Thu Mar  5 18:38:28 2026");
        assert_eq!(asctime(UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(asctime(leap), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn symlink_refused() {
        let s = Scratch::new("mbox-link");
        let r = recipient(s.path(), "a@example.com");
        let target = s.path().join("target");
        fs::write(&target, b"").expect("write");
        let mbox = s.path().join("bob");
        std::os::unix::fs::symlink(&target, &mbox).expect("symlink");
        let got = deliver_bytes(&r, &mbox, b"x\r\n", LOCK_TIMEOUT);
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("symbolic link")),
            "{got:?}"
        );
        assert_eq!(fs::read(&target).expect("read"), b"");
    }

    #[test]
    fn hard_link_refused() {
        let s = Scratch::new("mbox-hard");
        let r = recipient(s.path(), "a@example.com");
        let mbox = s.path().join("bob");
        fs::write(&mbox, b"").expect("write");
        fs::hard_link(&mbox, s.path().join("other")).expect("link");
        let got = deliver_bytes(&r, &mbox, b"x\r\n", LOCK_TIMEOUT);
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("more than one link")),
            "{got:?}"
        );
        assert_eq!(fs::read(&mbox).expect("read"), b"");
    }

    #[test]
    fn not_a_regular_file_refused() {
        let s = Scratch::new("mbox-dir");
        let r = recipient(s.path(), "a@example.com");
        // A directory cannot be opened for writing at all.
        let got = deliver_bytes(&r, s.path(), b"x\r\n", LOCK_TIMEOUT);
        assert!(matches!(got, Outcome::TempFail(_)), "{got:?}");
        // A FIFO without a reader must not hang the delivery.
        let fifo = s.path().join("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        let got = deliver_bytes(&r, &fifo, b"x\r\n", LOCK_TIMEOUT);
        assert!(matches!(got, Outcome::TempFail(_)), "{got:?}");
    }

    #[test]
    fn wrong_owner_refused() {
        let s = Scratch::new("mbox-owner");
        let mut r = recipient(s.path(), "a@example.com");
        let mbox = s.path().join("bob");
        fs::write(&mbox, b"").expect("write");
        r.uid = r.uid.wrapping_add(1);
        let got = deliver_bytes(&r, &mbox, b"x\r\n", LOCK_TIMEOUT);
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("owned by")),
            "{got:?}"
        );
    }

    /// A python3 process holding an fcntl lock on `path` until killed or
    /// `secs` pass; returns once the lock is held.
    fn hold_lock(path: &Path, secs: f64) -> Child {
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1], 'a')\n\
                      fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      print('locked', flush=True)\n\
                      time.sleep(float(sys.argv[2]))\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(secs.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        io::BufReader::new(out).read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "locked");
        child
    }

    #[test]
    fn held_fcntl_lock_times_out() {
        let s = Scratch::new("mbox-locked");
        let r = recipient(s.path(), "a@example.com");
        let mbox = s.path().join("bob");
        fs::write(&mbox, b"").expect("write");
        let mut holder = hold_lock(&mbox, 60.0);
        let t0 = Instant::now();
        let got = deliver_bytes(&r, &mbox, b"x\r\n", Duration::from_millis(700));
        let took = t0.elapsed();
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("mailbox is locked")),
            "{got:?}"
        );
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(fs::read(&mbox).expect("read"), b"");
        assert!(!s.path().join("bob.lock").exists(), "our dotlock is gone");
    }

    #[test]
    fn waits_for_a_short_lock() {
        let s = Scratch::new("mbox-wait");
        let r = recipient(s.path(), "a@example.com");
        let mbox = s.path().join("bob");
        fs::write(&mbox, b"").expect("write");
        let mut holder = hold_lock(&mbox, 0.4);
        let got = deliver_bytes(&r, &mbox, b"x\r\n", Duration::from_secs(10));
        let _ = holder.wait();
        assert_eq!(got, Outcome::Delivered);
        assert_eq!(messages(&fs::read(&mbox).expect("read")).len(), 1);
    }

    #[test]
    fn fresh_dotlock_waits_stale_one_removed() {
        let s = Scratch::new("mbox-dotlock");
        let r = recipient(s.path(), "a@example.com");
        let mbox = s.path().join("bob");
        let lock = s.path().join("bob.lock");
        fs::write(&lock, b"").expect("write");
        let got = deliver_bytes(&r, &mbox, b"x\r\n", Duration::from_millis(300));
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("mailbox is locked")),
            "{got:?}"
        );
        assert!(lock.exists(), "someone else's lock is left alone");

        let old = SystemTime::now() - Duration::from_secs(600);
        File::options()
            .write(true)
            .open(&lock)
            .expect("open")
            .set_modified(old)
            .expect("utime");
        let got = deliver_bytes(&r, &mbox, b"x\r\n", Duration::from_millis(300));
        assert_eq!(got, Outcome::Delivered);
        assert!(!lock.exists());
    }

    #[test]
    fn unwritable_spool_falls_back_to_fcntl() {
        let s = Scratch::new("mbox-spool");
        let r = recipient(s.path(), "a@example.com");
        let spool = s.path().join("mail");
        fs::create_dir(&spool).expect("mkdir");
        let mbox = spool.join("bob");
        fs::write(&mbox, b"").expect("write");
        fs::set_permissions(&spool, fs::Permissions::from_mode(0o555)).expect("chmod");
        // root ignores directory permissions: the dotlock is then taken.
        let got = deliver_bytes(&r, &mbox, b"x\r\n", Duration::from_millis(300));
        fs::set_permissions(&spool, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(got, Outcome::Delivered);
        assert!(!spool.join("bob.lock").exists());
    }

    /// `n` bytes of body lines, then a read error.
    struct FailsAfter {
        left: usize,
    }
    impl Read for FailsAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::other("spool read error"));
            }
            let n = buf.len().min(self.left).min(1000);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = if i % 50 == 49 { b'\n' } else { b'a' };
            }
            self.left -= n;
            Ok(n)
        }
    }

    #[test]
    fn failed_append_is_truncated_away() {
        let s = Scratch::new("mbox-trunc");
        let r = recipient(s.path(), "a@example.com");
        let mbox = s.path().join("bob");
        assert_eq!(
            deliver_bytes(&r, &mbox, b"first\r\n", LOCK_TIMEOUT),
            Outcome::Delivered
        );
        let before = fs::read(&mbox).expect("read");
        // More than the write buffer, so part of it reaches the file.
        let mut m = FailsAfter { left: 300 * 1024 };
        let got = deliver_within(&r, &mbox, &mut m, LOCK_TIMEOUT);
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("spool read error")),
            "{got:?}"
        );
        assert_eq!(fs::read(&mbox).expect("read"), before);
    }

    #[test]
    fn truncate_back_cuts() {
        let s = Scratch::new("mbox-cut");
        let p = s.path().join("f");
        fs::write(&p, b"keep this, drop that").expect("write");
        let f = OpenOptions::new().append(true).open(&p).expect("open");
        truncate_back(&f, 9);
        assert_eq!(fs::read(&p).expect("read"), b"keep this");
    }
}
