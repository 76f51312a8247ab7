//! The one progress bar style of long runs over photos.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` photos, drawn on stderr when `show` (a terminal, no `--quiet`), else hidden.
pub fn photos_bar(len: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} photos  {per_sec}  eta {eta}  {msg}",
        )
        .expect("valid template"),
    );
    bar
}
