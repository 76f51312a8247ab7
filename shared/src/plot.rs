//! What every PNG plot of the project shares: the font, registered with plotters once.

use plotters::style::FontStyle;
use std::sync::Once;

/// plotters draws text only in fonts registered with it; the family name charts ask for.
pub const FONT: &str = "sans-serif";

/// Registers DejaVu Sans (embedded by the `dejavu` crate, so no system font is needed) as
/// [`FONT`], once.
pub fn register_font() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // The bytes are DejaVu Sans from the dejavu crate: always a valid font.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}
