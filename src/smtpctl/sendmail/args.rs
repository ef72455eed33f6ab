//! sendmail's command line, as OpenSMTPD's enqueue reads it (getopt
//! `A:B:b:E::e:F:f:iJ::L:mN:o:p:qr:R:StvV:x`): the flags it acts on, and
//! sendmail's others accepted and ignored, so programs that pass them
//! keep working.

/// What the flags ask for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    /// `-f` / `-r`: the envelope sender.
    pub from: Option<String>,
    /// `-F`: the full name in an added From:.
    pub fullname: Option<String>,
    /// `-t`: recipients from To:, Cc: and Bcc: too.
    pub tflag: bool,
    /// `-i`, `-oi`: a line with a lone dot does not end the message.
    pub ignore_dots: bool,
    /// `-v`: show the SMTP dialogue.
    pub verbose: bool,
    /// `-S`: rerun of an offline message (no getlogin, as OpenSMTPD's).
    pub offline_rerun: bool,
    /// `-b` mode: `s` (SMTP on stdin/stdout), `p` (mailq), `i`
    /// (newaliases); None or `m` for the usual delivery.
    pub mode: Option<char>,
    /// `-N`, `-R`, `-V`: DSN NOTIFY, RET, ENVID.
    pub notify: Option<String>,
    pub ret: Option<String>,
    pub envid: Option<String>,
    /// `-q`: sendmail's queue run, which OpenSMTPD refuses.
    pub queue_run: bool,
    pub rcpts: Vec<String>,
}

/// Flags that take an argument (attached or the next word).
const WITH_ARG: &str = "ABbeFfLNopRrV";
/// Flags whose argument may only be attached.
const OPTIONAL_ARG: &str = "EJ";
const PLAIN: &str = "imqStvx";

/// Parse `argv` without its program name. Err is the usage text's cause.
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let w = &argv[i];
        if w == "--" {
            i += 1;
            break;
        }
        if !w.starts_with('-') || w == "-" {
            break;
        }
        let chars: Vec<char> = w[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            if WITH_ARG.contains(c) {
                let rest: String = chars[j..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    argv.get(i)
                        .cloned()
                        .ok_or_else(|| format!("option requires an argument -- {c}"))?
                };
                a.apply(c, Some(val));
                break;
            } else if OPTIONAL_ARG.contains(c) {
                break;
            } else if PLAIN.contains(c) {
                a.apply(c, None);
            } else {
                return Err(format!("unknown option -- {c}"));
            }
        }
        i += 1;
    }
    a.rcpts = argv[i.min(argv.len())..].to_vec();
    Ok(a)
}

impl Args {
    fn apply(&mut self, c: char, val: Option<String>) {
        match (c, val) {
            ('f' | 'r', v) => self.from = v,
            ('F', v) => self.fullname = v,
            ('N', v) => self.notify = v,
            ('R', v) => self.ret = v,
            ('V', v) => self.envid = v,
            ('b', Some(v)) => self.mode = v.chars().next(),
            // sendmail's -oi (and -oi with a value: -oitrue).
            ('o', Some(v)) if v.starts_with('i') => self.ignore_dots = true,
            ('i', _) => self.ignore_dots = true,
            ('t', _) => self.tflag = true,
            ('v', _) => self.verbose = true,
            ('S', _) => self.offline_rerun = true,
            ('q', _) => self.queue_run = true,
            // -A -B -e -L -m -o... -p -x: sendmail's, ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(words: &[&str]) -> Args {
        parse(&words.iter().map(|w| w.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn flags_as_programs_pass_them() {
        let a = p(&["-t", "-oi", "-f", "me@x", "-FMe Myself"]);
        assert!(a.tflag && a.ignore_dots);
        assert_eq!(a.from.as_deref(), Some("me@x"));
        assert_eq!(a.fullname.as_deref(), Some("Me Myself"));
        assert!(a.rcpts.is_empty());
        let a = p(&["-ti", "-oem", "-odb", "bob", "carol@y"]);
        assert!(a.tflag && a.ignore_dots);
        assert_eq!(a.rcpts, vec!["bob", "carol@y"]);
        assert_eq!(p(&["-bs"]).mode, Some('s'));
        assert_eq!(p(&["-b", "p"]).mode, Some('p'));
        assert_eq!(p(&["-rfoo", "--", "-x"]).rcpts, vec!["-x"]);
        assert!(!p(&["-oQ/tmp", "a"]).ignore_dots);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(&["-Z".to_string()]).is_err());
        assert!(parse(&["-f".to_string()]).is_err());
    }
}
