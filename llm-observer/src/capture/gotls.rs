//! Go `crypto/tls` targets, user side: finds `(*Conn).Write` and `(*Conn).Read` in an unstripped
//! Go executable and attaches the Go probes (llm-observer-ebpf `gotls.rs`) to their entries and to
//! each of their `RET` instructions.
//!
//! Go code runs on moving goroutine stacks, where a uretprobe's rewritten return address breaks
//! stack copying (golang/go#22008), so the return is reached with plain uprobes on every `RET`:
//! the function's machine code is decoded (iced-x86) to find them — a `0xC3` byte can also be
//! part of another instruction, so scanning bytes is not enough.
//!
//! Only Go ≥ 1.18 on x86-64 is taken: the register ABI the probes read (Go ≥ 1.17) and the
//! build-info layout that states the version inline (Go ≥ 1.18). Reading the file is lazy
//! (section headers, the symbol table, two functions' bytes): most executables end at "no
//! `.go.buildinfo` section".

use std::{fs::File, path::Path};

use aya::{Ebpf, programs::uprobe::UProbeAttachLocation};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol, ReadCache, ReadRef};

/// The Go programs (loaded once at start by `tls.rs`, apart from OpenSSL's).
pub const PROGRAMS: &[&str] = &[ENTRY_WRITE, ENTRY_READ, ENTRY_HANDSHAKE, RETURN];
const ENTRY_WRITE: &str = "go_tls_write";
const ENTRY_READ: &str = "go_tls_read";
const ENTRY_HANDSHAKE: &str = "go_tls_handshake";
const RETURN: &str = "go_tls_ret";

const WRITE: &str = "crypto/tls.(*Conn).Write";
const READ: &str = "crypto/tls.(*Conn).Read";
/// Called by net/http before the first `Read`/`Write` (optional: it marks the socket as TLS
/// before the handshake's records).
const HANDSHAKE: &str = "crypto/tls.(*Conn).handshakeContext";

/// Larger functions are not decoded (the two are ~1–2 KiB; a symbol table claiming more is not
/// the Go toolchain's).
const MAX_FUNCTION_BYTES: u64 = 1 << 20;
/// Build info read at most (the version comes in its first bytes; the section can be crafted to
/// claim gigabytes: every executable run on the node is looked at).
const MAX_BUILDINFO_BYTES: u64 = 4096;
/// A symbol or string table larger than this is not read (the largest Go binaries have tens of
/// MiB).
const MAX_SYMTAB_BYTES: u64 = 256 << 20;

/// Where to probe one function: file offsets of its first instruction and of each `RET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc {
    pub entry: u64,
    pub rets: Vec<u64>,
}

/// What an executable offers the Go probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoInspect {
    /// Not a Go executable (or not ELF).
    NotGo,
    /// A Go executable without `crypto/tls`.
    NoTls,
    /// A Go executable without a symbol table (`-ldflags=-s`): its functions cannot be found.
    Stripped,
    /// A Go executable the probes cannot read (the reason).
    Unsupported(String),
    Targets {
        version: String,
        write: GoFunc,
        read: GoFunc,
        /// File offset of `handshakeContext`'s first instruction, when the binary has it.
        handshake: Option<u64>,
    },
}

/// Looks at `path` (opened lazily).
pub fn inspect(path: &Path) -> GoInspect {
    let Ok(file) = File::open(path) else {
        return GoInspect::NotGo;
    };
    let cache = ReadCache::new(file);
    inspect_data(&cache)
}

/// [`inspect`] over any readable image (a byte slice in tests).
pub fn inspect_data<'d, R: ReadRef<'d>>(data: R) -> GoInspect {
    let Ok(elf) = object::File::parse(data) else {
        return GoInspect::NotGo;
    };
    let Some(info) = elf.section_by_name(".go.buildinfo") else {
        return GoInspect::NotGo;
    };
    let head = info
        .file_range()
        .and_then(|(off, size)| data.read_bytes_at(off, size.min(MAX_BUILDINFO_BYTES)).ok());
    let Some(version) = head.and_then(go_version) else {
        return GoInspect::Unsupported(
            "Go before 1.18 (build info without an inline version)".into(),
        );
    };
    if elf.architecture() != object::Architecture::X86_64 {
        return GoInspect::Unsupported(format!("{version} on {:?}", elf.architecture()));
    }
    match go_minor(&version) {
        Some(m) if m >= 18 => {}
        _ => return GoInspect::Unsupported(format!("{version}: Go 1.18 or later is needed")),
    }
    let Some(symtab) = elf.section_by_name(".symtab") else {
        return GoInspect::Stripped;
    };
    let strtab = elf.section_by_name(".strtab").map_or(0, |s| s.size());
    if symtab.size() > MAX_SYMTAB_BYTES || strtab > MAX_SYMTAB_BYTES {
        return GoInspect::Unsupported(format!(
            "{version}: symbol table over {MAX_SYMTAB_BYTES} bytes"
        ));
    }
    // One pass over the symbol table for the three functions (each lookup by name is a pass);
    // the first symbol of a name counts, as with `symbol_by_name`.
    let mut found: [Option<(u64, u64)>; 3] = [None; 3];
    for sym in elf.symbols() {
        let Ok(name) = sym.name_bytes() else {
            continue;
        };
        let i = [WRITE, READ, HANDSHAKE]
            .iter()
            .position(|n| n.as_bytes() == name);
        if let Some(slot) = i.and_then(|i| found.get_mut(i))
            && slot.is_none()
        {
            *slot = Some((sym.address(), sym.size()));
        }
    }
    let [Some(write), Some(read), handshake] = found else {
        return GoInspect::NoTls;
    };
    let (write, read) = (
        function(&elf, data, WRITE, write),
        function(&elf, data, READ, read),
    );
    let handshake = handshake.and_then(|(addr, _)| file_offset(&elf, addr, 1));
    match (write, read) {
        (Ok(write), Ok(read)) => GoInspect::Targets {
            version,
            write,
            read,
            handshake,
        },
        (Err(e), _) | (_, Err(e)) => GoInspect::Unsupported(format!("{version}: {e}")),
    }
}

/// The executable section holding `size` bytes from `addr` (overflow-safe: the symbol table may
/// be crafted).
fn text_section<'d, 'f, R: ReadRef<'d>>(
    elf: &'f object::File<'d, R>,
    addr: u64,
    size: u64,
) -> Option<object::Section<'d, 'f, R>> {
    let end = addr.checked_add(size)?;
    elf.sections().find(|s| {
        s.kind() == object::SectionKind::Text
            && s.address() <= addr
            && s.address().checked_add(s.size()).is_some_and(|e| end <= e)
    })
}

/// The file offset of `size` bytes of code at virtual address `addr`: in an executable section
/// that has bytes in the file.
fn file_offset<'d, R: ReadRef<'d>>(elf: &object::File<'d, R>, addr: u64, size: u64) -> Option<u64> {
    let section = text_section(elf, addr, size)?;
    let (start, _) = section.file_range()?;
    Some(start + (addr - section.address()))
}

/// Where to probe the function `name` whose symbol says (`addr`, `size`).
fn function<'d, R: ReadRef<'d>>(
    elf: &object::File<'d, R>,
    data: R,
    name: &str,
    (addr, size): (u64, u64),
) -> Result<GoFunc, String> {
    if size == 0 || size > MAX_FUNCTION_BYTES {
        return Err(format!("{name}: size {size}"));
    }
    let entry = file_offset(elf, addr, size)
        .ok_or_else(|| format!("{name}: no code section in the file holds {addr:#x}"))?;
    let code = data
        .read_bytes_at(entry, size)
        .map_err(|()| format!("{name}: cannot read {size} bytes at {entry:#x}"))?;
    let rets = ret_offsets(code);
    if rets.is_empty() {
        return Err(format!("{name}: no RET instruction"));
    }
    Ok(GoFunc {
        entry,
        rets: rets.into_iter().map(|r| entry + r).collect(),
    })
}

/// Offsets (from the start of `code`) of its `RET` instructions, decoding from the start.
pub fn ret_offsets(code: &[u8]) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let ins = decoder.decode();
        if ins.mnemonic() == Mnemonic::Ret {
            out.push(ins.ip());
        }
    }
    out
}

/// The Go version a `.go.buildinfo` section states inline (Go ≥ 1.18: a 32-byte header — magic,
/// pointer size, flags with bit 1 set — then a varint-prefixed string).
pub fn go_version(info: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !info.starts_with(MAGIC) || info.len() < 33 || info[15] & 2 == 0 {
        return None;
    }
    let (len, used) = uvarint(&info[32..])?;
    let start = 32 + used;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let v = std::str::from_utf8(info.get(start..end)?).ok()?;
    v.starts_with("go").then(|| v.to_owned())
}

/// The minor version of `go1.N[.P...]`.
fn go_minor(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Attaches the return program to every `RET` of both functions, then their entry programs
/// (returns first: an entry whose return is not probed would leave its call in flight). Returns
/// the number of uprobes attached.
pub fn attach(
    ebpf: &mut Ebpf,
    path: &Path,
    write: &GoFunc,
    read: &GoFunc,
    handshake: Option<u64>,
) -> Result<u64, String> {
    let mut n = 0;
    for off in write.rets.iter().chain(&read.rets) {
        attach_at(ebpf, RETURN, *off, path)?;
        n += 1;
    }
    attach_at(ebpf, ENTRY_WRITE, write.entry, path)?;
    attach_at(ebpf, ENTRY_READ, read.entry, path)?;
    n += 2;
    // Optional: without it the handshake's records count as another protocol's bytes.
    if let Some(off) = handshake {
        match attach_at(ebpf, ENTRY_HANDSHAKE, off, path) {
            Ok(()) => n += 1,
            Err(e) => log::debug!("Go TLS handshake probe: {e}"),
        }
    }
    Ok(n)
}

fn attach_at(ebpf: &mut Ebpf, prog: &str, offset: u64, path: &Path) -> Result<(), String> {
    let at = UProbeAttachLocation::AbsoluteOffset(offset);
    super::tls::attach_uprobe(ebpf, prog, at, path)
        .map_err(|(_, e)| format!("{prog} at {offset:#x}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rets_are_found_by_decoding_not_by_byte() {
        // mov eax, 0xc3c3c3c3 (C3 bytes inside an immediate); ret; xor eax, eax; ret 8
        let code = [
            0xb8, 0xc3, 0xc3, 0xc3, 0xc3, 0xc3, 0x31, 0xc0, 0xc2, 0x08, 0x00,
        ];
        assert_eq!(ret_offsets(&code), vec![5, 8]);
        assert!(ret_offsets(&[0x90, 0x90]).is_empty());
    }

    #[test]
    fn the_inline_version_of_go_build_info_is_read() {
        let mut info = b"\xff Go buildinf:\x08\x02".to_vec();
        info.resize(32, 0);
        info.push(8);
        info.extend_from_slice(b"go1.19.8");
        info.extend_from_slice(b"\x99\x03more");
        assert_eq!(go_version(&info).as_deref(), Some("go1.19.8"));
        assert_eq!(go_minor("go1.19.8"), Some(19));
        assert_eq!(go_minor("go1.22rc1"), Some(22));
        // Go 1.17's layout: pointers, no inline string.
        info[15] = 0;
        assert_eq!(go_version(&info), None);
        // Truncated or not build info at all.
        assert_eq!(go_version(b"\xff Go buildinf:\x08\x02"), None);
        assert_eq!(go_version(&[0u8; 64]), None);
        let mut long = b"\xff Go buildinf:\x08\x02".to_vec();
        long.resize(32, 0);
        long.push(200);
        assert_eq!(go_version(&long), None);
    }

    #[test]
    fn non_go_files_are_not_go() {
        assert_eq!(inspect_data(&b"not an elf file"[..]), GoInspect::NotGo);
        // This test binary is ELF, not Go.
        let me = std::env::current_exe().expect("test binary");
        assert_eq!(inspect(&me), GoInspect::NotGo);
    }
}
