//! The ROC curve as a PNG (FAR on a log axis, as IJB papers draw it), beside its CSV.

use crate::metrics::RocPoint;
use crate::plot::{register_font, FONT};
use plotters::prelude::*;
use std::path::Path;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 600;

/// Draws `curve` (titled `title`) into a PNG at `path`, written atomically. Points at FAR 0
/// have no place on a log axis and are left out.
pub fn write_roc_png(curve: &[RocPoint], title: &str, path: &Path) -> Result<(), String> {
    register_font();
    let draw = |e: DrawingAreaErrorKind<_>| format!("drawing the ROC plot: {e}");
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((1e-6f64..1.0).log_scale(), 0.0f64..1.0)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .x_desc("false accept rate")
            .y_desc("true accept rate")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .label_style((FONT, 13))
            .draw()
            .map_err(draw)?;
        chart
            .draw_series(LineSeries::new(
                curve
                    .iter()
                    .filter(|p| p.far >= 1e-6)
                    .map(|p| (p.far, p.tar)),
                BLUE.stroke_width(2),
            ))
            .map_err(draw)?;
        root.present()
            .map_err(|e| format!("drawing the ROC plot: {e}"))?;
    }
    let image =
        image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).expect("buffer of the plot's size");
    crate::atomic::write_atomically(path, |file| -> Result<(), std::io::Error> {
        image
            .write_to(file, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
    .map_err(|e| format!("{}: cannot write the plot: {e}", path.display()))
}
