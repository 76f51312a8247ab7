//! `smoothface-train --help`: every subcommand is listed and has its own page, and the flags
//! whose values the library's enums parse list those values and refuse others, naming them.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smoothface-train"))
        .args(args)
        .output()
        .unwrap()
}

/// The help page that `args` print.
fn help(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The text of `flag`'s entry on a help page: its line and the indented lines below it.
fn entry(page: &str, flag: &str) -> String {
    let lines: Vec<&str> = page.lines().collect();
    let start = lines
        .iter()
        .position(|l| {
            l.trim_start()
                .split([' ', '='])
                .next()
                .is_some_and(|first| first == flag)
        })
        .unwrap_or_else(|| panic!("no {flag} on\n{page}"));
    let mut text = lines[start].to_owned();
    for line in &lines[start + 1..] {
        let next_flag = line.trim_start().starts_with('-');
        if next_flag || (!line.is_empty() && !line.starts_with("   ")) {
            break;
        }
        text.push(' ');
        text.push_str(line.trim());
    }
    text
}

#[test]
fn every_subcommand_has_a_help_page() {
    let subcommands = smoothface_tests::subcommands(&help(&["--help"]));
    assert_eq!(
        subcommands,
        [
            "loss",
            "bench-loss",
            "bench-step",
            "import",
            "fit",
            "export",
            "quantize",
            "eval"
        ]
    );
    assert_eq!(
        smoothface_tests::subcommands(&help(&["eval", "--help"])),
        ["ijbc"]
    );
    let page = help(&["eval", "ijbc", "--help"]);
    let flags = smoothface_tests::flags(&page);
    for flag in [
        "--checkpoint",
        "--device",
        "--batch",
        "--flip",
        "--no-flip",
        "--no-norm-score",
        "--no-detector-score",
        "--protocol",
        "--cache",
        "--no-cache",
        "--roc",
        "--json",
    ] {
        assert!(
            flags.iter().any(|f| f == flag),
            "eval ijbc: {flag} in {flags:?}"
        );
    }
    for sub in &subcommands {
        let page = help(&[sub, "--help"]);
        assert!(
            page.contains(&format!("Usage: smoothface-train {sub}")),
            "{sub}: {page}"
        );
        let flags = smoothface_tests::flags(&page);
        assert!(flags.iter().any(|f| f == "--help"), "{sub}: {flags:?}");
    }
}

#[test]
fn enum_flags_list_their_values_and_refuse_others() {
    for (sub, flag, values, what) in [
        (
            "loss",
            "--mode",
            &["paper", "official"][..],
            "Smooth-AP mode",
        ),
        (
            "bench-loss",
            "--mode",
            &["paper", "official"],
            "Smooth-AP mode",
        ),
        (
            "bench-step",
            "--precision",
            &["f32", "bf16", "f16"],
            "precision",
        ),
        ("bench-step", "--device", &["cpu", "cuda"], "device"),
        (
            "bench-step",
            "--arch",
            &["mobilefacenet", "mbf", "iresnet50"],
            "architecture",
        ),
        (
            "import",
            "--arch",
            &["mobilefacenet", "mbf", "iresnet50"],
            "architecture",
        ),
        (
            "quantize",
            "--format",
            &["qdq", "qlinear"],
            "quantization format",
        ),
    ] {
        let page = help(&[sub, "--help"]);
        assert!(smoothface_tests::flags(&page).iter().any(|f| f == flag));
        let doc = entry(&page, flag);
        for value in values {
            assert!(doc.contains(&format!("`{value}`")), "{sub} {flag}: {doc}");
        }
        let out = run(&[sub, flag, "nope"]);
        assert_eq!(out.status.code(), Some(2), "{sub} {flag} nope");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let expected = format!("unknown {what} 'nope' (expected one of: ");
        assert!(stderr.contains(&expected), "{sub} {flag}: {stderr}");
        assert!(values.iter().all(|v| stderr.contains(v)), "{stderr}");
    }
}
