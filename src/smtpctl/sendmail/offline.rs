//! The offline queue, when smtpd is not running: sendmail writes its
//! arguments and the raw message to /var/spool/smtpd/offline/, and the
//! daemon enqueues each file when it starts (`parent::offline`), by
//! running `sendmail -S` as the file's owner. Nothing is parsed here: on
//! OpenBSD this runs set-group-id _smtpq (A9); the message is only copied.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use crate::spool::OFFLINE_DIR;

/// Save `args` (sendmail's, without the program name) and all of
/// `input`. Ok is sendmail's exit status: EX_TEMPFAIL, as OpenSMTPD's
/// (the message waits for the daemon).
pub fn save(args: &[String], input: &mut impl Read) -> Result<i32, (i32, String)> {
    // The first line is the argument list, split on '|' when read back.
    if let Some(bad) = args.iter().find(|a| a.contains(['|', '\n'])) {
        return Err((
            super::EX_SOFTWARE,
            format!("{bad} contains illegal character"),
        ));
    }
    let (mut file, path) = create()?;
    let mut write = |file: &mut std::fs::File| -> std::io::Result<()> {
        file.write_all(args.join("|").as_bytes())?;
        file.write_all(b"\n")?;
        std::io::copy(input, file)?;
        file.sync_all()
    };
    if let Err(e) = write(&mut file) {
        // A partial file would be sent as a message: none at all.
        let _ = std::fs::remove_file(&path);
        return Err((super::EX_UNAVAILABLE, format!("write error: {e}")));
    }
    Ok(super::EX_TEMPFAIL)
}

/// A new file `<time>.<random>`, mode 0600, never an existing one and
/// never through a symlink.
fn create() -> Result<(std::fs::File, String), (i32, String)> {
    let now = crate::spool::unix_now();
    let mut last = String::new();
    for attempt in 0..16u64 {
        let path = format!("{OFFLINE_DIR}/{now}.{:010x}", random(attempt));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => {
                give_to_group(&f).map_err(|e| {
                    let _ = std::fs::remove_file(&path);
                    (super::EX_UNAVAILABLE, format!("fchown {path}: {e}"))
                })?;
                return Ok((f, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                last = format!("cannot create temporary file {path}: {e}");
                break;
            }
        }
    }
    Err((super::EX_UNAVAILABLE, last))
}

/// smtpd enqueues only files of the directory's group (_smtpq), which
/// the set-group-id smtpctl creates. Root, running a plain smtpctl,
/// gives its file that group itself.
fn give_to_group(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if crate::sys::process::geteuid() != 0 {
        return Ok(());
    }
    let gid = std::fs::symlink_metadata(OFFLINE_DIR)?.gid();
    std::os::unix::fs::fchown(f, None, Some(gid))
}

/// A name part that differs between calls and processes.
fn random(attempt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(attempt);
    h.write_u32(std::process::id());
    h.finish() & 0xff_ffff_ffff
}
