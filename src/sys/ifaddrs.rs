//! Interface addresses, getifaddrs(3), for `listen on INTERFACE`.

use super::cvt;
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IPv4 and IPv6 addresses of interface `name`, in the order the
/// system lists them. Empty if the interface has none or does not exist.
pub fn addresses_of(name: &str) -> io::Result<Vec<IpAddr>> {
    addresses(Some(name))
}

/// Every address of every interface.
pub fn all() -> io::Result<Vec<IpAddr>> {
    addresses(None)
}

fn addresses(name: Option<&str>) -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: head is a valid out-pointer; freed with freeifaddrs below.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, alive
        // until freeifaddrs; ifa_name is a NUL-terminated string; ifa_addr,
        // when non-null, points at a sockaddr whose family tells its type.
        unsafe {
            let ifa = &*cur;
            let matches =
                name.is_none_or(|n| CStr::from_ptr(ifa.ifa_name).to_bytes() == n.as_bytes());
            if matches && !ifa.ifa_addr.is_null() {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            sin.sin_addr.s_addr,
                        ))));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        // Link-local addresses need a scope to bind; OpenSMTPD skips them too.
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cur = ifa.ifa_next;
        }
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_127_0_0_1() {
        let lo = if cfg!(target_os = "linux") {
            "lo"
        } else {
            "lo0"
        };
        let addrs = super::addresses_of(lo).unwrap();
        assert!(addrs.contains(&"127.0.0.1".parse().unwrap()), "{addrs:?}");
        assert!(super::addresses_of("no-such-if0").unwrap().is_empty());
    }
}
