// Included by the build scripts of the crates that link libtorch (`build/libtorch_rpath.rs`,
// `services/trainer/build.rs`): one place that says where libtorch's libraries are and records
// that folder as the run path of what the crate links, so `target/release/lexmesh` and the
// tests run in a plain shell without LD_LIBRARY_PATH.

/// With the `tch` feature: LIBTORCH (what torch-sys builds against: the repo's `.libtorch`,
/// set in `.cargo/config.toml`, or the user's own) and its library folder, which is recorded
/// as the run path. None without the feature or without LIBTORCH (torch-sys then fails with
/// its own message).
#[allow(dead_code, reason = "a build script that only needs the run path ignores the folders")]
struct Libtorch {
    root: std::path::PathBuf,
    lib: std::path::PathBuf,
}

fn libtorch_with_rpath() -> Option<Libtorch> {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    std::env::var_os("CARGO_FEATURE_TCH")?;
    let root = std::path::PathBuf::from(std::env::var_os("LIBTORCH")?);
    let lib = root.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    Some(Libtorch { root, lib })
}
