//! smtpctl(8): the administrator's tool. Each command is parsed as
//! OpenSMTPD's parser.c does (`parse`), sent to the control role on
//! /var/run/smtpd.sock (`conn`), and its answer printed in OpenSMTPD's
//! formats (`format`), with its exit status: 0 on success, 1 on failure
//! or when smtpd is not running, 255 for a command it does not know.
//!
//! For what goes through the daemon, smtpctl checks nothing about its
//! user itself: control refuses anyone but root (it asks the kernel who
//! connected), and smtpctl says so as OpenSMTPD's does. What smtpctl
//! reads from the spool itself (`show envelope|message`, `show queue`
//! with the daemon stopped) it refuses to non-root users first.

#![forbid(unsafe_code)]

pub mod conn;
pub mod format;
pub mod makemap;
pub mod parse;
pub mod sendmail;
pub mod spool;

use crate::ipc::ctl::{Agent, EnvelopeOp, Reply, Request, Target};
use conn::Conn;
use parse::{Command, Param};
use std::io::Write;

/// Run a parsed command (all but `encrypt`); returns the exit status.
pub fn run(cmd: &Command) -> i32 {
    match execute(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smtpctl: {e}");
            1
        }
    }
}

/// Run the command these words spell (`sendmail -bp`: show queue).
pub fn run_words(words: &[&str]) -> i32 {
    let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    match parse::parse(&args) {
        Ok(cmd) => run(&cmd),
        Err(text) => {
            eprint!("{text}");
            255
        }
    }
}

fn execute(cmd: &Command) -> Result<i32, String> {
    let target = || match cmd.params.first() {
        Some(Param::EvpId(id)) => Target::Envelope(*id),
        Some(Param::MsgId(m)) => Target::Message(*m),
        _ => Target::All,
    };
    let words: Vec<&str> = cmd.pattern.split(' ').collect();
    let request = match words.as_slice() {
        ["show", "queue", ..] => Request::ShowQueue {
            msgid: match cmd.params.first() {
                Some(Param::MsgId(m)) => Some(*m),
                _ => None,
            },
        },
        ["show", "stats"] => Request::ShowStats,
        ["show", "status"] => Request::ShowStatus,
        ["pause", "envelope", ..] => Request::Envelopes {
            op: EnvelopeOp::Pause,
            target: target(),
        },
        ["resume", "envelope", ..] => Request::Envelopes {
            op: EnvelopeOp::Resume,
            target: target(),
        },
        [verb @ ("pause" | "resume"), agent] => {
            let agent = match *agent {
                "mda" => Agent::Mda,
                "mta" => Agent::Mta,
                _ => Agent::Smtp,
            };
            if *verb == "pause" {
                Request::Pause(agent)
            } else {
                Request::Resume(agent)
            }
        }
        ["schedule", ..] => Request::Envelopes {
            op: EnvelopeOp::Schedule,
            target: target(),
        },
        ["remove", ..] => Request::Envelopes {
            op: EnvelopeOp::Remove,
            target: target(),
        },
        ["log", level] => Request::Log {
            verbose: *level == "verbose",
        },
        ["stop"] => Request::Stop,
        ["monitor"] => return monitor(),
        ["show", "envelope" | "message", _] if crate::sys::process::geteuid() != 0 => {
            return Err("need root privileges".into())
        }
        ["show", "envelope", _] => match cmd.params.first() {
            Some(Param::EvpId(id)) => return spool::show_envelope(*id),
            _ => return Err("unable to retrieve envelope".into()),
        },
        ["show", "message", _] => match cmd.params.first() {
            Some(Param::EvpId(id)) => return spool::show_message((*id >> 32) as u32),
            Some(Param::MsgId(m)) => return spool::show_message(*m),
            _ => return Err("unable to retrieve message".into()),
        },
        _ => Request::Unsupported {
            command: words.join(" "),
        },
    };
    let Some(mut conn) = Conn::open() else {
        // As OpenSMTPD's: the queue can still be read from the spool.
        if let Request::ShowQueue { msgid } = request {
            if crate::sys::process::geteuid() != 0 {
                return Err("need root privileges".into());
            }
            return spool::show_queue_offline(msgid);
        }
        return Err("smtpd doesn't seem to be running".into());
    };
    conn.send(&request)?;
    let mut out = std::io::stdout().lock();
    let now = crate::spool::unix_now();
    loop {
        let text = match conn.recv()? {
            Reply::Denied => return Err("need root privileges".into()),
            Reply::Ok => "command succeeded\n".to_string(),
            Reply::Fail(None) => {
                print(&mut out, "command failed\n")?;
                return Ok(1);
            }
            Reply::Fail(Some(why)) => {
                print(&mut out, &format!("command failed: {why}\n"))?;
                return Ok(1);
            }
            Reply::Queue(entries) => {
                let mut s = String::new();
                for e in &entries {
                    s.push_str(&format::queue_line(e, now));
                    s.push('\n');
                }
                print(&mut out, &s)?;
                continue;
            }
            Reply::End => return Ok(0),
            Reply::Session => return Err("bad message type".into()),
            Reply::Stats(stats) => format::stats(&stats),
            Reply::Status {
                mda_paused,
                mta_paused,
                smtp_paused,
            } => format::status(mda_paused, mta_paused, smtp_paused),
            Reply::Count(n) => {
                let what = match request {
                    Request::Envelopes { op, .. } => match op {
                        EnvelopeOp::Schedule => "scheduled",
                        EnvelopeOp::Remove => "removed",
                        EnvelopeOp::Pause => "paused",
                        EnvelopeOp::Resume => "resumed",
                    },
                    _ => return Err("bad message type".into()),
                };
                format::count(n, what)
            }
        };
        print(&mut out, &text)?;
        return Ok(0);
    }
}

fn print(out: &mut impl Write, s: &str) -> Result<(), String> {
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // `mailq | head`: the reader has all it wanted. OpenSMTPD's
        // smtpctl dies of SIGPIPE there; quietly, so do we.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(1),
        Err(e) => Err(format!("write error: {e}")),
    }
}

/// `smtpctl monitor`: once a second, the counters that changed, until
/// interrupted. Our daemon keeps fewer counters than OpenSMTPD's digest:
/// sessions and envelopes.
fn monitor() -> Result<i32, String> {
    let mut conn = Conn::open().ok_or("smtpd doesn't seem to be running")?;
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let stats = match conn.ask(&Request::Digest)? {
            Reply::Stats(s) => s,
            Reply::Denied => return Err("need root privileges".into()),
            _ => return Err("bad message type".into()),
        };
        let get = |k: &str| stats.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
        if n % 25 == 0 {
            if n != 0 {
                print(&mut out, "\n")?;
            }
            print(
                &mut out,
                "-- client -- -- envelope --\nsmtp ctl     curr inflight\n",
            )?;
        }
        let line = format!(
            "{:4} {:4}     {:4} {:8}\n",
            get("smtp.session"),
            get("control.session"),
            get("scheduler.envelope"),
            get("scheduler.envelope.inflight")
        );
        print(&mut out, &line)?;
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(0)
}
