//! Process titles: what `ps` shows for each role ("smtpd: lka").

use std::io;

/// Make ps show "smtpd: NAME". On Linux the kernel reports the bytes
/// between arg_start and arg_end of our stack, so we overwrite them (the
/// argv of `smtpd -x ROLE` is long enough; a longer title is cut); on
/// OpenBSD setproctitle(3) does this and adds the "smtpd: " itself.
pub fn set(name: &str) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let title = format!("smtpd: {name}");
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // Fields after the command name, which is in parentheses and may
        // itself contain spaces or parentheses: split after the last ')'.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // arg_start and arg_end are fields 48 and 49 of stat(5); `rest`
        // starts at field 3.
        let get = |n: usize| fields.get(n - 3).and_then(|s| s.parse::<usize>().ok());
        let (start, end) = match (get(48), get(49)) {
            (Some(s), Some(e)) if e > s => (s, e),
            _ => return Err(io::Error::other("no argument area in /proc/self/stat")),
        };
        let len = end - start;
        let bytes = title.as_bytes();
        let n = bytes.len().min(len - 1);
        // SAFETY: [start, end) is our own argv area on the stack, writable,
        // laid out by the kernel at exec; we write strictly inside it and
        // Rust code holds no reference into it (std copies argv on use).
        unsafe {
            let p = start as *mut u8;
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, n);
            std::ptr::write_bytes(p.add(n), 0, len - n);
        }
        Ok(())
    }
    #[cfg(target_os = "openbsd")]
    {
        let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
        // SAFETY: a "%s" format with one C string argument.
        unsafe { libc::setproctitle(c"%s".as_ptr(), c.as_ptr()) };
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "openbsd")))]
    {
        let _ = name;
        Ok(())
    }
}
