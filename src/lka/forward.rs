//! Reading a user's `~/.forward` without being tricked into reading
//! something else (forward(5); OpenSMTPD's `parent_forward_open()` in
//! smtpd.c, `secure_file()` in util.c and `forwards_get()` in forward.c).
//!
//! The home directory is opened first and checked on its descriptor: owned
//! by the user or root, not group- or world-writable. Its sticky bit asks
//! for mail to wait (forward(5): a user sets it while editing the file), a
//! temporary failure. `.forward` is then opened relative to that very
//! descriptor (openat), so no path component can be swapped between the
//! check and the open, with O_NOFOLLOW (a symbolic link is refused, never
//! followed: a link to /etc/shadow is not read) and O_NONBLOCK (a FIFO does
//! not block the open; it is refused as not a regular file). The opened
//! file must be a regular file owned by the user or root, not group- or
//! world-writable, with exactly one link (a hard link to a file the user
//! cannot read, root's included, is refused), and smaller than
//! [`MAX_FORWARD_SIZE`]. Its text must be UTF-8 without NUL.
//!
//! Where we differ from OpenSMTPD, and why:
//! - the home directory is checked through the descriptor that the file is
//!   then opened from, not by path (`stat()` then `open()`, racy);
//! - a symbolic link as the home directory itself is followed (the path
//!   comes from passwd(5) or the `userbase` table, the administrator's
//!   data; OpenSMTPD follows it too), and the directory it leads to is the
//!   one checked and read from;
//! - root may own the file (OpenSMTPD wants the user), and the link count
//!   is checked (OpenSMTPD does not).
//!
//! No home directory, or no `.forward` in it: `Ok(None)`, as OpenSMTPD
//! takes them (deliver normally). What an error means for the recipient is
//! the expander's business: see `ForwardError::is_temporary`.

#![forbid(unsafe_code)]

use super::aliases::{self, Item, ItemError};
use crate::sys::openat::openat;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The size at which a `.forward` is refused (forward.c's
/// `MAX_FORWARD_SIZE`: a file of this size or more is a temporary failure).
pub const MAX_FORWARD_SIZE: u64 = 4 * 1024;

/// Group- and world-write bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// S_ISVTX (its libc type differs between systems).
const STICKY: u32 = 0o1000;

/// Why a `.forward` was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardError {
    /// The home directory has its sticky bit: mail waits (temporary).
    HomeSticky,
    /// The home directory belongs to neither the user nor root.
    HomeOwner { owner: u32 },
    /// The home directory is group- or world-writable.
    HomeWritable { mode: u32 },
    /// `.forward` is a symbolic link.
    Symlink,
    /// `.forward` is a FIFO, a directory, a device...
    NotRegular,
    /// `.forward` belongs to neither the user nor root.
    Owner { owner: u32 },
    /// `.forward` is group- or world-writable.
    Writable { mode: u32 },
    /// `.forward` has more than one link.
    Links(u64),
    /// `.forward` is `MAX_FORWARD_SIZE` bytes or more (temporary).
    TooLarge(u64),
    /// `.forward` holds a NUL or is not UTF-8 (temporary, as OpenSMTPD
    /// takes a parse error).
    NotText,
    /// A system call failed.
    Io {
        what: &'static str,
        error: String,
        temporary: bool,
    },
}

impl ForwardError {
    /// Whether the recipient should be retried later rather than refused:
    /// the sticky home (forward(5)), a file too large or unreadable as text
    /// (forward.c returns -1 for them, a temporary failure), and running
    /// out of descriptors or memory, or an I/O error (smtpd.c turns EMFILE,
    /// ENFILE and EIO into EAGAIN; we add ENOMEM and EAGAIN). Insecure
    /// files are permanent failures there.
    pub fn is_temporary(&self) -> bool {
        match self {
            ForwardError::HomeSticky | ForwardError::TooLarge(_) | ForwardError::NotText => true,
            ForwardError::Io { temporary, .. } => *temporary,
            _ => false,
        }
    }

    fn io(what: &'static str, e: &io::Error) -> ForwardError {
        let temporary = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::EIO | libc::EAGAIN | libc::ENOMEM)
        );
        ForwardError::Io {
            what,
            error: e.to_string(),
            temporary,
        }
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardError::HomeSticky => {
                f.write_str("home directory is sticky: mail waits until the bit is cleared")
            }
            ForwardError::HomeOwner { owner } => {
                write!(
                    f,
                    "home directory is owned by uid {owner}, not the user or root"
                )
            }
            ForwardError::HomeWritable { mode } => {
                write!(
                    f,
                    "home directory is group- or world-writable (mode {mode:04o})"
                )
            }
            ForwardError::Symlink => f.write_str("~/.forward is a symbolic link"),
            ForwardError::NotRegular => f.write_str("~/.forward is not a regular file"),
            ForwardError::Owner { owner } => {
                write!(
                    f,
                    "~/.forward is owned by uid {owner}, not the user or root"
                )
            }
            ForwardError::Writable { mode } => {
                write!(
                    f,
                    "~/.forward is group- or world-writable (mode {mode:04o})"
                )
            }
            ForwardError::Links(n) => write!(f, "~/.forward has {n} hard links"),
            ForwardError::TooLarge(n) => write!(
                f,
                "~/.forward is {n} bytes, the limit is {}",
                MAX_FORWARD_SIZE - 1
            ),
            ForwardError::NotText => f.write_str("~/.forward is not UTF-8 text"),
            // An empty `what`: the error says it all (the runner's reason).
            ForwardError::Io {
                what: "", error, ..
            } => write!(f, "{error}"),
            ForwardError::Io { what, error, .. } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for ForwardError {}

/// Read `<home>/.forward` for the user `uid`, with the checks of the module
/// doc. `Ok(None)`: no home directory or no `.forward`.
pub fn read_forward(home: &Path, uid: u32) -> Result<Option<String>, ForwardError> {
    let dir = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
        .open(home)
    {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ForwardError::io("home directory", &e)),
    };
    let meta = dir
        .metadata()
        .map_err(|e| ForwardError::io("home directory", &e))?;
    let mode = meta.mode() & 0o7777;
    if mode & STICKY != 0 {
        return Err(ForwardError::HomeSticky);
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(ForwardError::HomeOwner { owner: meta.uid() });
    }
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(ForwardError::HomeWritable { mode });
    }
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let file = match openat(dir.as_fd(), c".forward", flags) {
        Ok(fd) => File::from(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a link: ELOOP on Linux and OpenBSD, EMLINK on
        // FreeBSD.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EMLINK)) => {
            return Err(ForwardError::Symlink)
        }
        Err(e) => return Err(ForwardError::io("~/.forward", &e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| ForwardError::io("~/.forward", &e))?;
    if !meta.file_type().is_file() {
        return Err(ForwardError::NotRegular);
    }
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(ForwardError::Owner { owner: meta.uid() });
    }
    let mode = meta.mode() & 0o7777;
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(ForwardError::Writable { mode });
    }
    if meta.nlink() != 1 {
        return Err(ForwardError::Links(meta.nlink()));
    }
    if meta.len() >= MAX_FORWARD_SIZE {
        return Err(ForwardError::TooLarge(meta.len()));
    }
    // The size may change after fstat: read no more than the limit.
    let mut bytes = Vec::new();
    file.take(MAX_FORWARD_SIZE)
        .read_to_end(&mut bytes)
        .map_err(|e| ForwardError::io("~/.forward", &e))?;
    if bytes.len() as u64 >= MAX_FORWARD_SIZE {
        return Err(ForwardError::TooLarge(bytes.len() as u64));
    }
    if bytes.contains(&0) {
        return Err(ForwardError::NotText);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ForwardError::NotText)
}

/// The items of a `.forward` (forward(5): aliases(5) items, one a line or
/// comma-separated, `#` comments).
pub fn parse_forward(text: &str) -> Result<Vec<Item>, ItemError> {
    aliases::parse_lines(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A fresh home directory (mode 0755) owned by whoever runs the tests.
    struct Home {
        path: PathBuf,
        /// Our effective uid, as the file system sees it.
        uid: u32,
    }

    impl Home {
        fn new(name: &str) -> Home {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "smtpd-rs-forward-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            chmod(&path, 0o755);
            let uid = std::fs::metadata(&path).unwrap().uid();
            Home { path, uid }
        }

        fn forward(&self) -> PathBuf {
            self.path.join(".forward")
        }

        /// Write `.forward` with `mode` (umask does not interfere).
        fn write(&self, text: &str, mode: u32) {
            // A fresh file: the last one may be read-only.
            let _ = std::fs::remove_file(self.forward());
            std::fs::write(self.forward(), text).unwrap();
            chmod(&self.forward(), mode);
        }

        fn read(&self) -> Result<Option<String>, ForwardError> {
            read_forward(&self.path, self.uid)
        }
    }

    impl Drop for Home {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const NOBODY: u32 = 65534;

    #[test]
    fn normal_file_is_read_and_parsed() {
        let h = Home::new("normal");
        let text = "# forward to work\nJoe@Example.ORG, \\me\n\"|/usr/bin/vacation me\"\n";
        h.write(text, 0o644);
        let got = h.read().unwrap().unwrap();
        assert_eq!(got, text);
        let items = parse_forward(&got).unwrap();
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[0], Item::Address(m) if m.to_string() == "Joe@example.org"));
        assert_eq!(items[1], Item::User("me".into()));
        assert_eq!(items[2], Item::Command("/usr/bin/vacation me".into()));
        // Read-only and owner-writable modes are fine.
        chmod(&h.forward(), 0o400);
        assert!(h.read().unwrap().is_some());
        // An empty file is read as empty (the expander delivers normally).
        h.write("", 0o600);
        assert_eq!(h.read().unwrap().as_deref(), Some(""));
    }

    #[test]
    fn missing_file_or_home() {
        let h = Home::new("missing");
        assert_eq!(h.read(), Ok(None));
        assert_eq!(read_forward(&h.path.join("nonexistent"), h.uid), Ok(None));
    }

    #[test]
    fn symlink_is_refused_and_never_read() {
        let h = Home::new("symlink");
        // A stand-in for /etc/shadow, readable by us, so a followed link
        // would show its content.
        let shadow = h.path.join("shadow");
        std::fs::write(&shadow, "root:$6$secret-hash:19000::::::\n").unwrap();
        chmod(&shadow, 0o600);
        std::os::unix::fs::symlink(&shadow, h.forward()).unwrap();
        let r = h.read();
        assert_eq!(r, Err(ForwardError::Symlink));
        assert!(!format!("{r:?}").contains("secret"));
        assert!(!r.unwrap_err().is_temporary());
        // A dangling link is refused the same way, not taken as "none".
        std::fs::remove_file(&shadow).unwrap();
        assert_eq!(h.read(), Err(ForwardError::Symlink));
    }

    #[test]
    fn hard_link_is_refused() {
        let h = Home::new("hardlink");
        let other = h.path.join("other");
        std::fs::write(&other, "joe@example.org\n").unwrap();
        chmod(&other, 0o600);
        std::fs::hard_link(&other, h.forward()).unwrap();
        assert_eq!(h.read(), Err(ForwardError::Links(2)));
    }

    #[test]
    fn writable_by_others_is_refused() {
        let h = Home::new("writable");
        h.write("joe@example.org\n", 0o620);
        assert_eq!(h.read(), Err(ForwardError::Writable { mode: 0o620 }));
        chmod(&h.forward(), 0o602);
        assert_eq!(h.read(), Err(ForwardError::Writable { mode: 0o602 }));
    }

    #[test]
    fn fifo_does_not_block() {
        let h = Home::new("fifo");
        // std has no mkfifo, and tests may not use unsafe: mkfifo(1).
        match std::process::Command::new("mkfifo")
            .arg(h.forward())
            .status()
        {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("skipped: mkfifo(1) unavailable: {other:?}");
                return;
            }
        }
        let (path, uid) = (h.path.clone(), h.uid);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_forward(&path, uid));
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => assert_eq!(r, Err(ForwardError::NotRegular)),
            Err(_) => panic!("read_forward blocked on a FIFO"),
        }
    }

    #[test]
    fn other_file_types_are_refused() {
        let h = Home::new("dir");
        std::fs::create_dir(h.forward()).unwrap();
        assert_eq!(h.read(), Err(ForwardError::NotRegular));
    }

    #[test]
    fn insecure_home_is_refused() {
        let h = Home::new("home");
        h.write("joe@example.org\n", 0o644);
        chmod(&h.path, 0o777);
        assert_eq!(h.read(), Err(ForwardError::HomeWritable { mode: 0o777 }));
        chmod(&h.path, 0o775);
        assert_eq!(h.read(), Err(ForwardError::HomeWritable { mode: 0o775 }));
        // Sticky: mail waits (forward(5)), whatever the other bits.
        chmod(&h.path, 0o1755);
        let e = h.read().unwrap_err();
        assert_eq!(e, ForwardError::HomeSticky);
        assert!(e.is_temporary());
        chmod(&h.path, 0o755);
        assert!(h.read().unwrap().is_some());
        // The home may be a link (administrator's data): the directory it
        // leads to is the one checked.
        let link = h.path.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&h.path, &link).unwrap();
        assert!(read_forward(&link, h.uid).unwrap().is_some());
        chmod(&h.path, 0o757);
        assert!(matches!(
            read_forward(&link, h.uid),
            Err(ForwardError::HomeWritable { .. })
        ));
        std::fs::remove_file(&link).unwrap();
    }

    #[test]
    fn home_of_someone_else_is_refused() {
        // The home belongs to us; a different user's .forward must not be
        // read from it (unless we are root, whom the check trusts).
        let h = Home::new("owner");
        h.write("joe@example.org\n", 0o644);
        if h.uid == 0 {
            std::os::unix::fs::chown(&h.path, Some(NOBODY), None).unwrap();
            assert_eq!(
                read_forward(&h.path, 1000),
                Err(ForwardError::HomeOwner { owner: NOBODY })
            );
        } else {
            let other = h.uid.wrapping_add(1).max(1);
            assert_eq!(
                read_forward(&h.path, other),
                Err(ForwardError::HomeOwner { owner: h.uid })
            );
        }
    }

    #[test]
    fn file_of_someone_else_is_refused() {
        let h = Home::new("fileowner");
        h.write("joe@example.org\n", 0o644);
        if h.uid != 0 {
            // Unprivileged we cannot give a file away, and a home we own is
            // refused first for any other user (tested above): skipped.
            return;
        }
        // Root owns home and file: trusted for any user.
        assert!(read_forward(&h.path, 1000).unwrap().is_some());
        std::os::unix::fs::chown(h.forward(), Some(NOBODY), None).unwrap();
        assert_eq!(
            read_forward(&h.path, 1000),
            Err(ForwardError::Owner { owner: NOBODY })
        );
        // ...and fine for its owner.
        assert!(read_forward(&h.path, NOBODY).unwrap().is_some());
    }

    #[test]
    fn size_and_content_limits() {
        let h = Home::new("size");
        let big = "joe@example.org\n".repeat(MAX_FORWARD_SIZE as usize / 16 + 1);
        h.write(&big, 0o644);
        let e = h.read().unwrap_err();
        assert!(matches!(e, ForwardError::TooLarge(_)), "{e:?}");
        assert!(e.is_temporary());
        h.write(&"x".repeat(MAX_FORWARD_SIZE as usize - 1), 0o644);
        assert!(h.read().is_ok());
        h.write("joe\0@example.org\n", 0o644);
        assert_eq!(h.read(), Err(ForwardError::NotText));
        std::fs::write(h.forward(), b"j\xffoe\n").unwrap();
        assert_eq!(h.read(), Err(ForwardError::NotText));
    }

    #[test]
    fn messages_say_why() {
        assert_eq!(
            ForwardError::Writable { mode: 0o664 }.to_string(),
            "~/.forward is group- or world-writable (mode 0664)"
        );
        assert_eq!(
            ForwardError::Symlink.to_string(),
            "~/.forward is a symbolic link"
        );
    }
}
