//! Tests only: a scratch directory under the system's temp dir and a
//! recipient that is whoever runs the tests (root in CI, a user locally),
//! so no test depends on privileges.

#![forbid(unsafe_code)]

use super::Recipient;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory, removed with everything in it when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("smtpd-delivery-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A recipient owned by the current uid and gid, home in `home`.
pub(crate) fn recipient(home: &Path, sender: &str) -> Recipient {
    // The scratch dir we just made carries our uid and (effective) gid.
    let meta = std::fs::metadata(home).expect("stat home");
    Recipient {
        sender: sender.into(),
        rcpt: "bob+lists@example.org".into(),
        dest: "bob+lists@example.org".into(),
        user: "bob".into(),
        home: home.to_path_buf(),
        uid: meta.uid(),
        gid: meta.gid(),
        hostname: "mx/1:example.org".into(),
    }
}
