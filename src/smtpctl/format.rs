//! smtpctl's output, in OpenSMTPD's formats: scripts parse these lines.

use crate::ipc::ctl::{QueueEntry, RunState};
use crate::spool::{Flags, Kind};

/// One `show queue` line (OpenSMTPD's show_queue_envelope()):
/// `evpid|src|agent|flags|sender|rcpt|dest|ctime|expire|lasttry|retry|runstate|error`,
/// where runstate is `pending|<seconds to next try>` or
/// `inflight|<seconds since the last try>`.
pub fn queue_line(e: &QueueEntry, now: u64) -> String {
    let runstate = match e.sched.state {
        RunState::Pending { next_try } => format!("pending|{}", signed(next_try, now)),
        RunState::InFlight => format!("inflight|{}", signed(now, e.last_try)),
    };
    line(e, &runstate)
}

/// A `show queue` line read from the spool with the daemon stopped:
/// OpenSMTPD's runstate `offline|`.
pub fn offline_line(e: &QueueEntry) -> String {
    line(e, "offline|")
}

fn line(e: &QueueEntry, runstate: &str) -> String {
    let mut status = Vec::new();
    let flags = Flags::from_bits(e.flags).unwrap_or_default();
    if flags.contains(Flags::BOUNCE) {
        status.push("bounce");
    }
    if flags.contains(Flags::AUTHENTICATED) {
        status.push("auth");
    }
    if flags.contains(Flags::INTERNAL) {
        status.push("internal");
    }
    if e.sched.suspended {
        status.push("suspend");
    }
    let agent = match e.kind {
        Kind::Local => "mda",
        Kind::Relay => "mta",
        Kind::Bounce => "bounce",
    };
    let src = match e.client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => "inet4",
        Ok(std::net::IpAddr::V6(_)) => "inet6",
        Err(_) if e.client == "local" => "local",
        Err(_) => "?",
    };
    format!(
        "{:016x}|{src}|{agent}|{}|{}|{}|{}|{}|{}|{}|{}|{runstate}|{}",
        e.sched.id,
        status.join(","),
        address(&e.sender),
        address(&e.rcpt),
        address(&e.dest),
        e.ctime,
        e.ctime.saturating_add(e.expire),
        e.last_try,
        e.retry,
        visible(&e.last_error),
    )
}

/// `a - b` as OpenSMTPD's `%zd` of a time difference.
fn signed(a: u64, b: u64) -> i128 {
    i128::from(a) - i128::from(b)
}

/// `user@domain`; OpenSMTPD prints the null sender as `@`.
fn address(a: &str) -> String {
    if a.is_empty() {
        "@".into()
    } else {
        visible(a)
    }
}

/// Text from the daemon, made printable for the terminal (strnvis):
/// the spool keeps it printable already; this is the last guard.
fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\{:03o}", u32::from(c) & 0xff));
        } else {
            out.push(c);
        }
    }
    out
}

/// OpenSMTPD's duration_to_text(): "1d2h3m4s", zero parts left out.
pub fn duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (v, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if v != 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out
}

/// `show stats`: `name=value` lines; uptime also as `uptime.human`.
pub fn stats(stats: &[(String, u64)]) -> String {
    let mut out = String::new();
    for (k, v) in stats {
        out.push_str(&format!("{}={v}\n", visible(k)));
        if k == "uptime" {
            out.push_str(&format!("uptime.human={}\n", duration(*v)));
        }
    }
    out
}

/// `show status`.
pub fn status(mda: bool, mta: bool, smtp: bool) -> String {
    let s = |p: bool| if p { "paused" } else { "running" };
    format!("MDA {}\nMTA {}\nSMTP {}\n", s(mda), s(mta), s(smtp))
}

/// "N envelope(s) scheduled": OpenSMTPD's plural (`ok > 1`), kept as is.
pub fn count(n: u64, what: &str) -> String {
    format!("{n} envelope{} {what}\n", if n > 1 { "s" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::ctl::Scheduled;

    #[test]
    fn a_queue_line_as_opensmtpd_prints_it() {
        let e = QueueEntry {
            sched: Scheduled {
                id: 0x1234abcd00000001,
                state: RunState::Pending {
                    next_try: 1_000_100,
                },
                suspended: true,
            },
            client: "127.0.0.1".into(),
            kind: Kind::Local,
            flags: Flags::AUTHENTICATED.bits(),
            sender: String::new(),
            rcpt: "bob@example.org".into(),
            dest: "bob@example.org".into(),
            ctime: 1_000_000,
            expire: 345_600,
            last_try: 0,
            retry: 0,
            last_error: "no\nway".into(),
        };
        assert_eq!(
            queue_line(&e, 1_000_040),
            "1234abcd00000001|inet4|mda|auth,suspend|@|bob@example.org|bob@example.org|\
             1000000|1345600|0|0|pending|60|no\\012way"
        );
    }

    #[test]
    fn durations_counts_status() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(90061), "1d1h1m1s");
        assert_eq!(duration(3600), "1h");
        assert_eq!(count(0, "removed"), "0 envelope removed\n");
        assert_eq!(count(2, "scheduled"), "2 envelopes scheduled\n");
        assert_eq!(
            status(true, false, false),
            "MDA paused\nMTA running\nSMTP running\n"
        );
        assert_eq!(
            stats(&[("uptime".into(), 61)]),
            "uptime=61\nuptime.human=1m1s\n"
        );
    }
}
