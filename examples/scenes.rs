//! The procedural captioned scenes: a grid of scenes with their maps, their captions, and the
//! checker's accuracy on 200 held-out captions for the renderer itself and for the mean image
//! of training scenes (a trivial baseline).
//!
//! ```text
//! cargo run --release --example scenes -- [N] [OUT.png]    # N scenes (16) into OUT.png (scenes.png)
//! cargo run --release --example scenes -- 16 - > grid.png  # the PNG on stdout, the text on stderr
//! ```
//!
//! Each tile shows a scene's picture and, clockwise, its segmentation, depth and edge maps;
//! tiles are in reading order, the captions are printed in the same order.

use std::io::{Cursor, Write};

use image::{GenericImage, ImageFormat, Rgb, RgbImage};
use prompt_diffusion::scenes::{Accuracy, SceneGenerator, Split, check, read};

const SIDE: u32 = 64;
const GAP: u32 = 4;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u32 = args.first().map(|a| a.parse()).transpose()?.unwrap_or(16);
    let out = args.get(1).map_or("scenes.png", String::as_str);
    let mut text: Box<dyn Write> = if out == "-" {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };

    // The grid: held-out scenes (any seed would do), 2 × 2 maps per tile.
    let columns = (f64::from(n).sqrt().ceil() as u32).max(1);
    let rows = n.div_ceil(columns);
    let tile = 2 * SIDE + GAP;
    let mut grid = RgbImage::from_pixel(columns * tile + GAP, rows * tile + GAP, Rgb([255; 3]));
    let mut generator = SceneGenerator::with_split(0, Split::HeldOut);
    for i in 0..n {
        let (scene, caption) = generator.next_captioned();
        writeln!(text, "{i:>3}: {caption}")?;
        let (x, y) = (GAP + (i % columns) * tile, GAP + (i / columns) * tile);
        grid.copy_from(&scene.render(SIDE)?, x, y)?;
        grid.copy_from(&scene.segmentation_map(SIDE)?, x + SIDE, y)?;
        grid.copy_from(&scene.edge_map(SIDE)?, x, y + SIDE)?;
        grid.copy_from(&scene.depth_map(SIDE)?, x + SIDE, y + SIDE)?;
    }
    let mut png = Vec::new();
    grid.write_to(&mut Cursor::new(&mut png), ImageFormat::Png)?;
    if out == "-" {
        std::io::stdout().write_all(&png)?;
    } else {
        std::fs::write(out, &png)?;
        writeln!(text, "wrote {out}")?;
    }

    // The evaluation: 200 held-out scenes; the mean image of 2000 training renders.
    let held_out: Vec<_> = SceneGenerator::with_split(1, Split::HeldOut)
        .take(200)
        .collect();
    let mut sum = vec![0u64; (SIDE * SIDE * 3) as usize];
    let count = 2000;
    for scene in SceneGenerator::with_split(2, Split::Train).take(count) {
        for (s, &v) in sum.iter_mut().zip(scene.render(SIDE)?.as_raw()) {
            *s += u64::from(v);
        }
    }
    let mean = RgbImage::from_raw(
        SIDE,
        SIDE,
        sum.iter()
            .map(|&s| (s as f64 / count as f64).round() as u8)
            .collect(),
    )
    .ok_or_else(|| anyhow::anyhow!("mean image size"))?;
    let mut renderer = Accuracy::default();
    let mut mean_image = Accuracy::default();
    for scene in &held_out {
        renderer.add(&check(&scene.render(SIDE)?, scene));
        mean_image.add(&check(&mean, scene));
    }
    writeln!(text, "\n{}", Accuracy::MARKDOWN_HEADER)?;
    writeln!(text, "| renderer {renderer}")?;
    writeln!(text, "| mean image {mean_image}")?;
    let reading = read(&mean);
    let blobs: Vec<_> = reading.blobs().collect();
    writeln!(
        text,
        "\nthe mean image reads as a {:?} background with blobs {blobs:?}",
        reading.background
    )?;
    Ok(())
}
