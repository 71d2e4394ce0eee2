//! Build script shared by the crates whose binaries and tests link libtorch: records the
//! libtorch library folder as the binary's run path, so `target/release/lexmesh` runs in a
//! plain shell without LD_LIBRARY_PATH. The folder is `$LIBTORCH/lib`, where LIBTORCH is what
//! torch-sys builds against (the repo's `.libtorch`, set in `.cargo/config.toml`, or the
//! user's own).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let tch = std::env::var_os("CARGO_FEATURE_TCH").is_some();
    if let (true, Some(libtorch)) = (tch, std::env::var_os("LIBTORCH")) {
        let lib = std::path::Path::new(&libtorch).join("lib");
        let lib = lib.canonicalize().unwrap_or(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
