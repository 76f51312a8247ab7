//! Lets the trainer's binaries and tests find libtorch at run time without LD_LIBRARY_PATH: the
//! lib/ folder torch-sys linked against goes into their rpath. With the `cuda` feature,
//! libtorch_cuda.so is also kept as a dependency (see the feature in Cargo.toml).
//!
//! It also compiles csrc/dist.cpp, the shim through which src/dist/ reaches c10d (PyTorch's
//! distributed engine: TCPStore, ProcessGroupGloo, and ProcessGroupNCCL with `cuda`), which
//! libtorch ships and tch does not bind, with the `cc` crate and the flags torch-sys compiles
//! its own C++ with (C++17, the wheel's C++11 ABI).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    compile_dist(Path::new(&lib))
}

/// Compiles csrc/dist.cpp against the headers of the libtorch in `lib`/.. (lib/ and include/
/// side by side, in a wheel's torch/ folder as in a libtorch download).
fn compile_dist(lib: &Path) -> Result<(), String> {
    for f in ["csrc/dist.cpp", "csrc/gloo_decl"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=SMOOTHFACE_CUDA_INCLUDE");
    let root = lib
        .parent()
        .ok_or_else(|| format!("{}: no parent folder", lib.display()))?;
    // .venv-torch/libtorch is a link to the wheel's torch/ folder: its real place is where the
    // virtualenv's python and the nvidia/ packages are found from.
    let root = &std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let include = root.join("include");
    let c10d = include.join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp");
    if !c10d.exists() {
        return Err(format!(
            "{} is missing: this libtorch has no c10d headers, which the distributed trainer \
             needs (a PyTorch wheel or libtorch download of 2.x has them)",
            c10d.display()
        ));
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .file("csrc/dist.cpp")
        // Gloo's headers are not in the wheel (Gloo is compiled into libtorch_cpu): what
        // ProcessGroupGloo.hpp needs of them is declared in csrc/gloo_decl (see there why that
        // is enough).
        .include("csrc/gloo_decl")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi(root)))
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None);
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build.define("USE_C10D_NCCL", None).define("SF_NCCL", None);
        for dir in cuda_includes(root) {
            build.include(dir);
        }
    }
    build
        .try_compile("smoothface_dist")
        .map_err(|e| e.to_string())?;
    // c10d lives in libtorch_cpu (Gloo built in), ProcessGroupNCCL in libtorch_cuda; torch-sys
    // already links both, named again here for the order the static shim needs.
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    Ok(())
}

/// The C++11 ABI libtorch was built with: LIBTORCH_CXX11_ABI if set, else what the wheel's
/// Python says when libtorch is a wheel's torch/ folder (as torch-sys asks it), else 1 (every
/// PyTorch build since 2.7 uses the new ABI).
fn cxx11_abi(root: &Path) -> String {
    if let Ok(abi) = env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    // root = <venv>/lib/python3.X/site-packages/torch: the venv's python is 4 folders up.
    let python = root.ancestors().nth(4).map(|v| v.join("bin/python"));
    if let Some(python) = python.filter(|p| p.exists()) {
        let asked = Command::new(&python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output();
        if let Ok(out) = asked {
            let abi = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if abi == "0" || abi == "1" {
                return abi;
            }
        }
    }
    "1".to_string()
}

/// Where CUDA's and NCCL's headers are: SMOOTHFACE_CUDA_INCLUDE (folders separated by `:`),
/// CUDA_HOME/include (a CUDA toolkit), /usr/local/cuda/include, and the wheel's nvidia/*/include
/// packages beside torch/ (the PyPI wheel depends on nvidia-nccl and the CUDA runtime; the
/// runtime's headers also need nvidia-cuda-crt and nvidia-cuda-cccl, which a toolkit has and the
/// wheel does not pull in: docs/training.md).
fn cuda_includes(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("SMOOTHFACE_CUDA_INCLUDE")
        .map(|v| env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(home) = env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(home).join("include"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(site) = root.parent() {
        if let Ok(entries) = std::fs::read_dir(site.join("nvidia")) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("include"))
                .filter(|p| p.is_dir())
                .collect();
            found.sort();
            dirs.extend(found);
        }
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}
