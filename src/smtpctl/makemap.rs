//! `newaliases` and `makemap`. Our daemon reads `file:` tables itself
//! and has no `db:` backend yet, so neither writes a database: both read
//! the file as lka does (table(5) with `Table::parse_file`, each alias
//! value with `aliases::parse_value`) and report what lka would refuse,
//! with line numbers, as OpenSMTPD's makemap does. newaliases then says
//! `N aliases` (there is nothing to rebuild: lka reads the file when
//! smtpd starts); makemap says that db output is not supported yet.

use crate::lka::{aliases, table::Table};

const DEFAULT_CONFIG: &str = "/etc/mail/smtpd.conf";
const DEFAULT_ALIASES: &str = "/etc/mail/aliases";

/// newaliases [-f config]: check the `aliases` table the config names
/// (or /etc/mail/aliases).
pub fn newaliases(argv: &[String]) -> i32 {
    let mut conf = DEFAULT_CONFIG.to_string();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.len()) {
            ("-f", n) if n > 0 => conf = it.next().cloned().unwrap_or_default(),
            (f, _) if f.starts_with("-f") && f.len() > 2 => conf = f[2..].to_string(),
            // sendmail -bi reaches here with sendmail's own flags, which
            // OpenSMTPD's makemap ignores too.
            ("-bi" | "-h", _) => {}
            (f, _) if f.starts_with("-o") || f.starts_with("-O") => {}
            _ => {
                eprintln!("usage: newaliases [-f file]");
                return 1;
            }
        }
    }
    let source = match aliases_path(&conf) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("newaliases: {e}");
            return 1;
        }
    };
    match check(&source, true) {
        Ok(n) => {
            println!("{source}: {n} aliases");
            0
        }
        Err(errors) => {
            for e in errors {
                eprintln!("newaliases: {e}");
            }
            1
        }
    }
}

/// The path of the config's `aliases` table, as OpenSMTPD's
/// conf_aliases(): a `db:` path loses its `.db`, to name its source.
fn aliases_path(conf: &str) -> Result<String, String> {
    let loaded = crate::config::load(conf, &[]).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let t = loaded.config.tables.iter().find(|t| t.name == "aliases");
    Ok(match t.map(|t| &t.source) {
        Some(crate::config::ast::TableSource::Backend { path, .. }) => {
            path.strip_suffix(".db").unwrap_or(path).to_string()
        }
        _ => DEFAULT_ALIASES.to_string(),
    })
}

/// makemap [-t aliases|set] [-d hash|btree] [-o dbfile] [-U] file.
pub fn makemap(argv: &[String]) -> i32 {
    let usage = || {
        eprintln!("usage: makemap [-U] [-d dbtype] [-o dbfile] [-t type] file");
        1
    };
    let mut is_aliases = false;
    let mut dump = false;
    let mut output = None;
    let mut files = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-U" => dump = true,
            "-t" | "-d" | "-o" | "-C" | "-O" => {
                let Some(v) = it.next() else { return usage() };
                match (a.as_str(), v.as_str()) {
                    ("-t", "aliases") => is_aliases = true,
                    ("-t", "set") => {}
                    ("-t", other) => {
                        eprintln!("makemap: unsupported type '{other}'");
                        return 1;
                    }
                    ("-d", "hash" | "btree") => {}
                    ("-d", other) => {
                        eprintln!("makemap: unsupported DB type '{other}'");
                        return 1;
                    }
                    ("-o", v) => output = Some(v.to_string()),
                    _ => {}
                }
            }
            f if f.starts_with('-') && f != "-" => return usage(),
            f => files.push(f.to_string()),
        }
    }
    let [source] = files.as_slice() else {
        return usage();
    };
    if dump {
        eprintln!("makemap: -U: db files are not supported yet");
        return 1;
    }
    if let Err(errors) = check(source, is_aliases) {
        for e in errors {
            eprintln!("makemap: {e}");
        }
        return 1;
    }
    let output = output.unwrap_or_else(|| format!("{source}.db"));
    eprintln!(
        "makemap: {output}: db output is not supported yet; {source} is valid and can be used as is: table <name> file:{source}"
    );
    1
}

/// Read `path` as lka would; Ok is the number of entries, Err every
/// problem found, each with the file and line.
pub fn check(path: &str, is_aliases: bool) -> Result<usize, Vec<String>> {
    let bytes = read(path).map_err(|e| vec![e])?;
    let table = Table::parse_file("aliases", path, &bytes).map_err(|e| vec![e.to_string()])?;
    // parse_file checked the bytes are UTF-8.
    let text = String::from_utf8_lossy(&bytes);
    let mut errors = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.split('\n').enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (key, value) = l.split_at(l.find([' ', '\t', ':']).unwrap_or(l.len()));
        let value = value.trim_start_matches(':').trim();
        if !seen.insert(key.to_lowercase()) {
            errors.push(format!("{path}:{}: duplicate entry for {key}", n + 1));
        }
        if is_aliases {
            match aliases::parse_value(value) {
                Ok(items) if items.is_empty() => {
                    errors.push(format!("{path}:{}: invalid entry", n + 1));
                }
                Ok(_) => {}
                Err(e) => errors.push(format!("{path}:{}: invalid entry: {e}", n + 1)),
            }
        }
    }
    if errors.is_empty() {
        Ok(table.len())
    } else {
        Err(errors)
    }
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(crate::lka::table::MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with `text`, removed when dropped.
    struct TempFile(String);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> TempFile {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("makemap-{}-{n}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        TempFile(p.to_string_lossy().into_owned())
    }

    #[test]
    fn good_aliases_are_counted() {
        let f = file(
            "# comment\nroot: alice\npostmaster: root\nlist: a, b@example.org, \"|/bin/cat\"\n",
        );
        assert_eq!(check(&f.0, true), Ok(3));
    }

    #[test]
    fn bad_aliases_name_their_line() {
        let f = file("root: alice\nroot: bob\nbad: error:999 no\n");
        let errs = check(&f.0, true).unwrap_err();
        assert!(
            errs[0].ends_with(":2: duplicate entry for root"),
            "{errs:?}"
        );
        assert!(errs[1].contains(":3: invalid entry"), "{errs:?}");
        let f = file("root alice\nnovalue:\n");
        let errs = check(&f.0, true).unwrap_err();
        assert!(errs[0].contains(":2:"), "{errs:?}");
    }
}
