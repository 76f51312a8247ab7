//! Lets the trainer's binaries and tests find libtorch at run time without LD_LIBRARY_PATH: the
//! lib/ folder torch-sys linked against goes into their rpath. With the `cuda` feature,
//! libtorch_cuda.so is also kept as a dependency (see the feature in Cargo.toml).

use std::env;
use std::path::Path;

fn main() -> Result<(), String> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = env::var("DEP_TCH_LIBTORCH_LIB").map_err(|_| {
        "torch-sys did not report its libtorch lib/ folder (DEP_TCH_LIBTORCH_LIB)".to_string()
    })?;
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        let cuda = Path::new(&lib).join("libtorch_cuda.so");
        if !cuda.exists() {
            return Err(format!(
                "the cuda feature needs a CUDA build of libtorch, and {} is missing",
                cuda.display()
            ));
        }
        // Rust links with --as-needed, which would drop libtorch_cuda.so: nothing references it
        // directly, libtorch registers the CUDA backend when the library is loaded.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
    Ok(())
}
