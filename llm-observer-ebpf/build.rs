//! Rebuild when the linker changes: artifact dependencies can't express it (cargo#12385), and a
//! bpf-linker built against another LLVM produces different objects.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
