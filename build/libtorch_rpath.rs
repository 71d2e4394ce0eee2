//! Build script shared by the crates whose binaries and tests link libtorch through burn-tch
//! (the `lexmesh` binary, the mesh crate): records libtorch's library folder as their run path.

include!("libtorch.rs");

fn main() {
    libtorch_with_rpath();
}
