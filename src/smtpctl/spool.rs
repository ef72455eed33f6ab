//! `show envelope`, `show message`, and `show queue` with no daemon
//! running: like OpenSMTPD's smtpctl, these read the spool directly
//! (only root can: queue/ is 0700 _smtpq). Envelope files are decoded as
//! the queue decodes them (untrusted bytes, checked format); one that
//! does not decode is skipped.

use crate::ipc::ctl::{QueueEntry, RunState, Scheduled};
use crate::proc::SPOOL_DIR;
use crate::spool::store::MESSAGE;
use crate::spool::{Envelope, Kind};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Longest envelope file read (the format's own cap).
const MAX_ENVELOPE: u64 = crate::spool::envelope::MAX_FILE as u64;

fn message_dir(msgid: u32) -> PathBuf {
    PathBuf::from(SPOOL_DIR)
        .join("queue")
        .join(format!("{:02x}", msgid >> 24))
        .join(format!("{msgid:08x}"))
}

/// `show message <msgid>|<evpid>`: the message file as stored.
pub fn show_message(msgid: u32) -> Result<i32, String> {
    let path = message_dir(msgid).join(MESSAGE);
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = std::io::stdout().lock();
    std::io::copy(&mut f, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(0)
}

fn load(path: &std::path::Path) -> Result<Envelope, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ENVELOPE + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Envelope::decode(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// `show envelope <evpid>`.
pub fn show_envelope(evpid: u64) -> Result<i32, String> {
    let path = message_dir((evpid >> 32) as u32).join(format!("{evpid:016x}"));
    let env = load(&path)?;
    std::io::stdout()
        .lock()
        .write_all(envelope_text(&env).as_bytes())
        .map_err(|e| format!("write error: {e}"))?;
    Ok(0)
}

/// OpenSMTPD's envelope_dump_buffer() order; empty fields left out.
pub fn envelope_text(e: &Envelope) -> String {
    let kind = match e.kind {
        Kind::Local => "mda",
        Kind::Relay => "mta",
        Kind::Bounce => "bounce",
    };
    let mut flags = Vec::new();
    for (f, name) in [
        (crate::spool::Flags::AUTHENTICATED, "authenticated"),
        (crate::spool::Flags::BOUNCE, "bounce"),
        (crate::spool::Flags::INTERNAL, "internal"),
    ] {
        if e.flags.contains(f) {
            flags.push(name);
        }
    }
    let ret = e.ret.map(|r| match r {
        crate::spool::DsnRet::Full => "FULL",
        crate::spool::DsnRet::Hdrs => "HDRS",
    });
    let fields: Vec<(&str, String)> = vec![
        ("version", "3".into()),
        ("dispatcher", e.action.clone()),
        ("tag", e.tag.clone().unwrap_or_default()),
        ("type", kind.into()),
        ("smtpname", e.hostname.clone()),
        ("helo", e.helo.clone()),
        ("hostname", e.hostname.clone()),
        ("errorline", e.last_error.clone()),
        ("sockaddr", e.client.clone()),
        ("sender", e.sender.clone()),
        ("rcpt", e.rcpt.clone()),
        ("dest", e.dest.clone()),
        ("ctime", e.ctime.to_string()),
        ("last-try", e.last_try.to_string()),
        ("last-bounce", e.last_warn.to_string()),
        ("ttl", e.expire.to_string()),
        ("retry", e.retry.to_string()),
        ("flags", flags.join(",")),
        ("dsn-ret", ret.unwrap_or_default().into()),
        ("dsn-envid", e.envid.clone().unwrap_or_default()),
        ("dsn-orcpt", e.orcpt.clone().unwrap_or_default()),
        ("mda-user", e.user.clone()),
    ];
    let mut out = String::new();
    for (k, v) in fields {
        if !v.is_empty() {
            let v: String = v.chars().filter(|c| !c.is_control()).collect();
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    out
}

/// `show queue [msgid]` while smtpd is not running: every envelope file
/// under queue/, in id order, with the runstate `offline|`.
pub fn show_queue_offline(msgid: Option<u32>) -> Result<i32, String> {
    let queue = PathBuf::from(SPOOL_DIR).join("queue");
    let mut ids = Vec::new();
    let dirs = |p: &std::path::Path| -> Result<Vec<PathBuf>, String> {
        let rd = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(rd.flatten().map(|d| d.path()).collect())
    };
    for bucket in dirs(&queue)? {
        for message in dirs(&bucket).unwrap_or_default() {
            for file in dirs(&message).unwrap_or_default() {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.len() != 16 {
                    continue;
                }
                if let Ok(id) = u64::from_str_radix(name, 16) {
                    if msgid.is_none_or(|m| (id >> 32) as u32 == m) {
                        ids.push((id, file));
                    }
                }
            }
        }
    }
    ids.sort();
    let mut out = std::io::stdout().lock();
    for (id, path) in ids {
        let Ok(e) = load(&path) else { continue };
        if e.id.get() != id {
            continue;
        }
        let entry = QueueEntry {
            sched: Scheduled {
                id,
                state: RunState::Pending { next_try: 0 },
                suspended: false,
            },
            client: e.client,
            kind: e.kind,
            flags: e.flags.bits(),
            sender: e.sender,
            rcpt: e.rcpt,
            dest: e.dest,
            ctime: e.ctime,
            expire: e.expire,
            last_try: e.last_try,
            retry: e.retry,
            last_error: e.last_error,
        };
        let line = super::format::offline_line(&entry) + "\n";
        super::print(&mut out, &line)?;
    }
    Ok(0)
}
