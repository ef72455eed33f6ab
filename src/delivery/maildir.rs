//! Maildir delivery (smtpd.conf `maildir [path] [junk]`), as OpenSMTPD's
//! mail.maildir helper does it: write the message into tmp/ under a name
//! no other delivery can pick, fsync it, rename it into new/. A reader
//! only ever sees complete messages in new/, and no lock is needed.
//!
//! Where OpenSMTPD's mail.maildir.c and this file part ways, on purpose:
//! - It follows a symbolic link at the maildir or at tmp/, new/, cur/
//!   (its mkdirs uses stat). We refuse one, as a temporary failure (the
//!   message stays queued until someone fixes the mailbox): a mailbox
//!   that resolves elsewhere than the configured path is a misconfiguration
//!   or a trap, and refusing costs nothing when there is none. Only the
//!   named components are checked; a symlinked /home above them is fine.
//! - It fsyncs the file but not new/: the rename could be lost in a crash
//!   after the queue dropped the message. We fsync new/ too.
//! - File names: "<sec>.M<usec>P<pid>Q<n>.<host>", the modern form of the
//!   Maildir specification, instead of "<sec>.<random>.<host>".

#![forbid(unsafe_code)]

use super::message::{delivery_headers, extension, tempfail, Lines};
use super::{Outcome, Recipient};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The three directories of a maildir.
const SUBDIRS: [&str; 3] = ["cur", "tmp", "new"];

/// The folder spam goes to with `junk`, as mail.maildir names it.
const JUNK_FOLDER: &str = ".Junk";

/// Characters of a subaddress that may not appear in a folder name;
/// mail.maildir.c's MAILADDR_ESCAPE, each turned into ':'.
const FOLDER_ESCAPE: &str = "!#$%&'*/?^`{|}~";

/// How many names to try when tmp/ already holds one (a clock step back
/// in a reused pid): each try takes the next Q counter.
const NAME_TRIES: u32 = 8;

/// Deliver `message` (the spool file, CRLF endings) into the maildir at
/// `maildir`, creating it if missing. With `junk`, a message whose header
/// says `X-Spam: yes` (or `X-Spam-Flag: yes`) goes to its `.Junk` folder.
/// A subaddress (bob+lists@) picks the `.lists` folder when it exists.
pub fn deliver(r: &Recipient, maildir: &Path, junk: bool, message: &mut dyn Read) -> Outcome {
    // mail.maildir.c: a relative path is err(1), a permanent failure.
    if !maildir.is_absolute() {
        return Outcome::PermFail(format!(
            "maildir {}: not an absolute path",
            maildir.display()
        ));
    }
    let mut created = match ensure_maildir(maildir) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let junk_dir = maildir.join(JUNK_FOLDER);
    if junk {
        // mail.maildir creates .Junk whenever junk is on, spam or not.
        match ensure_maildir(&junk_dir) {
            Ok(c) => created |= c,
            Err(o) => return o,
        }
    }
    let mut folder = maildir.to_path_buf();
    if let Some(f) = extension(&r.dest).map(|e| maildir.join(folder_name(e))) {
        // Only an existing folder is used; a typo'd subaddress must not
        // make folders appear.
        if fs::symlink_metadata(&f).is_ok() {
            if let Err(o) = ensure_maildir(&f) {
                return o;
            }
            folder = f;
        }
    }

    let (name, file) = match create_tmp(&folder.join("tmp"), &r.hostname) {
        Ok(x) => x,
        Err(e) => return tempfail(&format!("{}/tmp", folder.display()), &e),
    };
    let tmp = folder.join("tmp").join(&name);
    let is_spam = match write_message(r, file, junk, message) {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return tempfail(&tmp.display().to_string(), &e);
        }
    };
    let new_dir = if is_spam {
        junk_dir.join("new")
    } else {
        folder.join("new")
    };
    if let Err(e) = fs::rename(&tmp, new_dir.join(&name)) {
        let _ = fs::remove_file(&tmp);
        return tempfail(&format!("rename into {}", new_dir.display()), &e);
    }
    // Once the rename is done, a failed fsync must not remove the file (a
    // reader may have it already): the retry may then deliver it twice,
    // which beats losing it.
    if let Err(e) = sync_dir(&new_dir) {
        return tempfail(&format!("fsync {}", new_dir.display()), &e);
    }
    if created {
        // Best effort: the entries of folders we just made.
        for d in [maildir, maildir.parent().unwrap_or(maildir)] {
            let _ = sync_dir(d);
        }
    }
    Outcome::Delivered
}

/// Make `dir` a maildir (itself and tmp/ new/ cur/, mode 0700) unless it
/// is one. Ok(true) when something was created. A component that is a
/// symlink or not a directory is a temporary failure: mail.maildir
/// exits EX_TEMPFAIL when mkdir of tmp/ fails with ENOTDIR.
fn ensure_maildir(dir: &Path) -> Result<bool, Outcome> {
    let mut created = false;
    match fs::symlink_metadata(dir) {
        Ok(m) => check_dir(dir, &m)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Like mkdir -p, as mail.maildir's mkdirs does for the parents.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| tempfail(&format!("mkdir {}", dir.display()), &e))?;
            // A racing creator may have put something else there.
            let m =
                fs::symlink_metadata(dir).map_err(|e| tempfail(&dir.display().to_string(), &e))?;
            check_dir(dir, &m)?;
            created = true;
        }
        Err(e) => return Err(tempfail(&dir.display().to_string(), &e)),
    }
    for sub in SUBDIRS {
        let p = dir.join(sub);
        match DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => created = true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let m =
                    fs::symlink_metadata(&p).map_err(|e| tempfail(&p.display().to_string(), &e))?;
                check_dir(&p, &m)?;
            }
            Err(e) => return Err(tempfail(&format!("mkdir {}", p.display()), &e)),
        }
    }
    Ok(created)
}

fn check_dir(p: &Path, m: &fs::Metadata) -> Result<(), Outcome> {
    let ft = m.file_type();
    if ft.is_symlink() {
        Err(Outcome::TempFail(format!(
            "{}: is a symbolic link, refused",
            p.display()
        )))
    } else if !ft.is_dir() {
        Err(Outcome::TempFail(format!(
            "{}: not a directory",
            p.display()
        )))
    } else {
        Ok(())
    }
}

/// ".<subaddress>" with mail.maildir's unsafe characters (among them
/// '/') turned into ':', so the folder is always directly in the maildir.
fn folder_name(ext: &str) -> String {
    let safe: String = ext
        .chars()
        .map(|c| if FOLDER_ESCAPE.contains(c) { ':' } else { c })
        .collect();
    format!(".{safe}")
}

/// Create a new file in `tmp` (O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600)
/// under a fresh unique name; the name and the open file.
fn create_tmp(tmp: &Path, hostname: &str) -> io::Result<(String, File)> {
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..NAME_TRIES {
        let name = unique_name(
            SystemTime::now(),
            std::process::id(),
            next_counter(),
            hostname,
        );
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(tmp.join(&name))
        {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// This process's delivery count, the Q part of names: unique within the
/// process even when the clock does not move.
fn next_counter() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// "<sec>.M<usec>P<pid>Q<n>.<host>": with the host's '/' and ':' written
/// as "\057" and "\072", as the Maildir specification asks ('/' cannot be
/// in a name, ':' starts the info part).
fn unique_name(now: SystemTime, pid: u32, n: u64, hostname: &str) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let host = if hostname.is_empty() {
        "localhost"
    } else {
        hostname
    };
    let host = host.replace('/', "\\057").replace(':', "\\072");
    format!("{}.M{}P{pid}Q{n}.{host}", d.as_secs(), d.subsec_micros())
}

/// Write the delivery headers and the message into `file`, then flush
/// and fsync it. Ok(true) when `junk` is on and the header says spam.
fn write_message(
    r: &Recipient,
    file: File,
    junk: bool,
    message: &mut dyn Read,
) -> io::Result<bool> {
    let mut out = BufWriter::with_capacity(64 * 1024, file);
    out.write_all(delivery_headers(r).as_bytes())?;
    let mut lines = Lines::new(message);
    let mut line = Vec::new();
    let mut is_spam = false;
    while lines.next_into(&mut line)? {
        if junk && lines.in_header() && says_spam(&line) {
            is_spam = true;
        }
        out.write_all(&line)?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(is_spam)
}

/// `X-Spam: yes` or `X-Spam-Flag: yes`, names and value in any case (the
/// headers mail.maildir.c looks at; it compares the whole line, we allow
/// any blanks around the value).
fn says_spam(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    (name.eq_ignore_ascii_case(b"X-Spam") || name.eq_ignore_ascii_case(b"X-Spam-Flag"))
        && value.trim_ascii().eq_ignore_ascii_case(b"yes")
}

/// fsync a directory, so the entries renamed or created in it last.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testutil::{recipient, Scratch};
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Duration;

    /// The paths of the files in `dir`, sorted.
    fn names_in(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    const MSG: &[u8] = b"Subject: hi\r\nX-Spam: YES\r\n\r\nbody 1\r\nbody 2\r\n";

    fn deliver_bytes(r: &Recipient, md: &Path, junk: bool, msg: &[u8]) -> Outcome {
        let mut m = msg;
        deliver(r, md, junk, &mut m)
    }

    #[test]
    fn lands_in_new_with_lf_and_headers() {
        let s = Scratch::new("md-basic");
        let r = recipient(s.path(), "alice@example.com");
        let md = s.path().join("Maildir");
        assert_eq!(
            deliver_bytes(&r, &md, false, b"Subject: hi\r\n\r\nbody\r\n"),
            Outcome::Delivered
        );
        for sub in SUBDIRS {
            let m = fs::metadata(md.join(sub)).expect("subdir");
            assert!(m.is_dir());
            assert_eq!(m.permissions().mode() & 0o777, 0o700);
        }
        assert_eq!(
            fs::metadata(&md).expect("md").permissions().mode() & 0o777,
            0o700
        );
        assert!(names_in(&md.join("tmp")).is_empty());
        let files = names_in(&md.join("new"));
        assert_eq!(files.len(), 1);
        let body = fs::read(&files[0]).expect("read");
        assert_eq!(
            body,
            b"Return-Path: <alice@example.com>\nDelivered-To: bob+lists@example.org\n\
              Subject: hi\n\nbody\n"
        );
        assert_eq!(
            fs::metadata(&files[0]).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        // The host's '/' and ':' are escaped; nothing after it has a ':'.
        let name = files[0].file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.ends_with(".mx\\0571\\072example.org"), "{name}");
    }

    #[test]
    fn two_deliveries_two_files() {
        let s = Scratch::new("md-two");
        let r = recipient(s.path(), "");
        let md = s.path().join("Maildir");
        assert_eq!(deliver_bytes(&r, &md, false, b"a\r\n"), Outcome::Delivered);
        assert_eq!(deliver_bytes(&r, &md, false, b"b\r\n"), Outcome::Delivered);
        let files = names_in(&md.join("new"));
        assert_eq!(files.len(), 2);
        // A bounce: no Return-Path.
        let body = fs::read(&files[0]).expect("read");
        assert!(body.starts_with(b"Delivered-To: bob+lists@example.org\n"));
    }

    #[test]
    fn junk_goes_to_junk_folder() {
        let s = Scratch::new("md-junk");
        let r = recipient(s.path(), "spammer@example.net");
        let md = s.path().join("Maildir");
        assert_eq!(deliver_bytes(&r, &md, true, MSG), Outcome::Delivered);
        assert!(names_in(&md.join("new")).is_empty());
        assert_eq!(names_in(&md.join(".Junk/new")).len(), 1);
        assert!(names_in(&md.join("tmp")).is_empty());
        // Without junk the same message stays in the inbox.
        assert_eq!(deliver_bytes(&r, &md, false, MSG), Outcome::Delivered);
        assert_eq!(names_in(&md.join("new")).len(), 1);
        // A body line is not a header.
        let ham = b"Subject: x\r\n\r\nX-Spam: yes\r\n";
        assert_eq!(deliver_bytes(&r, &md, true, ham), Outcome::Delivered);
        assert_eq!(names_in(&md.join("new")).len(), 2);
        assert_eq!(names_in(&md.join(".Junk/new")).len(), 1);
    }

    #[test]
    fn spam_header_forms() {
        assert!(says_spam(b"X-Spam: yes\n"));
        assert!(says_spam(b"x-spam:YES\n"));
        assert!(says_spam(b"X-Spam-Flag: Yes \n"));
        assert!(!says_spam(b"X-Spam: no\n"));
        assert!(!says_spam(b"X-Spam-Status: yes\n"));
        assert!(!says_spam(b"X-Spam yes\n"));
    }

    #[test]
    fn existing_subaddress_folder_is_used() {
        let s = Scratch::new("md-ext");
        let r = recipient(s.path(), "a@example.com");
        let md = s.path().join("Maildir");
        // No .lists folder yet: inbox, and no folder appears.
        assert_eq!(deliver_bytes(&r, &md, false, b"x\r\n"), Outcome::Delivered);
        assert_eq!(names_in(&md.join("new")).len(), 1);
        assert!(!md.join(".lists").exists());
        fs::create_dir(md.join(".lists")).expect("mkdir");
        assert_eq!(deliver_bytes(&r, &md, false, b"y\r\n"), Outcome::Delivered);
        assert_eq!(names_in(&md.join(".lists/new")).len(), 1);
        assert_eq!(folder_name("a/b*c"), ".a:b:c");
    }

    #[test]
    fn symlinked_maildir_refused() {
        let s = Scratch::new("md-link");
        let r = recipient(s.path(), "a@example.com");
        let real = s.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        let md = s.path().join("Maildir");
        std::os::unix::fs::symlink(&real, &md).expect("symlink");
        let got = deliver_bytes(&r, &md, false, b"x\r\n");
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("symbolic link")),
            "{got:?}"
        );
        assert!(names_in(&real).is_empty());
    }

    #[test]
    fn symlinked_new_refused() {
        let s = Scratch::new("md-link-new");
        let r = recipient(s.path(), "a@example.com");
        let md = s.path().join("Maildir");
        assert_eq!(deliver_bytes(&r, &md, false, b"x\r\n"), Outcome::Delivered);
        fs::remove_dir_all(md.join("new")).expect("rm new");
        std::os::unix::fs::symlink(s.path(), md.join("new")).expect("symlink");
        let got = deliver_bytes(&r, &md, false, b"x\r\n");
        assert!(matches!(got, Outcome::TempFail(_)), "{got:?}");
    }

    #[test]
    fn file_in_place_of_maildir() {
        let s = Scratch::new("md-file");
        let r = recipient(s.path(), "a@example.com");
        let md = s.path().join("Maildir");
        fs::write(&md, b"not a dir").expect("write");
        let got = deliver_bytes(&r, &md, false, b"x\r\n");
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("not a directory")),
            "{got:?}"
        );
    }

    #[test]
    fn relative_path_is_permanent() {
        let r = recipient(&std::env::temp_dir(), "a@example.com");
        let got = deliver_bytes(&r, Path::new("Maildir"), false, b"x\r\n");
        assert!(matches!(got, Outcome::PermFail(_)), "{got:?}");
    }

    /// A spool read that fails half way.
    struct Broken(bool);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                return Err(io::Error::other("disk on fire"));
            }
            let part = b"Subject: x\r\n";
            buf[..part.len()].copy_from_slice(part);
            Ok(part.len())
        }
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let s = Scratch::new("md-broken");
        let r = recipient(s.path(), "a@example.com");
        let md = s.path().join("Maildir");
        let got = deliver(&r, &md, false, &mut Broken(false));
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("disk on fire")),
            "{got:?}"
        );
        assert!(names_in(&md.join("tmp")).is_empty());
        assert!(names_in(&md.join("new")).is_empty());
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        assert_eq!(
            unique_name(t, 42, 7, "a:b/c"),
            "1700000000.M123456P42Q7.a\\072b\\057c"
        );
        assert_eq!(unique_name(t, 1, 0, ""), "1700000000.M123456P1Q0.localhost");
        assert_ne!(next_counter(), next_counter());
    }
}
