//! Drawing scenes: each shape's outline in canvas units and the point-sampled renderer.
//!
//! The canvas is 64 × 64 units; an image of side `side` samples it at pixel centres
//! (`(x + 0.5) · 64 / side`), so a 64-pixel render is exact (every pixel is one palette colour,
//! no anti-aliasing) and larger renders are the same picture with finer edges.

use image::RgbImage;
use prompt_diffusion_core::image::MAX_IMAGE_SIDE;
use prompt_diffusion_core::{Error, Result};

use super::scene::{Scene, Shape, ShapeKind};

/// The side of the canvas, in units, that shape sizes and positions are given in.
pub const CANVAS: f32 = 64.0;

/// A shape's region relative to its centre, in canvas units.
#[derive(Debug, Clone)]
enum Outline {
    Circle { r: f32 },
    Square { half: f32 },
    Triangle { half_height: f32, half_width: f32 },
    Star { vertices: [(f32, f32); 10] },
    Ring { outer: f32, inner: f32 },
}

impl Outline {
    /// The region of `shape`: a circle of the size's radius `r`; a square of half-side
    /// 0.85 r; a triangle 1.8 r tall and 2.08 r wide (its box centred on the cell); a star of
    /// outer radius 1.05 r and inner radius 0.5 of that; a ring between r and 0.4 r.
    fn of(shape: &Shape) -> Outline {
        let r = shape.size.radius();
        match shape.kind {
            ShapeKind::Circle => Outline::Circle { r },
            ShapeKind::Square => Outline::Square { half: 0.85 * r },
            ShapeKind::Triangle => Outline::Triangle {
                half_height: 0.9 * r,
                half_width: 1.04 * r,
            },
            ShapeKind::Star => {
                let outer = 1.05 * r;
                Outline::Star {
                    vertices: std::array::from_fn(|k| {
                        let radius = if k % 2 == 0 { outer } else { 0.5 * outer };
                        let angle =
                            -std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::PI / 5.0;
                        (radius * angle.cos(), radius * angle.sin())
                    }),
                }
            }
            ShapeKind::Ring => Outline::Ring {
                outer: r,
                inner: 0.4 * r,
            },
        }
    }

    /// Whether the point (`dx`, `dy`) from the centre (y down) is inside.
    fn contains(&self, dx: f32, dy: f32) -> bool {
        let d2 = dx * dx + dy * dy;
        match *self {
            Outline::Circle { r } => d2 <= r * r,
            Outline::Square { half } => dx.abs() <= half && dy.abs() <= half,
            Outline::Triangle {
                half_height,
                half_width,
            } => {
                dy.abs() <= half_height
                    && dx.abs() <= half_width * (dy + half_height) / (2.0 * half_height)
            }
            Outline::Star { ref vertices } => inside_polygon(vertices, dx, dy),
            Outline::Ring { outer, inner } => d2 <= outer * outer && d2 >= inner * inner,
        }
    }
}

/// Even-odd ray casting.
fn inside_polygon(vertices: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = vertices.len() - 1;
    for (i, &(xi, yi)) in vertices.iter().enumerate() {
        let (xj, yj) = vertices[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Checks an image side for the renderer and the maps.
pub(super) fn check_side(side: u32) -> Result<()> {
    if side == 0 || side > MAX_IMAGE_SIDE {
        return Err(Error::invalid_input(
            "scene image side",
            format!("{side} is outside 1..={MAX_IMAGE_SIDE}"),
        ));
    }
    Ok(())
}

impl Shape {
    /// Whether the canvas point (`x`, `y`) (in units of the 64 × 64 canvas, y down) is inside
    /// the shape.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let (cx, cy) = self.position.centre(CANVAS);
        Outline::of(self).contains(x - cx, y - cy)
    }
}

impl Scene {
    /// The label of every pixel of a `side` × `side` image, row by row: 0 for the background,
    /// `i + 1` for the pixels of `shapes[i]` (a later shape covers an earlier one; in a valid
    /// scene shapes never overlap).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `side` is 0 or above [`MAX_IMAGE_SIDE`].
    pub fn labels(&self, side: u32) -> Result<Vec<u8>> {
        check_side(side)?;
        let outlines: Vec<(usize, Outline, (f32, f32))> = self
            .shapes
            .iter()
            .enumerate()
            .take(usize::from(u8::MAX))
            .map(|(i, s)| (i, Outline::of(s), s.position.centre(CANVAS)))
            .collect();
        let n = side as usize;
        let scale = CANVAS / side as f32;
        let mut labels = vec![0u8; n * n];
        for (y, row) in labels.chunks_exact_mut(n).enumerate() {
            let v = (y as f32 + 0.5) * scale;
            for (x, label) in row.iter_mut().enumerate() {
                let u = (x as f32 + 0.5) * scale;
                for (i, outline, (cx, cy)) in &outlines {
                    if outline.contains(u - cx, v - cy) {
                        *label = (i + 1) as u8;
                    }
                }
            }
        }
        Ok(labels)
    }

    /// The scene as a `side` × `side` picture: the background colour and each shape in its
    /// colour, point-sampled (64 gives the exact picture the captions describe).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `side` is 0 or above [`MAX_IMAGE_SIDE`].
    pub fn render(&self, side: u32) -> Result<RgbImage> {
        let labels = self.labels(side)?;
        let mut colours = vec![self.background.rgb()];
        colours.extend(self.shapes.iter().map(|s| s.colour.rgb()));
        Ok(from_labels(side, &labels, |label| {
            colours[usize::from(label)]
        }))
    }
}

/// An image whose pixel `i` is `colour(labels[i])`.
pub(super) fn from_labels(
    side: u32,
    labels: &[u8],
    colour: impl Fn(u8) -> image::Rgb<u8>,
) -> RgbImage {
    let mut image = RgbImage::new(side, side);
    for (pixel, &label) in image.pixels_mut().zip(labels) {
        *pixel = colour(label);
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenes::{Colour, Position, Size};

    fn shape(kind: ShapeKind, size: Size, position: Position) -> Shape {
        Shape {
            kind,
            colour: Colour::Red,
            size,
            position,
        }
    }

    #[test]
    fn shapes_stay_in_their_cell_and_have_their_size() {
        let cell = CANVAS / 3.0;
        for kind in ShapeKind::ALL {
            let mut areas = Vec::new();
            for size in Size::ALL {
                let s = shape(kind, size, Position::CENTRE);
                let scene = Scene::new(Colour::Blue, vec![s]).unwrap();
                let labels = scene.labels(64).unwrap();
                let mut area = 0;
                for (i, &l) in labels.iter().enumerate() {
                    if l == 1 {
                        area += 1;
                        let (x, y) = ((i % 64) as f32 + 0.5, (i / 64) as f32 + 0.5);
                        assert!(
                            x > cell && x < 2.0 * cell && y > cell && y < 2.0 * cell,
                            "{kind:?}"
                        );
                    }
                }
                areas.push(area);
            }
            assert!(
                areas[0] >= 40 && areas[0] < areas[1] && areas[1] < areas[2],
                "{kind:?} {areas:?}"
            );
        }
    }

    #[test]
    fn ring_has_a_hole_and_star_points() {
        let ring = shape(ShapeKind::Ring, Size::Large, Position::CENTRE);
        assert!(!ring.contains(32.0, 32.0) && ring.contains(32.0 + 7.0, 32.0));
        let star = shape(ShapeKind::Star, Size::Large, Position::CENTRE);
        assert!(star.contains(32.0, 32.0) && star.contains(32.0, 32.0 - 9.5));
        assert!(!star.contains(32.0 + 4.0, 32.0 - 8.0));
        let triangle = shape(ShapeKind::Triangle, Size::Large, Position::TOP_LEFT);
        let (cx, cy) = Position::TOP_LEFT.centre(CANVAS);
        assert!(triangle.contains(cx, cy - 8.0) && !triangle.contains(cx - 5.0, cy - 6.0));
        assert!(triangle.contains(cx - 9.0, cy + 8.0));
    }

    #[test]
    fn render_is_exact_palette_colours_and_sides_are_checked() {
        let scene = Scene::parse("a large pink star at the bottom left and a black ring at the top, on a yellow background").unwrap();
        let image = scene.render(64).unwrap();
        let allowed = [Colour::Yellow, Colour::Pink, Colour::Black].map(Colour::rgb);
        assert!(image.pixels().all(|p| allowed.contains(p)));
        assert_eq!(*image.get_pixel(0, 0), Colour::Yellow.rgb());
        let (cx, cy) = Position::BOTTOM_LEFT.centre(64.0);
        assert_eq!(*image.get_pixel(cx as u32, cy as u32), Colour::Pink.rgb());
        assert_eq!(scene.render(7).unwrap().dimensions(), (7, 7));
        assert!(scene.render(0).is_err() && scene.render(MAX_IMAGE_SIDE + 1).is_err());
    }
}
