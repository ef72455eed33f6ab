//! SMTP AUTH against a listener's credentials table, as OpenSMTPD's
//! `lka_authenticate()` does it: look the user up (lower-cased, exact key),
//! then check the password against the stored crypt(3) hash.
//!
//! Hash formats accepted, the ones `smtpctl encrypt` writes on OpenBSD
//! (bcrypt) and on Debian (SHA-crypt):
//! - `$2a$`, `$2b$`, `$2y$`: bcrypt (the `bcrypt` crate; passwords are cut at
//!   72 bytes as OpenBSD's bcrypt cuts them);
//! - `$5$`, `$6$`: SHA-256-crypt and SHA-512-crypt (RustCrypto's
//!   `sha-crypt`), with or without `rounds=N` (1000 to 999999999).
//!
//! Refused, so the user can never log in with them (fail closed, A2):
//! traditional DES crypt (13 characters: 56-bit, 8-character passwords),
//! `$1$` MD5-crypt (broken), `$2x$` (the buggy pre-2011 bcrypt), other
//! schemes (`$argon2...`, `$y$` yescrypt, `$7$`...), empty or locked hashes
//! (`*`, `!...`), and any password holding a NUL byte (crypt(3) would stop
//! at it and check a shorter password than the one sent).
//!
//! Also refused: hashes whose work factor would stall lka (bcrypt cost over
//! `MAX_BCRYPT_COST`, SHA-crypt rounds over `MAX_SHA_ROUNDS`).
//!
//! Both crates compare digests in constant time (`subtle`/`ctutils`). An
//! unknown user costs no hashing: the dispatcher's random delay after a
//! failed AUTH (OpenSMTPD's, up to a second) hides the difference.

use super::table::{Table, TableError};
use sha_crypt::{PasswordVerifier, ShaCrypt};

/// OpenSMTPD's `struct credentials` fields and `LINE_MAX` bound.
const MAX_CREDENTIALS: usize = 2047;

/// The hash schemes `verify` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bcrypt,
    Sha256Crypt,
    Sha512Crypt,
}

/// The scheme of a stored hash, if it is one we accept.
pub fn scheme(hash: &str) -> Option<Scheme> {
    if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
        Some(Scheme::Bcrypt)
    } else if hash.starts_with("$5$") {
        Some(Scheme::Sha256Crypt)
    } else if hash.starts_with("$6$") {
        Some(Scheme::Sha512Crypt)
    } else {
        None
    }
}

/// The dearest bcrypt cost checked: 2^16 rounds take seconds already, and
/// lka answers one request at a time (A5). OpenBSD's default is about 10.
pub const MAX_BCRYPT_COST: u32 = 16;
/// The most SHA-crypt rounds checked (the default is 5000).
pub const MAX_SHA_ROUNDS: u64 = 5_000_000;

/// Whether a hash's work factor is within the caps above.
fn affordable(hash: &str, scheme: Scheme) -> bool {
    match scheme {
        Scheme::Bcrypt => hash
            .get(4..6)
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| c <= MAX_BCRYPT_COST),
        Scheme::Sha256Crypt | Scheme::Sha512Crypt => {
            let Some(rest) = hash.get(3..).and_then(|r| r.strip_prefix("rounds=")) else {
                return true;
            };
            let digits: &str = rest.split('$').next().unwrap_or("");
            digits.len() <= 10 && digits.parse::<u64>().is_ok_and(|r| r <= MAX_SHA_ROUNDS)
        }
    }
}

/// The bcrypt cost `smtpctl encrypt` hashes with (OpenBSD's
/// crypt_newhash "bcrypt,a" picks about this on current hardware).
pub const ENCRYPT_COST: u32 = 10;

/// `smtpctl encrypt`: a new `$2b$` bcrypt hash of `password` for a
/// credentials table. Cut at 72 bytes, as OpenBSD's bcrypt cuts it (and
/// as `verify` does).
pub fn encrypt(password: &[u8]) -> Result<String, String> {
    let cut = &password[..password.len().min(72)];
    bcrypt::hash_with_result(cut, ENCRYPT_COST)
        .map(|h| h.format_for_version(bcrypt::Version::TwoB))
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored `hash`. False for every scheme
/// not listed in the module doc, for malformed hashes, for hashes dearer
/// than the caps, and for passwords with a NUL byte.
pub fn verify(hash: &str, password: &[u8]) -> bool {
    if password.contains(&0) {
        return false;
    }
    if !scheme(hash).is_some_and(|s| affordable(hash, s)) {
        return false;
    }
    match scheme(hash) {
        Some(Scheme::Bcrypt) => bcrypt::verify(password, hash).unwrap_or(false),
        Some(Scheme::Sha256Crypt | Scheme::Sha512Crypt) => {
            // The crate reads the algorithm from the hash's `$5$`/`$6$`.
            ShaCrypt::default().verify_password(password, hash).is_ok()
        }
        None => false,
    }
}

/// A credentials entry as `table_parse_lookup(K_CREDENTIALS)` reads it:
/// `user  hash` (listener tables) or `label  user:password` (relay tables).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password or hash into a log.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a credentials lookup failed (a temporary failure for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    Table(TableError),
    /// The value is shorter than 3 bytes, too long, or `:x`/`x:`.
    Malformed,
}

impl std::fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialsError::Table(e) => e.fmt(f),
            CredentialsError::Malformed => f.write_str("malformed credentials entry"),
        }
    }
}

impl std::error::Error for CredentialsError {}

/// Look `user` up in a credentials table (a mapping): `Ok(None)` if there
/// is no such user. The key is the user lower-cased, as in OpenSMTPD.
pub fn lookup_credentials(
    table: &Table,
    user: &str,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some(line) = table.get(user).map_err(CredentialsError::Table)? else {
        return Ok(None);
    };
    if line.len() < 3 || line.len() > MAX_CREDENTIALS {
        return Err(CredentialsError::Malformed);
    }
    match line.split_once(':') {
        None => Ok(Some(Credentials {
            username: user.to_lowercase(),
            password: line.to_string(),
        })),
        Some((u, p)) if !u.is_empty() && !p.is_empty() => Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })),
        Some(_) => Err(CredentialsError::Malformed),
    }
}

/// The outcome of an AUTH attempt, as OpenSMTPD's `LKA_*` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// Unknown user or wrong password: 535.
    PermFail,
    /// The table could not answer: 454.
    TempFail,
}

/// Check `user`/`password` against a listener's credentials table.
pub fn authenticate(table: &Table, user: &str, password: &[u8]) -> AuthResult {
    match lookup_credentials(table, user) {
        Err(_) => AuthResult::TempFail,
        Ok(None) => AuthResult::PermFail,
        Ok(Some(c)) => {
            if verify(&c.password, password) {
                AuthResult::Ok
            } else {
                AuthResult::PermFail
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_makes_hashes_verify_accepts() {
        let h = encrypt(b"secret").unwrap();
        assert!(h.starts_with("$2b$10$") && h.len() == 60, "{h}");
        assert!(verify(&h, b"secret"));
        assert!(!verify(&h, b"Secret"));
        assert_ne!(encrypt(b"secret").unwrap(), h, "salted");
        let long = [b'x'; 100];
        assert!(verify(&encrypt(&long).unwrap(), &long[..72]));
    }

    const SHA256: &str = "$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5";
    const SHA256_ROUNDS: &str =
        "$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA";
    const SHA512: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";
    const SHA512_ROUNDS: &str = "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.";
    /// `openssl passwd -6 -salt Xy7.abcd 'pässwörd'`: 8-bit passwords.
    const SHA512_UTF8: &str = "$6$Xy7.abcd$Q0vdqIV39JQDkmTCsJy4GsGoFO9BJskirnizprOncawio.OsTSiCbnz6iYa5k0MoChszHOYgkwwr1HZRLTT3N1";
    const BCRYPT_2A: &str = "$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";
    const BCRYPT_2B: &str = "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie";

    #[test]
    fn sha_crypt() {
        for h in [SHA256, SHA256_ROUNDS, SHA512, SHA512_ROUNDS] {
            assert!(verify(h, b"Hello world!"), "{h}");
            assert!(!verify(h, b"Hello world"), "{h}");
            assert!(!verify(h, b""), "{h}");
        }
        assert!(verify(SHA512_UTF8, "pässwörd".as_bytes()));
        assert!(!verify(SHA512_UTF8, b"passwort"));
        assert_eq!(scheme(SHA256), Some(Scheme::Sha256Crypt));
        assert_eq!(scheme(SHA512), Some(Scheme::Sha512Crypt));
    }

    #[test]
    fn bcrypt_variants() {
        assert!(verify(BCRYPT_2A, b"password"));
        assert!(!verify(BCRYPT_2A, b"Password"));
        assert!(verify(BCRYPT_2B, b"correctbatteryhorsestapler"));
        let y = BCRYPT_2B.replacen("$2b$", "$2y$", 1);
        assert!(verify(&y, b"correctbatteryhorsestapler"));
        // $2x$ is the buggy variant: refused even with the right password.
        let x = BCRYPT_2B.replacen("$2b$", "$2x$", 1);
        assert!(!verify(&x, b"correctbatteryhorsestapler"));
        // A hash made now, at the lowest cost.
        let h = bcrypt::hash("s3cret", 4).unwrap();
        assert!(verify(&h, b"s3cret"));
        assert!(!verify(&h, b"s3cret\0x"));
    }

    #[test]
    fn refused_schemes() {
        for h in [
            "$1$abc$iCQ2D3nhptRYi27fDYv2s1", // md5-crypt of "secret"
            "abJnggxhB/yWI",                 // DES
            "",
            "*",
            "!",
            "!$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1",
            "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
            "$y$j9T$salt$hash",
            "secret",
        ] {
            assert!(!verify(h, b"secret"), "{h}");
            assert!(!verify(h, b"Hello world!"), "{h}");
            assert_eq!(scheme(h), None, "{h}");
        }
        // NUL in a password is refused before any hashing.
        assert!(!verify(SHA512, b"Hello world!\0"));
    }

    #[test]
    fn work_factor_caps() {
        // Refused before any hashing (this one would take minutes).
        let dear = BCRYPT_2B.replacen("$04$", "$31$", 1);
        assert!(!verify(&dear, b"correctbatteryhorsestapler"));
        assert!(affordable("$2b$16$", Scheme::Bcrypt));
        assert!(!affordable("$2b$17$", Scheme::Bcrypt));
        assert!(affordable("$6$salt$x", Scheme::Sha512Crypt));
        assert!(affordable("$6$rounds=5000000$salt$x", Scheme::Sha512Crypt));
        assert!(!affordable("$6$rounds=5000001$salt$x", Scheme::Sha512Crypt));
        assert!(!affordable(
            "$5$rounds=99999999999999999999$s$x",
            Scheme::Sha256Crypt
        ));
        assert!(!affordable("$5$rounds=$s$x", Scheme::Sha256Crypt));
    }

    #[test]
    fn malformed_hashes_are_false_not_panics() {
        let cases = [
            "$2b$",
            "$2b$99$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie",
            "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxci",
            "$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcié",
            "$5$",
            "$5$$",
            "$6$rounds=1$salt$xyz",
            "$6$rounds=99999999999999$salt$xyz",
            "$6$salt$!!!!",
            "$6$a$b$c$d",
        ];
        for h in cases {
            assert!(!verify(h, b"x"), "{h}");
        }
    }

    #[test]
    fn credentials_table() {
        let t = Table::parse_file(
            "creds",
            "f",
            format!(
                "Joe {SHA512}\nann   {BCRYPT_2A}\nrelay bob:pa:ss\nbad1 :x\nbad2 x:\nbad3 ab\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let c = lookup_credentials(&t, "JOE").unwrap().unwrap();
        assert_eq!(c.username, "joe");
        assert_eq!(c.password, SHA512);
        assert!(!format!("{c:?}").contains("$6$"));
        let r = lookup_credentials(&t, "relay").unwrap().unwrap();
        assert_eq!((r.username.as_str(), r.password.as_str()), ("bob", "pa:ss"));
        assert_eq!(lookup_credentials(&t, "nobody"), Ok(None));
        for u in ["bad1", "bad2", "bad3"] {
            assert_eq!(
                lookup_credentials(&t, u),
                Err(CredentialsError::Malformed),
                "{u}"
            );
        }
        assert_eq!(authenticate(&t, "joe", b"Hello world!"), AuthResult::Ok);
        assert_eq!(authenticate(&t, "Joe", b"Hello world!"), AuthResult::Ok);
        assert_eq!(
            authenticate(&t, "joe", b"hello world!"),
            AuthResult::PermFail
        );
        assert_eq!(authenticate(&t, "ann", b"password"), AuthResult::Ok);
        assert_eq!(authenticate(&t, "nobody", b"x"), AuthResult::PermFail);
        assert_eq!(authenticate(&t, "bad3", b"ab"), AuthResult::TempFail);
        assert_eq!(authenticate(&t, "joe\n", b"x"), AuthResult::TempFail);
        // A list is no credentials table.
        let l = Table::from_list("l", &["joe".to_string()]).unwrap();
        assert_eq!(authenticate(&l, "joe", b"x"), AuthResult::TempFail);
    }
}
