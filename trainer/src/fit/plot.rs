//! `metrics.png`: the training loss and the validation mAP of each epoch, side by side.

use super::record::EpochRecord;
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use smoothface_shared::atomic::write_atomically;
use smoothface_shared::plot::{register_font, FONT};
use std::path::Path;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;

/// The range of `values` widened a little (and made non-empty), for an axis.
fn axis_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.1).max(1e-4);
    (lo - pad)..(hi + pad)
}

/// One line chart of `(epoch, value)` points in `area`.
fn chart(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    points: &[(f64, f64)],
    colour: RGBColor,
    last_epoch: f64,
) -> Result<()> {
    let draw_error = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the plot: {e}");
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            0.0..last_epoch.max(1.0),
            axis_range(points.iter().map(|p| p.1)),
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        // Whole epochs only: with few epochs the mesh would also label halves.
        .x_labels((last_epoch as usize + 1).clamp(2, 12))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style((FONT, 13))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))
        .map_err(draw_error)?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
        .map_err(draw_error)?;
    Ok(())
}

/// Draws `records` into a PNG at `path`, written atomically.
pub fn draw(records: &[EpochRecord], path: &Path) -> Result<()> {
    register_font();
    let mut pixels = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (WIDTH, HEIGHT)).into_drawing_area();
        let (left, right) = root.split_horizontally(WIDTH / 2);
        let last = records.last().map_or(1.0, |r| r.epoch as f64);
        let losses: Vec<(f64, f64)> = records
            .iter()
            .filter_map(|r| r.train_loss.map(|l| (r.epoch as f64, l)))
            .collect();
        let maps: Vec<(f64, f64)> = records
            .iter()
            .map(|r| (r.epoch as f64, r.val_map))
            .collect();
        chart(&left, "training loss", "loss", &losses, RED, last)?;
        chart(&right, "validation mAP", "mAP", &maps, BLUE, last)?;
        root.present()
            .map_err(|e| anyhow!("drawing the plot: {e}"))?;
    }
    let image =
        image::RgbImage::from_raw(WIDTH, HEIGHT, pixels).expect("buffer of the plot's size");
    write_atomically(path, |file| -> Result<()> {
        image.write_to(file, image::ImageFormat::Png)?;
        Ok(())
    })
    .with_context(|| format!("{}: cannot write the plot", path.display()))
}
