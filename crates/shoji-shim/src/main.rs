//! `containerd-shim-shoji-v2`: containerd's runtime v2 shim for Shoji (runtime type
//! `io.containerd.shoji.v2`). Wiring only; the shim is `shoji_shim`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shoji_shim::main()
}
