//! Sealed memory: a role's config view, read-only and immutable.
//!
//! A config view is a tree of Strings and Vecs on the heap; sealing "the
//! config" means sealing every byte of that tree. So the global allocator
//! here has two modes. Normally it is the system allocator. While a view is
//! being built (`freeze`), allocations made by that thread come instead from
//! a fresh anonymous mapping, bumped and never reused. When the build is
//! done the value itself is boxed in that mapping too, the unused tail is
//! unmapped, and the mapping is made PROT_READ and sealed: mseal(2) on
//! Linux, mimmutable(2) on OpenBSD. From then on no code in the process,
//! ours or an attacker's, can change the policy the role enforces: writes
//! fault, and mprotect/munmap/mmap over the range fail.
//!
//! Frees of arena memory are no-ops (the arena is never reused), so values
//! dropped during the build just waste a little of it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The process's allocator: the system's, or the arena while filling.
pub struct Allocator;

#[global_allocator]
static GLOBAL: Allocator = Allocator;

static BASE: AtomicUsize = AtomicUsize::new(0);
static END: AtomicUsize = AtomicUsize::new(0);
static NEXT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised and without Drop: reading it never allocates.
    static FILLING: Cell<bool> = const { Cell::new(false) };
}

fn filling() -> bool {
    FILLING.try_with(|f| f.get()).unwrap_or(false)
}

fn in_arena(p: *mut u8) -> bool {
    let p = p as usize;
    let base = BASE.load(Ordering::Relaxed);
    base != 0 && p >= base && p < END.load(Ordering::Relaxed)
}

fn bump(layout: Layout) -> *mut u8 {
    let align = layout.align();
    let mut cur = NEXT.load(Ordering::Relaxed);
    loop {
        let start = match cur.checked_add(align - 1) {
            Some(v) => v & !(align - 1),
            None => return std::ptr::null_mut(),
        };
        let end = match start.checked_add(layout.size().max(1)) {
            Some(e) if e <= END.load(Ordering::Relaxed) => e,
            _ => return std::ptr::null_mut(),
        };
        match NEXT.compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return start as *mut u8,
            Err(now) => cur = now,
        }
    }
}

// SAFETY: every pointer returned is either from System (and goes back to
// it) or from the arena, which is never handed out twice and never freed.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if filling() {
            bump(layout)
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if filling() {
            // Fresh anonymous pages are zero and the arena never reuses.
            bump(layout)
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !in_arena(ptr) {
            // SAFETY: not arena memory, so it came from System.alloc.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !filling() && !in_arena(ptr) {
            // SAFETY: a System block, forwarded as is.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: GlobalAlloc::realloc's contract guarantees new_size with
        // this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf takes an integer.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

/// A value that lives in sealed memory. It is never dropped: the mapping
/// cannot be unmapped.
pub struct Sealed<T: 'static> {
    value: &'static T,
    start: usize,
    len: usize,
}

impl<T> std::ops::Deref for Sealed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Sealed<T> {
    /// The value, for as long as the process lives (it is never freed).
    pub fn get(&self) -> &'static T {
        self.value
    }

    /// The sealed range, for tests and for /proc cross-checks.
    pub fn range(&self) -> (usize, usize) {
        (self.start, self.len)
    }

    /// Try to make the range writable again: it must fail. If it worked
    /// (a kernel without mseal) the range is put back to read-only and the
    /// error says so.
    pub fn verify(&self) -> io::Result<()> {
        let p = self.start as *mut libc::c_void;
        // SAFETY: the range is our own mapping; changing its protection
        // does not invalidate any Rust reference (reads stay allowed).
        let r = unsafe { libc::mprotect(p, self.len, libc::PROT_READ | libc::PROT_WRITE) };
        if r == 0 {
            // SAFETY: as above.
            unsafe { libc::mprotect(p, self.len, libc::PROT_READ) };
            return Err(io::Error::other(
                "config mapping is not immutable (no mseal/mimmutable?)",
            ));
        }
        Ok(())
    }
}

/// Build a value with `build`, every allocation of it (and the value
/// itself) in a new mapping of at most `capacity` bytes, then make that
/// mapping read-only and immutable. Once per process.
pub fn freeze<T, E>(
    capacity: usize,
    build: impl FnOnce() -> Result<T, E>,
) -> io::Result<Result<Sealed<T>, E>> {
    let page = page_size();
    let len = capacity.max(page).div_ceil(page) * page;
    #[cfg(target_os = "linux")]
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    #[cfg(not(target_os = "linux"))]
    let flags = libc::MAP_PRIVATE | libc::MAP_ANON;
    // SAFETY: a fresh anonymous mapping; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let base = base as usize;
    if BASE
        .compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: the mapping we just made, not yet used.
        unsafe { libc::munmap(base as *mut libc::c_void, len) };
        return Err(io::Error::other("a sealed region exists already"));
    }
    END.store(base + len, Ordering::SeqCst);
    NEXT.store(base, Ordering::SeqCst);

    FILLING.with(|f| f.set(true));
    let built = build().map(Box::new);
    FILLING.with(|f| f.set(false));
    let boxed = match built {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let value: &'static T = Box::leak(boxed);
    if std::mem::size_of::<T>() != 0 && !in_arena(value as *const T as *mut u8) {
        return Err(io::Error::other("sealed value escaped its arena"));
    }
    // Keep the pages used; give back the rest.
    let used = (NEXT.load(Ordering::SeqCst) - base).max(1).div_ceil(page) * page;
    if used < len {
        // SAFETY: the tail of our mapping, never handed out.
        unsafe { libc::munmap((base + used) as *mut libc::c_void, len - used) };
        END.store(base + used, Ordering::SeqCst);
    }
    // SAFETY: our own mapping; only reads happen from here on.
    if unsafe { libc::mprotect(base as *mut libc::c_void, used, libc::PROT_READ) } != 0 {
        return Err(io::Error::last_os_error());
    }
    seal(base, used)?;
    Ok(Ok(Sealed {
        value,
        start: base,
        len: used,
    }))
}

#[cfg(target_os = "linux")]
fn seal(base: usize, len: usize) -> io::Result<()> {
    const SYS_MSEAL: libc::c_long = 462;
    // SAFETY: mseal on a range we own; it only removes abilities.
    let r = unsafe { libc::syscall(SYS_MSEAL, base, len, 0) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            log::warn!("warn: kernel has no mseal(2): config is read-only but not sealed");
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(target_os = "openbsd")]
fn seal(base: usize, len: usize) -> io::Result<()> {
    extern "C" {
        fn mimmutable(addr: *mut libc::c_void, len: libc::size_t) -> libc::c_int;
    }
    // SAFETY: mimmutable on a range we own; it only removes abilities.
    super::cvt(unsafe { mimmutable(base as *mut libc::c_void, len) }).map(drop)
}

#[cfg(not(any(target_os = "linux", target_os = "openbsd")))]
fn seal(_base: usize, _len: usize) -> io::Result<()> {
    Err(io::Error::other("no way to seal memory on this platform"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // freeze() is once per process, so the test forks and checks from the
    // child's exit status.
    #[test]
    fn frozen_value_is_intact_and_cannot_be_made_writable() {
        // SAFETY: the child only runs this test's code and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                let sealed = freeze(1 << 20, || Ok::<_, ()>(vec![String::from("listen"); 100]))
                    .ok()?
                    .ok()?;
                if sealed.len() != 100 || sealed[99] != "listen" {
                    return Some(2);
                }
                if sealed.verify().is_err() {
                    return Some(3);
                }
                let (start, _) = sealed.range();
                let s0 = sealed[0].as_ptr() as usize;
                if s0 < start {
                    return Some(4);
                }
                // A second region is refused.
                if freeze(4096, || Ok::<_, ()>(1u8)).is_ok() {
                    return Some(5);
                }
                Some(0)
            })()
            .unwrap_or(1);
            // SAFETY: leave the forked child without running the harness.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child died: {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
