//! A network namespace joined to the test's by a veth pair: a host the tests can cut off
//! without a word. Its link goes down and packets vanish; nothing answers, not even a kernel
//! (a proxy on loopback cannot do that: its kernel keeps acknowledging). Needs root and
//! iproute2's `ip`, as on the CI machine.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with an address reachable from the test's namespace; removed when dropped.
pub struct Netns {
    name: String,
    inner_if: String,
    /// The namespace's address (a /30 shared with the test's side of the pair).
    pub ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's `ip` runs (the tests need root and iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// A new namespace, up and reachable.
    pub fn new() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("coredb-{pid}-{n}");
        // Interface names are at most 15 bytes.
        let outer_if = format!("cdo{}x{n}", pid % 1_000_000);
        let inner_if = format!("cdi{}x{n}", pid % 1_000_000);
        let (a, b) = (((pid >> 8) & 0xff) as u8, (pid & 0xff) as u8);
        let base = (n % 60 * 4) as u8;
        let outer = Ipv4Addr::new(10, 100 + a % 100, b, base + 1);
        let inner = Ipv4Addr::new(10, 100 + a % 100, b, base + 2);
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            inner_if,
            ip: inner,
        };
        ip(&[
            "link",
            "add",
            &outer_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.inner_if,
        ]);
        ip(&["link", "set", &ns.inner_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{outer}/30"), "dev", &outer_if]);
        ip(&["link", "set", &outer_if, "up"]);
        ns.exec(&["addr", "add", &format!("{inner}/30"), "dev", &ns.inner_if]);
        ns.exec(&["link", "set", &ns.inner_if, "up"]);
        ns.exec(&["link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// A listening socket on the namespace's address (bound from a thread that joined the
    /// namespace: a socket lives in the namespace it was made in).
    pub fn listen(&self) -> std::net::TcpListener {
        let path = format!("/run/netns/{}", self.name);
        let addr = (self.ip, 0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a file descriptor this thread owns; it changes only this
            // thread's network namespace, and the thread ends right after.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = std::net::TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            listener
        })
        .join()
        .unwrap()
    }

    /// Takes the namespace off the network: its end of the pair goes down, and whatever is
    /// sent to it vanishes.
    pub fn cut_off(&self) {
        self.exec(&["link", "set", &self.inner_if, "down"]);
    }

    /// Puts it back.
    pub fn reconnect(&self) {
        self.exec(&["link", "set", &self.inner_if, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the other end.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
