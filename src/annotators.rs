//! Annotators: hint maps from ordinary photos, without Python — to make Prompt Diffusion
//! example pairs and queries, or ControlNet hints.
//!
//! * [`canny`] — Canny edges as ControlNet's `annotator/canny` (`cv2.Canny(img, 100, 200)`):
//!   an optional Gaussian blur, 3×3 Sobel gradients with the L1 magnitude `|gx| + |gy|`,
//!   non-maximum suppression along the quantised gradient direction and hysteresis
//!   (pixels above `high` start edges, 8-connected pixels above `low` continue them). As in cv2,
//!   each pixel takes the gradient of its strongest colour channel, so edges between colours
//!   of equal brightness are found.
//! * [`soft_edge`] — a soft edge map in the spirit of HED/PiDiNet (which are neural networks):
//!   the Sobel gradient magnitude (strongest channel) of the blurred image, normalised by its 99th percentile,
//!   with a floor and a gamma, so strong contours are bright and flat or finely textured
//!   regions are black.
//!
//! Maps are white on black, with three equal channels (the annotators' `HWC3` convention).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use image::{Rgb, RgbImage};
use prompt_diffusion_core::{Error, Result};

/// The annotators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotatorKind {
    /// [`canny`] with [`CannyOptions::default`].
    Canny,
    /// [`soft_edge`] with [`SoftEdgeOptions::default`].
    SoftEdge,
}

impl AnnotatorKind {
    /// Runs the annotator with its default options.
    pub fn annotate(self, image: &RgbImage) -> RgbImage {
        match self {
            Self::Canny => canny(image, &CannyOptions::default()),
            Self::SoftEdge => soft_edge(image, &SoftEdgeOptions::default()),
        }
    }
}

impl fmt::Display for AnnotatorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Canny => "canny",
            Self::SoftEdge => "softedge",
        })
    }
}

impl FromStr for AnnotatorKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "canny" => Ok(Self::Canny),
            "softedge" | "soft-edge" | "soft_edge" => Ok(Self::SoftEdge),
            _ => Err(Error::invalid_input(
                "annotator",
                format!("`{s}` is not one of canny, softedge"),
            )),
        }
    }
}

/// Options of [`canny`]; the defaults are ControlNet's (thresholds 100 and 200, no blur).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CannyOptions {
    /// Gradient magnitude (L1, on 0–255 pixel values) that continues an edge.
    pub low: f32,
    /// Gradient magnitude that starts an edge.
    pub high: f32,
    /// Standard deviation of the Gaussian blur applied first, in pixels (0 = none).
    pub sigma: f32,
}

impl Default for CannyOptions {
    fn default() -> Self {
        Self {
            low: 100.0,
            high: 200.0,
            sigma: 0.0,
        }
    }
}

impl CannyOptions {
    prompt_diffusion_core::setters! {
        /// Sets the magnitude that continues an edge.
        with_low(low: f32);
        /// Sets the magnitude that starts an edge.
        with_high(high: f32);
        /// Sets the blur before the gradient.
        with_sigma(sigma: f32);
    }
}

/// Options of [`soft_edge`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct SoftEdgeOptions {
    /// Standard deviation of the blur before the gradient, in pixels (default 1.5).
    pub sigma: f32,
    /// Exponent applied to the normalised magnitude; below 1 brightens faint edges
    /// (default 0.7).
    pub gamma: f32,
    /// Normalised magnitudes below this are black, which removes fine texture and noise
    /// (default 0.1).
    pub floor: f32,
}

impl Default for SoftEdgeOptions {
    fn default() -> Self {
        Self {
            sigma: 1.5,
            gamma: 0.7,
            floor: 0.1,
        }
    }
}

impl SoftEdgeOptions {
    prompt_diffusion_core::setters! {
        /// Sets the blur before the gradient.
        with_sigma(sigma: f32);
        /// Sets the exponent of the normalised magnitude.
        with_gamma(gamma: f32);
        /// Sets the magnitude below which pixels are black.
        with_floor(floor: f32);
    }
}

/// Canny edges of `image`: 255 on edges, 0 elsewhere.
pub fn canny(image: &RgbImage, options: &CannyOptions) -> RgbImage {
    let (gx, gy) = gradients(image, options.sigma);
    let magnitude: Vec<f32> = gx.iter().zip(&gy).map(|(x, y)| x.abs() + y.abs()).collect();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let at = |x: isize, y: isize| -> f32 {
        if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
            0.0
        } else {
            magnitude[y as usize * w + x as usize]
        }
    };
    // Non-maximum suppression (cv2's tangent tests; `>` on one side, `>=` on the other keeps
    // one pixel of a plateau).
    let (tan22, tan67) = (0.414_213_56_f32, 2.414_213_6_f32);
    let mut thin = vec![0.0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let m = magnitude[i];
            if m <= options.low {
                continue;
            }
            let (ax, ay) = (gx[i].abs(), gy[i].abs());
            let (xi, yi) = (x as isize, y as isize);
            let (a, b) = if ay <= ax * tan22 {
                (at(xi - 1, yi), at(xi + 1, yi))
            } else if ay > ax * tan67 {
                (at(xi, yi - 1), at(xi, yi + 1))
            } else if (gx[i] < 0.0) != (gy[i] < 0.0) {
                (at(xi + 1, yi - 1), at(xi - 1, yi + 1))
            } else {
                (at(xi - 1, yi - 1), at(xi + 1, yi + 1))
            };
            if m > a && m >= b {
                thin[i] = m;
            }
        }
    }
    // Hysteresis.
    let mut edge = vec![false; w * h];
    let mut queue: VecDeque<usize> = (0..w * h).filter(|&i| thin[i] > options.high).collect();
    for &i in &queue {
        edge[i] = true;
    }
    while let Some(i) = queue.pop_front() {
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        for (dx, dy) in NEIGHBOURS {
            let (nx, ny) = (x + dx, y + dy);
            if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                continue;
            }
            let j = ny as usize * w + nx as usize;
            if !edge[j] && thin[j] > options.low {
                edge[j] = true;
                queue.push_back(j);
            }
        }
    }
    to_image(w, h, |i| if edge[i] { 255 } else { 0 })
}

/// A soft edge map of `image`: bright on strong contours, black on flat regions.
pub fn soft_edge(image: &RgbImage, options: &SoftEdgeOptions) -> RgbImage {
    let (gx, gy) = gradients(image, options.sigma);
    let magnitude: Vec<f32> = gx.iter().zip(&gy).map(|(x, y)| x.hypot(*y)).collect();
    let mut sorted = magnitude.clone();
    sorted.sort_by(f32::total_cmp);
    let reference = sorted
        .get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
        .max(sorted.last().copied().unwrap_or(0.0) * 0.25);
    let gamma = options.gamma.max(0.01);
    let floor = options.floor.clamp(0.0, 0.99);
    to_image(image.width() as usize, image.height() as usize, |i| {
        if reference <= 1e-3 {
            return 0;
        }
        let v = (magnitude[i] / reference).clamp(0.0, 1.0);
        let v = ((v - floor) / (1.0 - floor)).max(0.0).powf(gamma);
        (v * 255.0).round() as u8
    })
}

const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

/// A single-channel f32 image.
struct Plane {
    w: usize,
    h: usize,
    data: Vec<f32>,
}

/// Sobel derivatives of the blurred image: per pixel, those of the channel with the largest
/// L1 magnitude (cv2's rule for colour images).
fn gradients(image: &RgbImage, sigma: f32) -> (Vec<f32>, Vec<f32>) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let channels: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
        .map(|c| {
            let data = image.pixels().map(|p| f32::from(p.0[c])).collect();
            Plane { w, h, data }.blurred(sigma).sobel()
        })
        .collect();
    (0..w * h)
        .map(|i| {
            channels
                .iter()
                .max_by(|a, b| {
                    (a.0[i].abs() + a.1[i].abs()).total_cmp(&(b.0[i].abs() + b.1[i].abs()))
                })
                .map_or((0.0, 0.0), |(gx, gy)| (gx[i], gy[i]))
        })
        .unzip()
}

impl Plane {
    /// The value at (x, y) with replicated borders.
    fn get(&self, x: isize, y: isize) -> f32 {
        let x = x.clamp(0, self.w as isize - 1) as usize;
        let y = y.clamp(0, self.h as isize - 1) as usize;
        self.data[y * self.w + x]
    }

    /// Separable Gaussian blur (radius ⌈3σ⌉, replicated borders); σ ≤ 0 or NaN returns the
    /// plane. The radius is capped at four times the plane's longer side: the replicated border
    /// dominates long before, and an unbounded σ would otherwise allocate without limit.
    fn blurred(self, sigma: f32) -> Plane {
        if sigma.is_nan() || sigma <= 0.0 || self.data.is_empty() {
            return self;
        }
        let limit = 4 * self.w.max(self.h) as isize;
        let radius = ((3.0 * sigma).ceil() as isize).min(limit);
        let kernel: Vec<f32> = (-radius..=radius)
            .map(|d| (-((d * d) as f32) / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f32 = kernel.iter().sum();
        let pass = |p: &Plane, horizontal: bool| -> Plane {
            let mut data = Vec::with_capacity(p.data.len());
            for y in 0..p.h as isize {
                for x in 0..p.w as isize {
                    let sum: f32 = (-radius..=radius)
                        .zip(&kernel)
                        .map(|(d, k)| {
                            k * if horizontal {
                                p.get(x + d, y)
                            } else {
                                p.get(x, y + d)
                            }
                        })
                        .sum();
                    data.push(sum / total);
                }
            }
            Plane { data, ..*p }
        };
        pass(&pass(&self, true), false)
    }

    /// 3×3 Sobel derivatives along x and y (replicated borders).
    fn sobel(&self) -> (Vec<f32>, Vec<f32>) {
        let mut gx = Vec::with_capacity(self.data.len());
        let mut gy = Vec::with_capacity(self.data.len());
        for y in 0..self.h as isize {
            for x in 0..self.w as isize {
                let p = |dx, dy| self.get(x + dx, y + dy);
                gx.push(p(1, -1) + 2.0 * p(1, 0) + p(1, 1) - p(-1, -1) - 2.0 * p(-1, 0) - p(-1, 1));
                gy.push(p(-1, 1) + 2.0 * p(0, 1) + p(1, 1) - p(-1, -1) - 2.0 * p(0, -1) - p(1, -1));
            }
        }
        (gx, gy)
    }
}

/// A grey RGB image from per-pixel values.
fn to_image(w: usize, h: usize, value: impl Fn(usize) -> u8) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let v = value(y as usize * w + x as usize);
        Rgb([v, v, v])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`×`h` image with `inside` where `f(x, y)` holds and `outside` elsewhere.
    fn synthetic(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = f(x, y);
            Rgb([v, v, v])
        })
    }

    fn square() -> RgbImage {
        synthetic(48, 40, |x, y| {
            if (12..36).contains(&x) && (10..30).contains(&y) {
                220
            } else {
                20
            }
        })
    }

    fn on(image: &RgbImage, x: u32, y: u32) -> bool {
        image.get_pixel(x, y).0[0] > 0
    }

    #[test]
    fn canny_outlines_a_square_with_thin_closed_edges() {
        for sigma in [0.0, 1.0] {
            let options = CannyOptions {
                sigma,
                ..CannyOptions::default()
            };
            let edges = canny(&square(), &options);
            assert_eq!(edges.dimensions(), (48, 40));
            assert!(edges.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
            assert!(edges.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            for (x, y) in edges
                .enumerate_pixels()
                .filter(|(_, _, p)| p.0[0] > 0)
                .map(|(x, y, _)| (x, y))
            {
                let near_x = x.abs_diff(12) <= 1 || x.abs_diff(35) <= 1;
                let near_y = y.abs_diff(10) <= 1 || y.abs_diff(29) <= 1;
                assert!(near_x || near_y, "sigma {sigma}: stray edge at ({x}, {y})");
            }
            // Every row through the square crosses its left and right sides exactly once.
            for y in 12..28 {
                let left = (9..16).filter(|&x| on(&edges, x, y)).count();
                let right = (32..39).filter(|&x| on(&edges, x, y)).count();
                assert_eq!((left, right), (1, 1), "sigma {sigma}, row {y}");
            }
            for x in 14..34 {
                let top = (7..14).filter(|&y| on(&edges, x, y)).count();
                assert_eq!(top, 1, "sigma {sigma}, column {x}");
            }
        }
    }

    #[test]
    fn hysteresis_keeps_weak_edges_only_when_connected_to_strong_ones() {
        // A vertical step at x = 24: contrast 200 in the top half, 30 in the bottom half.
        // Sobel L1 gives 4·contrast next to the step: 800 (> high) and 120 (between thresholds).
        let connected = synthetic(48, 32, |x, y| match (x >= 24, y < 16) {
            (false, _) => 0,
            (true, true) => 200,
            (true, false) => 30,
        });
        let edges = canny(&connected, &CannyOptions::default());
        for y in 2..30 {
            assert!((22..26).any(|x| on(&edges, x, y)), "row {y}: edge lost");
        }
        let weak_only = synthetic(48, 32, |x, _| if x >= 24 { 30 } else { 0 });
        let edges = canny(&weak_only, &CannyOptions::default());
        assert!(edges.pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn edges_between_colours_of_equal_brightness_are_found() {
        // Red (luminance 76.2) beside green (76.3).
        let image = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 130, 0])
            }
        });
        let edges = canny(&image, &CannyOptions::default());
        for y in 0..16 {
            assert_eq!((14..18).filter(|&x| on(&edges, x, y)).count(), 1, "row {y}");
        }
        let soft = soft_edge(&image, &SoftEdgeOptions::default());
        assert!(soft.get_pixel(15, 8).0[0] > 200 && soft.get_pixel(4, 8).0[0] == 0);
    }

    #[test]
    fn soft_edges_peak_on_contours_and_fade_away_from_them() {
        let map = soft_edge(&square(), &SoftEdgeOptions::default());
        assert_eq!(map.dimensions(), (48, 40));
        let v = |x, y| map.get_pixel(x, y).0[0];
        assert!(
            v(12, 20) >= 200 || v(11, 20) >= 200,
            "edge {} {}",
            v(11, 20),
            v(12, 20)
        );
        assert_eq!(v(24, 20), 0, "flat inside");
        assert_eq!(v(2, 2), 0, "flat outside");
        // Soft: intermediate values next to the contour, decreasing away from it.
        assert!(v(9, 20) > 0 && v(9, 20) < v(10, 20).max(v(11, 20)));
        assert!(map.pixels().any(|p| p.0[0] > 20 && p.0[0] < 200));
    }

    #[test]
    fn flat_images_give_black_maps() {
        let flat = synthetic(16, 9, |_, _| 128);
        for kind in [AnnotatorKind::Canny, AnnotatorKind::SoftEdge] {
            let map = kind.annotate(&flat);
            assert_eq!(map.dimensions(), (16, 9));
            assert!(map.pixels().all(|p| p.0 == [0, 0, 0]), "{kind}");
        }
        let tiny = synthetic(1, 1, |_, _| 255);
        assert_eq!(AnnotatorKind::SoftEdge.annotate(&tiny).dimensions(), (1, 1));
        assert_eq!(AnnotatorKind::Canny.annotate(&tiny).dimensions(), (1, 1));
    }

    #[test]
    fn any_sigma_is_safe() {
        let image = square();
        for sigma in [f32::NAN, f32::INFINITY, 1e10] {
            let options = SoftEdgeOptions {
                sigma,
                ..Default::default()
            };
            assert_eq!(
                soft_edge(&image, &options).dimensions(),
                (48, 40),
                "{sigma}"
            );
        }
        // A σ far beyond the image blurs it flat: no edges left.
        let flat = canny(
            &image,
            &CannyOptions {
                sigma: 1e10,
                ..Default::default()
            },
        );
        assert!(flat.pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn kinds_parse() {
        assert_eq!(
            "canny".parse::<AnnotatorKind>().unwrap(),
            AnnotatorKind::Canny
        );
        assert_eq!(
            "SoftEdge".parse::<AnnotatorKind>().unwrap(),
            AnnotatorKind::SoftEdge
        );
        let err = "hed".parse::<AnnotatorKind>().unwrap_err().to_string();
        assert!(err.contains("hed") && err.contains("canny"), "{err}");
    }
}
