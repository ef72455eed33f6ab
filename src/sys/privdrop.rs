//! Becoming an unprivileged user in a chroot, with no way back.

use super::cvt;
use std::ffi::CString;
use std::io;

/// A user's ids, looked up before chroot (the password file is outside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub home: String,
}

/// getpwnam(3), reentrant.
pub fn lookup(user: &str) -> io::Result<Account> {
    let cname = CString::new(user).map_err(io::Error::other)?;
    // SAFETY: passwd is plain data; getpwnam_r fills it in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: every pointer is valid for the call and buf's length is exact.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown user {user}"),
        ));
    }
    // SAFETY: on success pw_dir points at a NUL-terminated string inside buf.
    let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) }
        .to_string_lossy()
        .into_owned();
    Ok(Account {
        name: user.to_string(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home,
    })
}

/// getpwuid(3), reentrant: the account and its GECOS field (sendmail's
/// From: name).
pub fn lookup_uid(uid: libc::uid_t) -> io::Result<(Account, String)> {
    // SAFETY: passwd is plain data; getpwuid_r fills it in.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: every pointer is valid for the call and buf's length is exact.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("unknown uid {uid}"),
        ));
    }
    let text = |p: *const libc::c_char| {
        if p.is_null() {
            return String::new();
        }
        // SAFETY: on success the fields point at NUL-terminated strings inside buf.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    };
    let acct = Account {
        name: text(pw.pw_name),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home: text(pw.pw_dir),
    };
    Ok((acct, text(pw.pw_gecos)))
}

/// chroot(2) into `dir` and chdir("/") inside it.
pub fn chroot(dir: &str) -> io::Result<()> {
    let c = CString::new(dir).map_err(io::Error::other)?;
    // SAFETY: c is a valid C string.
    cvt(unsafe { libc::chroot(c.as_ptr()) })?;
    // SAFETY: literal C string.
    cvt(unsafe { libc::chdir(c"/".as_ptr()) }).map(drop)
}

/// Drop to `acct` for good: supplementary groups, real/effective/saved gid
/// and uid; on Linux also the capability bounding set and dumpability (so
/// roles sharing a uid cannot ptrace one another). Then check that root
/// cannot be regained.
pub fn drop_to(acct: &Account) -> io::Result<()> {
    if acct.uid == 0 {
        return Err(io::Error::other(format!(
            "refusing to run as root user {}",
            acct.name
        )));
    }
    #[cfg(target_os = "linux")]
    drop_bounding_set()?;
    let groups = [acct.gid];
    // SAFETY: one gid from a valid array.
    cvt(unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: plain integers.
    cvt(unsafe { libc::setresgid(acct.gid, acct.gid, acct.gid) })?;
    // SAFETY: plain integers.
    cvt(unsafe { libc::setresuid(acct.uid, acct.uid, acct.uid) })?;
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments.
    cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    verify_dropped(acct)
}

/// The ids must all be the account's, and becoming root again must fail.
fn verify_dropped(acct: &Account) -> io::Result<()> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    cvt(unsafe { libc::getresuid(&mut r, &mut e, &mut s) })?;
    let (mut gr, mut ge, mut gs) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    cvt(unsafe { libc::getresgid(&mut gr, &mut ge, &mut gs) })?;
    if [r, e, s] != [acct.uid; 3] || [gr, ge, gs] != [acct.gid; 3] {
        return Err(io::Error::other(
            "privilege drop left another uid or gid behind",
        ));
    }
    // SAFETY: plain integers; success here is the failure we test for.
    if unsafe { libc::setuid(0) } == 0 || unsafe { libc::setgid(0) } == 0 {
        return Err(io::Error::other("privilege drop failed: root regained"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn drop_bounding_set() -> io::Result<()> {
    // Capabilities past the kernel's last one give EINVAL: stop there.
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == -1 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(e);
        }
    }
    // SAFETY: prctl with integer arguments.
    cvt(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })
    .map(drop)
}
