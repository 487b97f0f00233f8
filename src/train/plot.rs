//! PNG plots: loss and accuracy curves per epoch, and a grid of a conv layer's filters.
//!
//! Drawing happens in an RGB buffer (plotters' bitmap backend); the buffer is encoded with the
//! `png` crate and written atomically. Text uses the DejaVu Sans font embedded by the `dejavu`
//! crate through plotters' `ab_glyph` renderer, so no system fonts or fontconfig are needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::atomic::write_atomically;
use super::{EpochMetrics, TrainError};
use crate::{DType, Tensor};

/// Size in pixels of the image [`plot_curves`] writes: two panels side by side.
pub const CURVES_SIZE: (u32, u32) = (1200, 450);

/// Filters are upscaled (nearest neighbour: each weight an `s × s` block) until their longer side
/// is at least this many pixels.
pub const FILTER_TILE_PIXELS: usize = 96;
/// Pixels between filter tiles and around the grid.
pub const FILTER_GAP: usize = 4;

const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOR: RGBColor = RGBColor(214, 39, 40);
const TEST_COLOR: RGBColor = RGBColor(44, 160, 44);
const GAP_COLOR: [u8; 3] = [64, 64, 64];

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        // The embedded font is a valid TrueType file; should registration ever fail, plotters
        // reports missing fonts as drawing errors, which `plot_curves` returns.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Writes 8-bit `pixels` (RGB triples, or one grey byte each) as a PNG of `color`.
fn encode_png(
    path: &Path,
    pixels: &[u8],
    (width, height): (u32, u32),
    color: png::ColorType,
) -> Result<(), TrainError> {
    write_atomically(path, |w| {
        let mut encoder = png::Encoder::new(w, width, height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer
            .write_image_data(pixels)
            .map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })
}

/// The points of one curve: `(epoch, value)` for the epochs that have a finite value.
fn points(
    history: &[EpochMetrics],
    value: impl Fn(&EpochMetrics) -> Option<f64>,
) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|m| {
            value(m)
                .filter(|v| v.is_finite())
                .map(|v| (m.epoch as f64, v))
        })
        .collect()
}

type Curve<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Draws the training curves of `history` to a PNG of [`CURVES_SIZE`]: loss (train, validation) on
/// the left, accuracy in percent (train, validation, test where present) on the right, with axis
/// labels and legends. Non-finite values are left out.
pub fn plot_curves(path: impl AsRef<Path>, history: &[EpochMetrics]) -> Result<(), TrainError> {
    let path = path.as_ref();
    if history.is_empty() {
        return Err(TrainError::invalid(
            "history",
            format!("no epochs to plot in {}", path.display()),
        ));
    }
    register_fonts();
    let pct = |v: Option<f64>| v.map(|x| 100.0 * x);
    let losses: Vec<Curve> = vec![
        (
            "train",
            TRAIN_COLOR,
            points(history, |m| Some(m.train_loss)),
        ),
        ("validation", VAL_COLOR, points(history, |m| m.val_loss)),
    ];
    let accuracies: Vec<Curve> = vec![
        (
            "train",
            TRAIN_COLOR,
            points(history, |m| pct(Some(m.train_accuracy))),
        ),
        (
            "validation",
            VAL_COLOR,
            points(history, |m| pct(m.val_accuracy)),
        ),
        (
            "test",
            TEST_COLOR,
            points(history, |m| pct(m.test_accuracy)),
        ),
    ];
    let first = history.iter().map(|m| m.epoch).min().unwrap_or(1) as f64;
    let last = history.iter().map(|m| m.epoch).max().unwrap_or(1) as f64;
    // A margin so the markers of the first and last epochs are not cut by the frame.
    let pad = (0.02 * (last - first)).max(0.3);
    let epochs = first - pad..last + pad;
    let loss_max = losses
        .iter()
        .flat_map(|c| c.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let loss_top = if loss_max > 0.0 { loss_max * 1.05 } else { 1.0 };

    let (width, height) = CURVES_SIZE;
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        let draw_err = |e: &dyn std::fmt::Display| TrainError::Plot {
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let panels = root.split_evenly((1, 2));
        let loss_panel = Panel {
            title: "Loss",
            y_label: "loss",
            y: 0.0..loss_top,
            legend: SeriesLabelPosition::UpperRight,
        };
        panel(&panels[0], loss_panel, epochs.clone(), &losses).map_err(|e| draw_err(&e))?;
        let accuracy_panel = Panel {
            title: "Accuracy",
            y_label: "accuracy (%)",
            y: 0.0..101.0,
            legend: SeriesLabelPosition::LowerRight,
        };
        panel(&panels[1], accuracy_panel, epochs, &accuracies).map_err(|e| draw_err(&e))?;
        root.present().map_err(|e| draw_err(&e))?;
    }
    encode_png(path, &rgb, (width, height), png::ColorType::Rgb)
}

struct Panel {
    title: &'static str,
    y_label: &'static str,
    y: std::ops::Range<f64>,
    legend: SeriesLabelPosition,
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    spec: Panel,
    x: std::ops::Range<f64>,
    curves: &[Curve],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .caption(spec.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x, spec.y)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(spec.y_label)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .x_label_formatter(&|v| {
            if v.fract().abs() < 1e-9 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    let mut any = false;
    for (name, color, pts) in curves.iter().filter(|c| !c.2.is_empty()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        any = true;
    }
    if any {
        chart
            .configure_series_labels()
            .position(spec.legend)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

/// Draws the filters of a conv layer, `weights` of shape `[K, C, KH, KW]` (f32 or f64, any
/// device), as a grid of K tiles to a PNG, and returns the image size `(width, height)`.
///
/// With C = 3 (a first layer on RGB images) the PNG is in colour (channels as RGB, the three
/// normalized together so that the filter's colours keep their balance); any other C gives a
/// greyscale PNG of the mean over the channels. Each filter is min-max normalized on its own (a
/// constant filter is mid-grey; NaN is black) and upscaled by
/// `s = ceil(FILTER_TILE_PIXELS / max(KH, KW))`, so each weight is an `s × s` block and each tile
/// at least [`FILTER_TILE_PIXELS`] wide. The grid has `cols = ceil(sqrt(K))` columns and
/// `ceil(K / cols)` rows, with [`FILTER_GAP`] pixels between and around the tiles: width
/// `cols * KW * s + (cols + 1) * FILTER_GAP`, and likewise height.
pub fn plot_filters(path: impl AsRef<Path>, weights: &Tensor) -> Result<(u32, u32), TrainError> {
    let path = path.as_ref();
    let &[k, c, kh, kw] = weights.shape() else {
        return Err(TrainError::invalid(
            "filter weights",
            format!("expected shape [K, C, KH, KW], got {:?}", weights.shape()),
        ));
    };
    if k == 0 || c == 0 || kh == 0 || kw == 0 {
        return Err(TrainError::invalid(
            "filter weights",
            format!("shape {:?} has no filters to draw", weights.shape()),
        ));
    }
    let values: Vec<f32> = match weights.dtype() {
        DType::F32 => weights.to_vec::<f32>()?,
        DType::F64 => weights
            .to_vec::<f64>()?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => {
            return Err(TrainError::invalid(
                "filter weights",
                format!("dtype {other:?}; expected f32 or f64"),
            ))
        }
    };
    let scale = FILTER_TILE_PIXELS.div_ceil(kh.max(kw));
    let cols = (1..=k).find(|c| c * c >= k).unwrap_or(k);
    let rows = k.div_ceil(cols);
    let (tile_w, tile_h) = (kw * scale, kh * scale);
    let width = cols * tile_w + (cols + 1) * FILTER_GAP;
    let height = rows * tile_h + (rows + 1) * FILTER_GAP;
    let mut rgb: Vec<u8> = GAP_COLOR
        .iter()
        .copied()
        .cycle()
        .take(width * height * 3)
        .collect();

    let plane = kh * kw;
    for f in 0..k {
        let filter = &values[f * c * plane..(f + 1) * c * plane];
        // [3][KH*KW] planes to show: the RGB channels, or the channel mean three times.
        let shown: Vec<f32> = if c == 3 {
            filter.to_vec()
        } else {
            let mean: Vec<f32> = (0..plane)
                .map(|i| (0..c).map(|ch| filter[ch * plane + i]).sum::<f32>() / c as f32)
                .collect();
            mean.repeat(3)
        };
        let finite = shown.iter().copied().filter(|v| v.is_finite());
        let lo = finite.clone().fold(f32::INFINITY, f32::min);
        let hi = finite.fold(f32::NEG_INFINITY, f32::max);
        let byte = |v: f32| -> u8 {
            if !v.is_finite() {
                0
            } else if hi > lo {
                (255.0 * (v - lo) / (hi - lo)).round() as u8
            } else {
                128
            }
        };
        let (x0, y0) = (
            FILTER_GAP + (f % cols) * (tile_w + FILTER_GAP),
            FILTER_GAP + (f / cols) * (tile_h + FILTER_GAP),
        );
        for py in 0..tile_h {
            for px in 0..tile_w {
                let i = (py / scale) * kw + px / scale;
                let at = ((y0 + py) * width + x0 + px) * 3;
                for ch in 0..3 {
                    rgb[at + ch] = byte(shown[ch * plane + i]);
                }
            }
        }
    }
    let size = (width as u32, height as u32);
    match c {
        3 => encode_png(path, &rgb, size, png::ColorType::Rgb)?,
        _ => {
            let grey: Vec<u8> = rgb.iter().step_by(3).copied().collect();
            encode_png(path, &grey, size, png::ColorType::Grayscale)?
        }
    }
    Ok(size)
}
