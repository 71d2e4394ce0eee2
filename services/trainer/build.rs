//! The trainer crate's build script: with the `tch` feature, records libtorch's library folder
//! as the run path of the crate's tests (`build/libtorch.rs`, shared with the binary's build
//! script) and compiles the fused Adam step (`native/fused_adam.cpp`) against the libtorch
//! headers that torch-sys builds against.

include!("../../build/libtorch.rs");

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=native/fused_adam.cpp");
    let Some(Libtorch { root, lib }) = libtorch_with_rpath() else {
        return;
    };
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .file("native/fused_adam.cpp")
        .include(root.join("include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("lexmesh_fused_adam");
    // After the static library, so that the linker resolves its libtorch symbols.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
