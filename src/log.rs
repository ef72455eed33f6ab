//! Log lines as OpenSMTPD writes them: "info: ...", "warn: ...", with
//! `key=value` fields, to syslog (facility mail) or, with -d, to stderr.
//!
//! Peer-supplied text must go through `escape` before it reaches a line
//! (A15); as a last defence the logger itself escapes control characters in
//! the whole line, so no message can ever span two lines.

#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Where lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stderr,
    Syslog,
}

enum Sink {
    Stderr,
    Syslog(syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>),
}

struct Logger {
    sink: Mutex<Sink>,
}

/// -v, or `smtpctl log verbose` since: debug lines are written too.
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turn debug lines on or off at run time (`smtpctl log brief|verbose`).
pub fn set_verbose(on: bool) {
    VERBOSE.store(on, Ordering::Relaxed);
    log::set_max_level(if on {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    });
}

/// Install the logger. Syslog's socket is opened now, before any chroot or
/// sandbox, and kept; if there is no syslog daemon, lines go to stderr.
pub fn init(target: Target, verbose: bool, process: &str) {
    let sink = match target {
        Target::Stderr => Sink::Stderr,
        Target::Syslog => {
            let f = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_MAIL,
                hostname: None,
                process: process.to_string(),
                pid: std::process::id(),
            };
            match syslog::unix(f) {
                Ok(l) => Sink::Syslog(l),
                Err(_) => Sink::Stderr,
            }
        }
    };
    if log::set_boxed_logger(Box::new(Logger {
        sink: Mutex::new(sink),
    }))
    .is_ok()
    {
        set_verbose(verbose);
    }
}

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info || VERBOSE.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = sanitize(&record.args().to_string());
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        match &mut *sink {
            Sink::Stderr => {
                // One write(2) per line: seven processes share this stderr,
                // and a line written in pieces can be split by another's.
                let mut whole = line;
                whole.push('\n');
                let _ = std::io::stderr().lock().write_all(whole.as_bytes());
            }
            Sink::Syslog(l) => {
                let _ = match record.level() {
                    log::Level::Error => l.crit(&line),
                    log::Level::Warn => l.warning(&line),
                    log::Level::Info => l.info(&line),
                    _ => l.debug(&line),
                };
            }
        }
    }

    fn flush(&self) {}
}

/// Replace control characters (CR, LF, NUL, ...) so a line stays one line.
fn sanitize(s: &str) -> String {
    if !s.chars().any(|c| c.is_control()) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Escape bytes from a peer for a log line or a `key=value` field: printable
/// ASCII other than backslash and double quote stays; everything else is
/// `\xNN` (so the result is ASCII, one line, and unambiguous).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Log a fatal error with OpenSMTPD's "fatal:" prefix and exit non-zero.
/// For broken invariants of our own; a bad peer is an error, not fatal.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {{
        ::log::error!("fatal: {}", format_args!($($arg)*));
        ::std::process::exit(1)
    }};
}

/// OpenSMTPD's duration_to_text: "1d2h3m4s", zero parts left out.
pub fn duration_text(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, part) in [
        ("d", secs / 86400),
        ("h", (secs % 86400) / 3600),
        ("m", (secs % 3600) / 60),
        ("s", secs % 60),
    ] {
        if part != 0 {
            out.push_str(&format!("{part}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_one_line() {
        assert_eq!(escape(b"a b"), "a b");
        assert_eq!(escape(b"x\r\nwarn: forged"), "x\\x0d\\x0awarn: forged");
        assert_eq!(escape(b"\\\"\0\xff"), "\\x5c\\x22\\x00\\xff");
    }

    #[test]
    fn sanitize_removes_line_breaks() {
        assert_eq!(sanitize("a\nb"), "a\\x0ab");
        assert_eq!(sanitize("plain"), "plain");
    }

    #[test]
    fn durations_as_opensmtpd_prints_them() {
        assert_eq!(duration_text(0), "0s");
        assert_eq!(duration_text(59), "59s");
        assert_eq!(duration_text(60), "1m");
        assert_eq!(duration_text(3661), "1h1m1s");
        assert_eq!(duration_text(2 * 86400 + 5), "2d5s");
    }
}
