//! The one progress bar style of long runs over photos (or faces).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` photos, drawn on stderr when `show` (a terminal, no `--quiet`), else hidden.
pub fn photos_bar(len: usize, show: bool) -> ProgressBar {
    bar(len, show, "photos")
}

/// A bar over `len` things called `unit`, drawn as [`photos_bar`].
pub fn bar(len: usize, show: bool, unit: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {{bar:40}} {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}  {{msg}}"
        ))
        .expect("valid template"),
    );
    bar
}
