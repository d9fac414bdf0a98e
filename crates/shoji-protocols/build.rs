fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    ttrpc_codegen::Codegen::new()
        .out_dir(&out)
        .inputs(["protos/agent.proto"])
        .include("protos")
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()
        .expect("generating ttRPC code from protos/agent.proto");
    // The generated files start with inner attributes (`#![...]`), which `include!` cannot take;
    // the same allowances are on the including modules in lib.rs.
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = out.join(name);
        let text = std::fs::read_to_string(&path).expect("reading generated code");
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, text).expect("writing generated code");
    }
    println!("cargo:rerun-if-changed=protos/agent.proto");
}
