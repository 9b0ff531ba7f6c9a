//! The exact maps of a scene, for in-context tasks (map → picture and picture → map): a
//! segmentation map, an edge map and a depth-like map, all computed from the same pixel labels
//! as [`Scene::render`], so they agree with the picture pixel for pixel.

use image::{Rgb, RgbImage};
use prompt_diffusion_core::Result;

use super::render::from_labels;
use super::scene::{Scene, Size};

/// The segmentation colours: index 0 is the background, index `i + 1` the scene's `i`-th
/// shape (cycled after the eighth shape).
pub const SEGMENT_COLOURS: [Rgb<u8>; 9] = [
    Rgb([0, 0, 0]),
    Rgb([255, 64, 64]),
    Rgb([64, 128, 255]),
    Rgb([64, 224, 96]),
    Rgb([255, 208, 64]),
    Rgb([208, 96, 255]),
    Rgb([64, 224, 224]),
    Rgb([255, 144, 64]),
    Rgb([255, 255, 255]),
];

/// The segmentation colour of pixel label `label` (0 = background).
pub fn segment_colour(label: u8) -> Rgb<u8> {
    match label {
        0 => SEGMENT_COLOURS[0],
        l => SEGMENT_COLOURS[1 + (usize::from(l) - 1) % (SEGMENT_COLOURS.len() - 1)],
    }
}

/// The depth-map grey of a shape of `size`: larger shapes are nearer, so brighter (small 150,
/// medium 190, large 230).
pub fn depth_grey(size: Size) -> u8 {
    match size {
        Size::Small => 150,
        Size::Medium => 190,
        Size::Large => 230,
    }
}

/// The depth-map grey of the background at row `y` of `side`: a ground plane from 20 at the top
/// (far) to 80 at the bottom (near).
pub fn background_depth_grey(y: u32, side: u32) -> u8 {
    let t = (y as f32 + 0.5) / side.max(1) as f32;
    (20.0 + 60.0 * t).round() as u8
}

impl Scene {
    /// The segmentation map: each pixel in [`segment_colour`] of its label ([`Scene::labels`]),
    /// black for the background.
    ///
    /// # Errors
    /// [`prompt_diffusion_core::Error::InvalidInput`] for a side the renderer refuses.
    pub fn segmentation_map(&self, side: u32) -> Result<RgbImage> {
        let labels = self.labels(side)?;
        Ok(from_labels(side, &labels, segment_colour))
    }

    /// The edge map, white on black: a pixel is an edge when it belongs to a shape and one of
    /// its four neighbours does not belong to the same shape (the shapes' outlines, inner
    /// outline of a ring included, one pixel wide, on the shape's side of the boundary).
    ///
    /// # Errors
    /// [`prompt_diffusion_core::Error::InvalidInput`] for a side the renderer refuses.
    pub fn edge_map(&self, side: u32) -> Result<RgbImage> {
        let labels = self.labels(side)?;
        let n = side as usize;
        let edges: Vec<u8> = (0..labels.len())
            .map(|i| {
                let (x, y) = (i % n, i / n);
                let label = labels[i];
                let differs = |nx: Option<usize>, ny: Option<usize>| match (nx, ny) {
                    (Some(nx), Some(ny)) if nx < n && ny < n => labels[ny * n + nx] != label,
                    _ => true,
                };
                let edge = label != 0
                    && (differs(x.checked_sub(1), Some(y))
                        || differs(Some(x + 1), Some(y))
                        || differs(Some(x), y.checked_sub(1))
                        || differs(Some(x), Some(y + 1)));
                u8::from(edge)
            })
            .collect();
        Ok(from_labels(side, &edges, |e| Rgb([255 * e; 3])))
    }

    /// A depth-like map in grey (brighter = nearer, as MiDaS' maps): the background is a ground
    /// plane ([`background_depth_grey`]) and each shape a flat card at [`depth_grey`] of its
    /// size.
    ///
    /// # Errors
    /// [`prompt_diffusion_core::Error::InvalidInput`] for a side the renderer refuses.
    pub fn depth_map(&self, side: u32) -> Result<RgbImage> {
        let labels = self.labels(side)?;
        let n = side as usize;
        let mut image = RgbImage::new(side, side);
        for (i, pixel) in image.pixels_mut().enumerate() {
            let grey = match labels[i] {
                0 => background_depth_grey((i / n) as u32, side),
                l => depth_grey(self.shapes[usize::from(l) - 1].size),
            };
            *pixel = Rgb([grey; 3]);
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_follow_the_labels() {
        let scene = Scene::parse(
            "a small white ring at the top left and a large blue square in the centre, on a black background",
        )
        .unwrap();
        let labels = scene.labels(64).unwrap();
        let seg = scene.segmentation_map(64).unwrap();
        let depth = scene.depth_map(64).unwrap();
        let edges = scene.edge_map(64).unwrap();
        for (i, &label) in labels.iter().enumerate() {
            let (x, y) = ((i % 64) as u32, (i / 64) as u32);
            assert_eq!(*seg.get_pixel(x, y), segment_colour(label));
            let grey = depth.get_pixel(x, y).0[0];
            match label {
                0 => assert!((20..=80).contains(&grey) && edges.get_pixel(x, y).0 == [0; 3]),
                1 => assert_eq!(grey, 150),
                _ => assert_eq!(grey, 230),
            }
        }
        // The ring's hole is background, so its inner outline is an edge too.
        let (cx, cy) = crate::scenes::Position::TOP_LEFT.centre(64.0);
        assert_eq!(labels[cy as usize * 64 + cx as usize], 0);
        let edge_count = edges.pixels().filter(|p| p.0[0] == 255).count();
        assert!(edge_count > 60, "{edge_count}");
        assert_eq!(segment_colour(9), segment_colour(1));
    }
}
