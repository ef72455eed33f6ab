//! Picking up sendmail's offline queue when smtpd starts, as OpenSMTPD's
//! parent does (offline_scan, offline_enqueue): each file in
//! /var/spool/smtpd/offline/ is handed, as standard input, to `sendmail
//! -S` (our smtpctl) running as the file's owner, which reads the saved
//! arguments and the message and enqueues them through the daemon like
//! any sendmail. The file is removed once that succeeded.
//!
//! This runs in the delivery runner (root, no sandbox for the exec to
//! inherit), in one thread, one file at a time. Root only opens and
//! checks each file (A8: no symlink, no hard link, a regular file of the
//! directory's group, as OpenSMTPD checks); everything that reads its
//! contents runs as the owner (A9).

use crate::spool::OFFLINE_DIR;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// OpenSMTPD defers its scan by a second, so the roles are up.
const START_DELAY: Duration = Duration::from_secs(1);
/// The longest one enqueue may take before its smtpctl is killed.
const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(300);
/// Most files taken in one start; more wait for the next.
const MAX_FILES: usize = 10_000;
/// The PATH the child gets, as OpenSMTPD's _PATH_DEFPATH.
const DEFAULT_PATH: &str = "/usr/bin:/bin:/usr/sbin:/sbin";

/// Scan the offline queue in a thread of its own.
pub fn start(smtpctl: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("offline".into())
        .spawn(move || {
            std::thread::sleep(START_DELAY);
            scan(&smtpctl);
        });
    if let Err(e) = spawned {
        log::warn!("warn: smtpd: offline queue: {e}");
    }
}

fn scan(smtpctl: &Path) {
    log::debug!("debug: smtpd: scanning offline queue...");
    let dir = match fs::symlink_metadata(OFFLINE_DIR) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            log::warn!("warn: smtpd: {OFFLINE_DIR}: not a directory");
            return;
        }
        Err(e) => {
            log::warn!("warn: smtpd: {OFFLINE_DIR}: {e}");
            return;
        }
    };
    let mut names: Vec<PathBuf> = match fs::read_dir(OFFLINE_DIR) {
        Ok(rd) => rd.flatten().take(MAX_FILES).map(|e| e.path()).collect(),
        Err(e) => {
            log::warn!("warn: smtpd: {OFFLINE_DIR}: {e}");
            return;
        }
    };
    names.sort();
    for path in names {
        if let Err(e) = enqueue(&path, dir.gid(), smtpctl) {
            log::warn!(
                "warn: smtpd: couldn't enqueue offline message {}; {e}",
                path.display()
            );
        }
    }
    log::debug!("debug: smtpd: offline scanning done");
}

/// Enqueue one file; Ok once it is enqueued and removed (or was empty).
fn enqueue(path: &Path, dir_gid: u32, smtpctl: &Path) -> Result<(), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("open: {e}"))?;
    let st = file.metadata().map_err(|e| format!("fstat: {e}"))?;
    if !st.file_type().is_file() {
        return Err(format!("not a regular file (uid {})", st.uid()));
    }
    if st.nlink() != 1 {
        return Err("hard-linked".into());
    }
    // Only root and the set-group-id smtpctl can write there.
    if st.gid() != dir_gid {
        return Err(format!("bad gid {}", st.gid()));
    }
    if st.len() == 0 {
        // A sendmail that failed before writing: nothing to send.
        return fs::remove_file(path).map_err(|e| format!("unlink: {e}"));
    }
    let (acct, _) = crate::sys::privdrop::lookup_uid(st.uid())
        .map_err(|e| format!("getpwuid for uid {}: {e}", st.uid()))?;
    let home = if Path::new(&acct.home).is_dir() {
        acct.home.clone()
    } else {
        "/".to_string()
    };
    log::debug!(
        "debug: smtpd: enqueueing offline message {}",
        path.display()
    );
    // uid() makes std drop every supplementary group, then set the gid
    // and the uid, in the child, before the exec.
    let mut child = Command::new(smtpctl)
        .arg0("sendmail")
        .arg("-S")
        .stdin(Stdio::from(File::from(std::os::fd::OwnedFd::from(file))))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .current_dir(home)
        .gid(acct.gid)
        .uid(acct.uid)
        .spawn()
        .map_err(|e| format!("smtpctl: {e}"))?;
    let deadline = Instant::now() + ENQUEUE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("smtpctl timed out".into());
            }
            Err(e) => return Err(format!("smtpctl: {e}")),
        }
    };
    if !status.success() {
        return Err(format!("smtpctl {status}"));
    }
    fs::remove_file(path).map_err(|e| format!("unlink: {e}"))
}
