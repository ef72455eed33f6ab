//! Delivery to a command (smtpd.conf `mda "command"`, and `|command`
//! lines of aliases and .forward once expanded), as OpenSMTPD's forkmda
//! and mda_unpriv do it: `/bin/sh -c command` with the message on its
//! standard input, a clean environment carrying the envelope, and the
//! exit status deciding the outcome.
//!
//! The command text comes from the configuration, never from the message
//! or the envelope: those reach the command only as environment values,
//! which the shell does not parse. So an address like `a;reboot@x` or
//! `$(id)@x` is data, not code.
//!
//! Outcomes, as smtpd.c's SIGCHLD handler decides them for an MDA child:
//! - exit 0: delivered, unless the command left before reading all of the
//!   message: then "mda exited prematurely", temporary (mda.c,
//!   IMSG_MDA_DONE);
//! - exit 75 (EX_TEMPFAIL) or 71 (EX_OSERR): temporary;
//! - any other exit status: permanent ("exited abnormally"), the bounce
//!   carrying the command's last line of output;
//! - killed by a signal, or by us at the timeout: temporary (OpenSMTPD's
//!   timeout is alarm(300) in the child, "terminated; timeout").

#![forbid(unsafe_code)]

use super::message::{delivery_headers, extension, Lines};
use super::{Outcome, Recipient};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// _PATH_DEFPATH of glibc, which mda_unpriv.c puts in PATH.
const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// How much of the command's output (stdout and stderr together) we keep:
/// the end of it, where the reason for a failure usually is.
const OUTPUT_KEEP: usize = 4096;

/// The longest error text taken from the output.
const ERROR_MAX: usize = 200;

/// After the command exits, how long to wait for the rest of its output
/// (a background child may keep the pipe open forever).
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// sysexits.h statuses that mean "try again later" to smtpd.c.
const EX_OSERR: i32 = 71;
const EX_TEMPFAIL: i32 = 75;

/// Run `command` with `/bin/sh -c`, as the current (already dropped-to)
/// user, with the message on its standard input; kill its whole process
/// group if it has not finished within `timeout`.
pub fn deliver(r: &Recipient, command: &str, message: &mut dyn Read, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    // %{...} formats become references to the variables below (format.rs).
    let command = match super::format::shell_command(command) {
        Ok(c) => c,
        // A config mistake: kept and retried until the admin fixes it.
        Err(e) => return Outcome::TempFail(format!("mda: {e}")),
    };
    let (mut child, output) = match spawn(r, &command) {
        Ok(x) => x,
        Err(e) => return Outcome::TempFail(format!("cannot run mda: {e}")),
    };
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let watch = watchdog(child, deadline);

    // Written here, not in a thread: the message reader is not Send. The
    // watchdog's kill at the deadline is what unblocks a stuck write.
    let fed = match &mut stdin {
        Some(stdin) => feed(r, stdin, message),
        None => Ok(false),
    };
    if fed.is_err() {
        // The message could not be read: kill the command before closing
        // its input, so it cannot take half a message for a whole one
        // (OpenSMTPD sends IMSG_MDA_KILL, "Error reading body").
        kill_group(pid);
    }
    // Closing stdin: the command sees the end of the message.
    drop(stdin);
    let (status, timed_out) = match watch.join() {
        Ok(x) => x,
        Err(_) => return Outcome::TempFail("mda watchdog failed".into()),
    };
    let out = output.collect();
    let fed = match fed {
        Ok(all) => all,
        Err(e) => return Outcome::TempFail(format!("error reading message: {e}")),
    };
    if timed_out {
        return Outcome::TempFail(with_output("timeout", &out));
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => return Outcome::TempFail(format!("waiting for mda: {e}")),
    };
    judge(status, fed, &out)
}

/// The outcome for how the command ended. `fed`: whether it took all of
/// the message.
fn judge(status: ExitStatus, fed: bool, out: &str) -> Outcome {
    match (status.code(), status.signal()) {
        (Some(0), _) if fed => Outcome::Delivered,
        (Some(0), _) => Outcome::TempFail(with_output("mda exited prematurely", out)),
        (Some(c), _) => {
            let why = match sysexit_name(c) {
                Some(name) => format!("{name}, status {c}"),
                None => format!("exited abnormally, status {c}"),
            };
            let text = with_output(&why, out);
            if c == EX_TEMPFAIL || c == EX_OSERR {
                Outcome::TempFail(text)
            } else {
                Outcome::PermFail(text)
            }
        }
        (None, Some(sig)) => {
            Outcome::TempFail(with_output(&format!("terminated; signal {sig}"), out))
        }
        (None, None) => Outcome::TempFail("mda ended in an unknown way".into()),
    }
}

/// "why" followed by the command's last line of output, quoted, if any.
fn with_output(why: &str, out: &str) -> String {
    if out.is_empty() {
        why.to_string()
    } else {
        format!("{why}: \"{out}\"")
    }
}

/// Start the shell in its own process group, home directory as working
/// directory (or / when that fails, as forkmda does), stdout and stderr
/// into one pipe whose tail we keep.
fn spawn(r: &Recipient, command: &str) -> io::Result<(Child, Output)> {
    let (out_read, out_write) = io::pipe()?;
    let err_write = out_write.try_clone()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env_clear()
        .envs(environment(r))
        .stdin(Stdio::piped())
        .stdout(out_write)
        .stderr(err_write)
        // A group of its own, so the timeout kills whatever it started.
        .process_group(0)
        .current_dir(&r.home);
    // std reports a failed chdir as the spawn's error; we cannot tell it
    // from a missing /bin/sh, so try once more from /, which settles it.
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) if r.home != Path::new("/") => cmd.current_dir("/").spawn()?,
        Err(e) => return Err(e),
    };
    // Our copies of the pipe's write end must go, or it never ends.
    drop(cmd);
    Ok((child, Output::start(out_read)))
}

/// The environment mda_unpriv.c gives an MDA, and nothing else.
fn environment(r: &Recipient) -> Vec<(&'static str, String)> {
    let (local, domain) = split_address(&r.rcpt);
    let mut env = vec![
        ("PATH", DEFAULT_PATH.to_string()),
        ("DOMAIN", domain.to_string()),
        ("HOME", r.home.to_string_lossy().into_owned()),
        // mda_unpriv.c: ORIGINAL_RECIPIENT is the address the client gave,
        // RECIPIENT the one after alias and virtual expansion.
        ("ORIGINAL_RECIPIENT", r.rcpt.clone()),
        ("RECIPIENT", r.dest.clone()),
        ("SHELL", "/bin/sh".to_string()),
        // The local part as given, subaddress included (rcpt.user).
        ("LOCAL", local.to_string()),
        ("LOGNAME", r.user.clone()),
        ("USER", r.user.clone()),
        ("SENDER", r.sender.clone()),
    ];
    if let Some(ext) = extension(&r.dest) {
        env.push(("EXTENSION", ext.to_string()));
    }
    env
}

/// ("user", "domain") of "user@domain"; the domain is empty without '@'.
fn split_address(addr: &str) -> (&str, &str) {
    addr.rsplit_once('@').unwrap_or((addr, ""))
}

/// Write the delivery headers and the message to the command. Ok(true)
/// when all of it went in; Ok(false) when the command stopped reading
/// (EPIPE or any other write error: its exit status will tell); Err
/// only for a failure to read the message itself.
fn feed(r: &Recipient, stdin: &mut ChildStdin, message: &mut dyn Read) -> io::Result<bool> {
    let mut pipe = BufWriter::with_capacity(64 * 1024, stdin);
    if pipe.write_all(delivery_headers(r).as_bytes()).is_err() {
        return Ok(false);
    }
    let mut lines = Lines::new(message);
    let mut line = Vec::new();
    while lines.next_into(&mut line)? {
        if pipe.write_all(&line).is_err() {
            return Ok(false);
        }
    }
    Ok(pipe.flush().is_ok())
}

/// A thread that reaps `child`, killing its process group first if it is
/// still running at `deadline`. Joins to (exit status, killed by us).
fn watchdog(
    mut child: Child,
    deadline: Instant,
) -> thread::JoinHandle<(io::Result<ExitStatus>, bool)> {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    thread::spawn(move || {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(status) => (status, false),
            Err(RecvTimeoutError::Timeout) => {
                kill_group(pid);
                let status = rx
                    .recv()
                    .unwrap_or_else(|_| Err(io::Error::other("reaper thread lost")));
                (status, true)
            }
            Err(RecvTimeoutError::Disconnected) => {
                (Err(io::Error::other("reaper thread lost")), false)
            }
        }
    })
}

/// SIGKILL to the process group the command leads. The group outlives
/// its leader while any member runs; once all are gone the kill fails
/// harmlessly (ESRCH).
fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        let _ = crate::sys::process::kill(-pid, libc::SIGKILL);
    }
}

/// The end of the command's stdout and stderr, read by a thread.
struct Output {
    tail: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Output {
    fn start(mut pipe: io::PipeReader) -> Output {
        let tail = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = mpsc::channel();
        let keep = Arc::clone(&tail);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Read until EOF or an error; either way the output is over.
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                let mut t = keep.lock().unwrap_or_else(|p| p.into_inner());
                t.extend_from_slice(&buf[..n]);
                if t.len() > OUTPUT_KEEP {
                    let excess = t.len() - OUTPUT_KEEP;
                    t.drain(..excess);
                }
            }
            let _ = tx.send(());
        });
        Output { tail, done }
    }

    /// Wait a little for the output to end (the command has exited),
    /// then return its last non-empty line, made printable.
    fn collect(self) -> String {
        let _ = self.done.recv_timeout(OUTPUT_GRACE);
        let t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        last_line(&t)
    }
}

/// The last non-empty line of `out`, with control and non-ASCII bytes
/// escaped (like strnvis in mda_getlastline) and at most ERROR_MAX long.
fn last_line(out: &[u8]) -> String {
    let line = out
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .rfind(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or(b"");
    let mut s = String::new();
    for &b in line {
        if s.len() >= ERROR_MAX {
            break;
        }
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(char::from(b));
            }
            0x20..=0x7e => s.push(char::from(b)),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}

/// The meaning of a sysexits.h status, as mda.c's mda_sysexit_to_str.
fn sysexit_name(code: i32) -> Option<&'static str> {
    Some(match code {
        64 => "command line usage error",
        65 => "data format error",
        66 => "cannot open input",
        67 => "user unknown",
        68 => "host name unknown",
        69 => "service unavailable",
        70 => "internal software error",
        71 => "system resource problem",
        72 => "critical OS file missing",
        73 => "can't create user output file",
        74 => "input/output error",
        75 => "temporary failure",
        76 => "remote error in protocol",
        77 => "permission denied",
        78 => "local configuration error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::testutil::{recipient, Scratch};
    use std::fs;

    const LONG: Duration = Duration::from_secs(20);

    fn run(r: &Recipient, command: &str, msg: &[u8], timeout: Duration) -> Outcome {
        let mut m = msg;
        deliver(r, command, &mut m, timeout)
    }

    /// The NAME=value lines of an `env` dump, sorted.
    fn env_lines(path: &Path) -> Vec<String> {
        let text = fs::read_to_string(path).expect("read env");
        let mut v: Vec<String> = text.lines().map(str::to_string).collect();
        v.sort();
        v
    }

    #[test]
    fn environment_is_the_envelope_and_nothing_else() {
        let s = Scratch::new("mda-env");
        let r = recipient(s.path(), "alice@example.com");
        let dump = s.path().join("env");
        let cmd = format!("cat >/dev/null; env > '{}'", dump.display());
        assert_eq!(run(&r, &cmd, b"x\r\n", LONG), Outcome::Delivered);
        let home = s.path().display().to_string();
        let mut want = vec![
            "DOMAIN=example.org".to_string(),
            "EXTENSION=lists".into(),
            format!("HOME={home}"),
            "LOCAL=bob+lists".into(),
            "LOGNAME=bob".into(),
            "ORIGINAL_RECIPIENT=bob+lists@example.org".into(),
            "PATH=/usr/bin:/bin".into(),
            "RECIPIENT=bob+lists@example.org".into(),
            "SENDER=alice@example.com".into(),
            "SHELL=/bin/sh".into(),
            "USER=bob".into(),
        ];
        want.sort();
        // What the shell itself adds (dash: PWD; bash: also SHLVL, _).
        let got: Vec<String> = env_lines(&dump)
            .into_iter()
            .filter(|l| {
                !["PWD=", "SHLVL=", "_=", "OLDPWD="]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .collect();
        assert_eq!(got, want);
        // It ran in the home directory.
        let pwd = env_lines(&dump).into_iter().find(|l| l.starts_with("PWD="));
        assert_eq!(pwd, Some(format!("PWD={home}")));
    }

    #[test]
    fn bounce_has_empty_sender_and_no_extension() {
        let s = Scratch::new("mda-bounce");
        let mut r = recipient(s.path(), "");
        r.dest = "bob@example.org".into();
        let dump = s.path().join("env");
        let cmd = format!("cat >/dev/null; env > '{}'", dump.display());
        assert_eq!(run(&r, &cmd, b"x\r\n", LONG), Outcome::Delivered);
        let env = env_lines(&dump);
        assert!(env.contains(&"SENDER=".to_string()), "{env:?}");
        assert!(!env.iter().any(|l| l.starts_with("EXTENSION=")), "{env:?}");
    }

    #[test]
    fn message_arrives_with_lf_and_headers() {
        let s = Scratch::new("mda-msg");
        let r = recipient(s.path(), "alice@example.com");
        let out = s.path().join("msg");
        let cmd = format!("cat > '{}'", out.display());
        assert_eq!(
            run(&r, &cmd, b"Subject: x\r\n\r\nbody\r\n", LONG),
            Outcome::Delivered
        );
        assert_eq!(
            fs::read(&out).expect("read"),
            b"Return-Path: <alice@example.com>\nDelivered-To: bob+lists@example.org\nSubject: x\n\nbody\n"
        );
    }

    #[test]
    fn metacharacters_in_addresses_stay_data() {
        let s = Scratch::new("mda-meta");
        let marker = s.path().join("pwned");
        let mut r = recipient(
            s.path(),
            &format!("$(touch {})@evil.example", marker.display()),
        );
        r.rcpt = format!("a;touch {}@example.com", marker.display());
        r.dest = format!("`touch {}`+x@example.com", marker.display());
        let dump = s.path().join("env");
        // The kind of command a config has: it uses the variables, quoted.
        let cmd = format!(
            "cat >/dev/null; printf '%s\\n' \"$SENDER\" \"$RECIPIENT\" \"$LOCAL\" > '{}'",
            dump.display()
        );
        assert_eq!(run(&r, &cmd, b"x\r\n", LONG), Outcome::Delivered);
        assert!(!marker.exists(), "something was executed");
        let text = fs::read_to_string(&dump).expect("read");
        assert!(text.contains("$(touch "), "{text}");
        assert!(text.contains("a;touch "), "{text}");
    }

    #[test]
    fn exit_75_is_temporary() {
        let s = Scratch::new("mda-75");
        let r = recipient(s.path(), "a@example.com");
        let got = run(
            &r,
            "cat >/dev/null; echo 'mailbox busy' >&2; exit 75",
            b"x\r\n",
            LONG,
        );
        assert_eq!(
            got,
            Outcome::TempFail("temporary failure, status 75: \"mailbox busy\"".into())
        );
        assert!(matches!(
            run(&r, "exit 71", b"", LONG),
            Outcome::TempFail(_)
        ));
    }

    #[test]
    fn exit_1_is_permanent() {
        let s = Scratch::new("mda-1");
        let r = recipient(s.path(), "a@example.com");
        let got = run(
            &r,
            "cat >/dev/null; echo no such folder; exit 1",
            b"x\r\n",
            LONG,
        );
        assert_eq!(
            got,
            Outcome::PermFail("exited abnormally, status 1: \"no such folder\"".into())
        );
        let got = run(&r, "exit 67", b"", LONG);
        assert_eq!(got, Outcome::PermFail("user unknown, status 67".into()));
    }

    #[test]
    fn early_exit_zero_is_premature() {
        let s = Scratch::new("mda-early");
        let r = recipient(s.path(), "a@example.com");
        // 1 MiB, far more than a pipe holds, to a command that reads none.
        let big = vec![b'a'; 1 << 20];
        let got = run(&r, "exit 0", &big, LONG);
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("prematurely")),
            "{got:?}"
        );
        // Exiting early with a failure status: the status decides.
        let got = run(&r, "exit 3", &big, LONG);
        assert!(matches!(got, Outcome::PermFail(_)), "{got:?}");
    }

    #[test]
    fn sleeper_is_killed_at_the_timeout() {
        let s = Scratch::new("mda-sleep");
        let r = recipient(s.path(), "a@example.com");
        let t0 = Instant::now();
        // The shell and its child both go: the group is killed.
        let got = run(
            &r,
            "sleep 1000 & sleep 1000",
            b"x\r\n",
            Duration::from_millis(500),
        );
        let took = t0.elapsed();
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.starts_with("timeout")),
            "{got:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn sleeper_not_reading_a_big_message_is_killed() {
        let s = Scratch::new("mda-stuck");
        let r = recipient(s.path(), "a@example.com");
        let big = vec![b'a'; 1 << 20];
        let t0 = Instant::now();
        let got = run(&r, "sleep 1000", &big, Duration::from_millis(500));
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.starts_with("timeout")),
            "{got:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    /// A spool read that fails after the first chunk.
    struct Broken(bool);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.0, true) {
                return Err(io::Error::other("spool gone"));
            }
            buf[..3].copy_from_slice(b"a\r\n");
            Ok(3)
        }
    }

    #[test]
    fn unreadable_message_kills_the_command() {
        let s = Scratch::new("mda-broken");
        let r = recipient(s.path(), "a@example.com");
        let marker = s.path().join("delivered");
        // Would "deliver" on end of input; it must be killed before that.
        let cmd = format!("cat >/dev/null; touch '{}'", marker.display());
        let got = deliver(&r, &cmd, &mut Broken(false), LONG);
        assert!(
            matches!(&got, Outcome::TempFail(m) if m.contains("spool gone")),
            "{got:?}"
        );
        assert!(!marker.exists());
    }

    #[test]
    fn missing_home_runs_in_root() {
        let s = Scratch::new("mda-nohome");
        let mut r = recipient(s.path(), "a@example.com");
        r.home = s.path().join("gone");
        let out = s.path().join("pwd");
        let cmd = format!("cat >/dev/null; pwd > '{}'", out.display());
        assert_eq!(run(&r, &cmd, b"x\r\n", LONG), Outcome::Delivered);
        assert_eq!(fs::read_to_string(&out).expect("read").trim(), "/");
    }

    #[test]
    fn last_line_is_clean() {
        assert_eq!(last_line(b"one\ntwo\n\n"), "two");
        assert_eq!(last_line(b"a\x1b[31m\"q\"\r\n"), "a\\033[31m\\\"q\\\"");
        assert_eq!(last_line(b""), "");
        assert_eq!(last_line(&[b'x'; 1000]).len(), ERROR_MAX);
    }
}
