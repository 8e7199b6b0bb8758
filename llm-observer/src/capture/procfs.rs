//! Socket facts from /proc: the 4-tuple of a (pid, fd), and the TCP sockets that existed before
//! the agent started (so they are captured from their next I/O instead of being ignored).
//!
//! Everything read here can vanish or change under us (processes exit, fds are reused), so every
//! function returns `Option`/empty results instead of errors, and never panics on odd content.

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

/// TCP states in /proc/net/tcp (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

/// One row of /proc/<pid>/net/tcp{,6}.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    pub inode: u64,
}

/// What `/proc/<tgid>/fd/<fd>` points at (`socket:[N]`, `pipe:[N]`, a path), if readable.
pub fn fd_target(proc_root: &Path, tgid: u32, fd: i32) -> Option<String> {
    let link = fs::read_link(
        proc_root
            .join(tgid.to_string())
            .join("fd")
            .join(fd.to_string()),
    )
    .ok()?;
    link.into_os_string().into_string().ok()
}

/// The inode number in an fd target of `kind` (`socket`, `pipe`): `socket:[123]` → 123.
pub fn inode_of(target: &str, kind: &str) -> Option<u64> {
    target
        .strip_prefix(kind)?
        .strip_prefix(":[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The socket inode behind `/proc/<tgid>/fd/<fd>`, if it is a socket.
pub fn socket_inode(proc_root: &Path, tgid: u32, fd: i32) -> Option<u64> {
    inode_of(&fd_target(proc_root, tgid, fd)?, "socket")
}

/// The pipe inode behind `/proc/<tgid>/fd/<fd>`, if it is a pipe.
pub fn pipe_inode(proc_root: &Path, tgid: u32, fd: i32) -> Option<u64> {
    inode_of(&fd_target(proc_root, tgid, fd)?, "pipe")
}

/// The parent of process `tgid` (`/proc/<tgid>/stat`, field 4).
pub fn ppid(proc_root: &Path, tgid: u32) -> Option<u32> {
    let text = fs::read_to_string(proc_root.join(tgid.to_string()).join("stat")).ok()?;
    crate::attribution::process::parse_stat(&text).map(|(ppid, _)| ppid)
}

/// The child processes of `tgid`: the `children` lists of its threads (a child is listed under
/// the thread that forked it) where the kernel has them (`CONFIG_PROC_CHILDREN`), else every
/// process whose parent it is (one pass over /proc).
pub fn children(proc_root: &Path, tgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = fs::read_dir(proc_root.join(tgid.to_string()).join("task")) {
        for task in tasks.flatten() {
            let Ok(text) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            listed = true;
            out.extend(
                text.split_ascii_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    if listed {
        return out;
    }
    let Ok(all) = fs::read_dir(proc_root) else {
        return out;
    };
    for entry in all.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != tgid && ppid(proc_root, pid) == Some(tgid) {
            out.push(pid);
        }
    }
    out
}

/// Whether process `pid` holds pipe `ino` on any fd.
pub fn holds_pipe(proc_root: &Path, pid: u32, ino: u64) -> bool {
    let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|l| l.to_str().and_then(|t| inode_of(t, "pipe")))
            == Some(ino)
    })
}

/// Parses the text of a /proc/net/tcp or tcp6 table. Malformed lines are skipped.
pub fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines().skip(1).filter_map(parse_tcp_line).collect()
}

fn parse_tcp_line(line: &str) -> Option<TcpRow> {
    let mut f = line.split_whitespace();
    let _sl = f.next()?;
    let local = parse_hex_addr(f.next()?)?;
    let remote = parse_hex_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    // tx:rx, tr:when, retrnsmt, uid, timeout, inode
    let inode = f.nth(5)?.parse().ok()?;
    Some(TcpRow {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:1F90` (IPv4, each 32-bit word in host byte order) or the 32-hex-digit IPv6 form.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            // Show v4-mapped addresses as the IPv4 they are.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP row visible in `tgid`'s network namespace.
pub fn tcp_rows(proc_root: &Path, tgid: u32) -> Vec<TcpRow> {
    let net = proc_root.join(tgid.to_string()).join("net");
    let mut rows = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(net.join(table)) {
            rows.extend(parse_tcp_table(&text));
        }
    }
    rows
}

/// (local, remote) of `tgid`'s fd when it is a TCP socket; `None` if it is not (or is gone).
pub fn resolve(proc_root: &Path, tgid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
    let inode = socket_inode(proc_root, tgid, fd)?;
    tcp_rows(proc_root, tgid)
        .into_iter()
        .find(|r| r.inode == inode)
        .map(|r| (r.local, r.remote))
}

/// A TCP connection that existed before the agent attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingSocket {
    pub tgid: u32,
    pub fd: i32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Its local port is one the same network namespace listens on.
    pub server: bool,
}

/// Established TCP sockets of every process (or of `only` when given), with their role: server
/// when the local port is a listening port in the same network namespace, client otherwise.
pub fn existing_sockets(proc_root: &Path, only: Option<u32>, skip: u32) -> Vec<ExistingSocket> {
    let Ok(dir) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    // Tables per network namespace, read once each.
    let mut by_netns: HashMap<String, (HashMap<u64, TcpRow>, HashSet<u16>)> = HashMap::new();
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tgid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if only.is_some_and(|p| p != tgid) || tgid == skip {
            continue;
        }
        let base = proc_root.join(tgid.to_string());
        let Ok(netns) = fs::read_link(base.join("ns/net")) else {
            continue;
        };
        let key = netns.to_string_lossy().into_owned();
        let (rows, listening) = by_netns.entry(key).or_insert_with(|| {
            let rows = tcp_rows(proc_root, tgid);
            let listening = rows
                .iter()
                .filter(|r| r.state == TCP_LISTEN)
                .map(|r| r.local.port())
                .collect();
            let rows = rows
                .into_iter()
                .filter(|r| r.state == TCP_ESTABLISHED)
                .map(|r| (r.inode, r))
                .collect();
            (rows, listening)
        });
        let Ok(fds) = fs::read_dir(base.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(fd) = fd.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(inode) = socket_inode(proc_root, tgid, fd) else {
                continue;
            };
            if let Some(row) = rows.get(&inode) {
                out.push(ExistingSocket {
                    tgid,
                    fd,
                    local: row.local,
                    remote: row.remote,
                    server: listening.contains(&row.local.port()),
                });
            }
        }
    }
    out
}

/// `comm` of a process (≤ 15 bytes by the kernel's rule), or `None` if it is gone.
/// Whether `tgid` is a live process (not just a thread id, which /proc also answers for): its
/// status names it as its own thread group.
pub fn is_process(proc_root: &Path, tgid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(proc_root.join(tgid.to_string()).join("status"))
    else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok())
        == Some(tgid)
}

/// This process's pid as the kernel's probes see it (the init PID namespace): `<proc root>/self`
/// names it when the host's /proc is mounted into a container, where `std::process::id()` would
/// be the container's own number.
pub fn own_pid(proc_root: &Path) -> u32 {
    std::fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|p| p.to_str()?.parse().ok())
        .unwrap_or_else(std::process::id)
}

/// The process (thread group) that thread `tid` belongs to.
pub fn tgid_of(proc_root: &Path, tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_root.join(tid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

pub fn comm(proc_root: &Path, tgid: u32) -> Option<String> {
    let s = fs::read_to_string(proc_root.join(tgid.to_string()).join("comm")).ok()?;
    Some(s.trim_end_matches('\n').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1
   2: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:2CAA 00000000000000000000000001000000:9C40 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 0 10 -1
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D432 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0 20 4 0 10 -1
";

    #[test]
    fn fd_target_inodes() {
        assert_eq!(inode_of("pipe:[4242]", "pipe"), Some(4242));
        assert_eq!(inode_of("socket:[7]", "socket"), Some(7));
        assert_eq!(inode_of("socket:[7]", "pipe"), None);
        assert_eq!(inode_of("/tmp/pipe:[1]", "pipe"), None);
        assert_eq!(inode_of("pipe:[x]", "pipe"), None);
        assert_eq!(inode_of("pipe:[12", "pipe"), None);
    }

    #[test]
    fn parses_ipv4_rows_and_skips_garbage() {
        let rows = parse_tcp_table(TCP);
        assert_eq!(
            rows,
            vec![
                TcpRow {
                    local: "127.0.0.1:8080".parse().expect("addr"),
                    remote: "0.0.0.0:0".parse().expect("addr"),
                    state: TCP_LISTEN,
                    inode: 4242
                },
                TcpRow {
                    local: "127.0.0.1:8080".parse().expect("addr"),
                    remote: "127.0.0.1:54321".parse().expect("addr"),
                    state: TCP_ESTABLISHED,
                    inode: 4243
                },
            ]
        );
    }

    #[test]
    fn parses_ipv6_and_mapped_rows() {
        let rows = parse_tcp_table(TCP6);
        assert_eq!(rows[0].local, "[::1]:11434".parse().expect("addr"));
        assert_eq!(rows[0].remote, "[::1]:40000".parse().expect("addr"));
        assert_eq!(rows[1].local, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(rows[1].remote, "127.0.0.1:54322".parse().expect("addr"));
        assert_eq!((rows[1].state, rows[1].inode), (TCP_ESTABLISHED, 778));
    }
}
