//! The scene checker: reads a picture with fixed rules (no learned model) and says whether it
//! shows what a scene's caption asks for.
//!
//! Every pixel is classified as its nearest palette colour in CIE L\*a\*b\*
//! ([`Colour::nearest`]). The picture is divided into the 3 × 3 grid of [`Position`]s.
//!
//! * **Background**: the most frequent colour among the pixels of the cells that the scene
//!   leaves empty (of the whole picture in [`read`]).
//! * **A shape's colour at its position**: in the named cell, the largest 8-connected cluster
//!   of pixels of the named colour must cover between [`CheckOptions::min_fraction`] (3 %) and
//!   [`CheckOptions::max_fraction`] (90 %) of the cell — a clear blob, not a few stray pixels,
//!   and not a cell filled with the colour — and the background colour and the named colour
//!   together at least [`CheckOptions::min_purity`] (70 %) of the cell: a shape on the
//!   background, not a patch in a quilt of colours (a picture of coloured noise has blobs of
//!   every colour). The smallest shape (a small star) covers about 12 % of its cell at 64 × 64;
//!   shapes stay inside their cell.
//!
//! The rules are independent of the image's size, and the nearest-colour reading and the
//! cluster threshold make them robust to blur, resampling and mild noise.

use std::fmt;

use image::RgbImage;

use super::palette::Colour;
use super::scene::{Position, Scene, Shape};

/// Thresholds of the checker.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CheckOptions {
    /// The smallest share of its cell a shape's cluster must cover (default 0.03).
    pub min_fraction: f32,
    /// The largest share of its cell a shape's cluster may cover (default 0.9).
    pub max_fraction: f32,
    /// The smallest share of a shape's cell that the background colour and the shape's colour
    /// must cover together (default 0.7).
    pub min_purity: f32,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            min_fraction: 0.03,
            max_fraction: 0.9,
            min_purity: 0.7,
        }
    }
}

/// What the checker sees in one grid cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellReading {
    /// The colour of the cell's largest cluster of a colour other than the background's, when
    /// that cluster covers at least [`CheckOptions::min_fraction`] of the cell.
    pub colour: Option<Colour>,
    /// The share of the cell that cluster covers (0 when there is none).
    pub fraction: f32,
}

/// The checker's reading of a picture, without a scene to compare with.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The background colour (`None` for an empty image).
    pub background: Option<Colour>,
    /// The share of the counted pixels that have the background colour.
    pub background_fraction: f32,
    /// The nine cells, in reading order ([`Position::ALL`]).
    pub cells: [CellReading; 9],
}

impl Reading {
    /// The rough content: each cell that holds a clear blob, with its colour.
    pub fn blobs(&self) -> impl Iterator<Item = (Position, Colour)> + '_ {
        Position::ALL
            .into_iter()
            .zip(&self.cells)
            .filter_map(|(position, cell)| cell.colour.map(|c| (position, c)))
    }
}

/// The check of one named shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapeCheck {
    /// The shape the scene names.
    pub shape: Shape,
    /// The share of the shape's cell covered by the largest cluster of its colour.
    pub fraction: f32,
    /// The share of the shape's cell that has the background colour read from the picture or
    /// the shape's colour.
    pub purity: f32,
    /// Whether both shares are within the options' bounds: the colour is at the position.
    pub correct: bool,
}

/// The checker's verdict on a picture of a scene.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// What the checker sees (background read from the cells the scene leaves empty).
    pub reading: Reading,
    /// Whether the background has the scene's background colour.
    pub background_correct: bool,
    /// One check per shape of the scene, in the scene's order.
    pub shapes: Vec<ShapeCheck>,
}

impl CheckReport {
    /// Whether the background and every shape are right.
    pub fn all_correct(&self) -> bool {
        self.background_correct && self.shapes.iter().all(|s| s.correct)
    }
}

/// Checks `image` against `scene` with the default [`CheckOptions`].
pub fn check(image: &RgbImage, scene: &Scene) -> CheckReport {
    check_with(image, scene, &CheckOptions::default())
}

/// Checks `image` against `scene`: is the background the scene's, and is each named shape's
/// colour at its named position? (See the module documentation for the rules.) An empty image
/// fails every check.
pub fn check_with(image: &RgbImage, scene: &Scene, options: &CheckOptions) -> CheckReport {
    let classes = Classes::of(image);
    let named: Vec<Position> = scene.shapes.iter().map(|s| s.position).collect();
    let empty_cells: Vec<Position> = Position::ALL
        .into_iter()
        .filter(|p| !named.contains(p))
        .collect();
    let reading = classes.reading(&empty_cells, options);
    let shapes = scene
        .shapes
        .iter()
        .map(|&shape| {
            let fraction = classes
                .largest_cluster(shape.position, |c| c == shape.colour)
                .1;
            let purity = classes.share(shape.position, |c| {
                c == shape.colour || Some(c) == reading.background
            });
            ShapeCheck {
                shape,
                fraction,
                purity,
                correct: (options.min_fraction..=options.max_fraction).contains(&fraction)
                    && purity >= options.min_purity,
            }
        })
        .collect();
    CheckReport {
        background_correct: reading.background == Some(scene.background),
        reading,
        shapes,
    }
}

/// Reads `image` without a scene: the background is the most frequent colour of the whole
/// picture, and each cell reports its largest blob of another colour.
pub fn read(image: &RgbImage) -> Reading {
    Classes::of(image).reading(&Position::ALL, &CheckOptions::default())
}

/// The nearest palette colour of every pixel.
struct Classes {
    width: usize,
    height: usize,
    colours: Vec<Colour>,
}

impl Classes {
    fn of(image: &RgbImage) -> Classes {
        Classes {
            width: image.width() as usize,
            height: image.height() as usize,
            colours: image.pixels().map(|&p| Colour::nearest(p)).collect(),
        }
    }

    /// The pixel ranges of a cell: `[x0, x1) × [y0, y1)`.
    fn cell(&self, position: Position) -> (usize, usize, usize, usize) {
        let (col, row) = (usize::from(position.col()), usize::from(position.row()));
        (
            col * self.width / 3,
            (col + 1) * self.width / 3,
            row * self.height / 3,
            (row + 1) * self.height / 3,
        )
    }

    fn reading(&self, background_cells: &[Position], options: &CheckOptions) -> Reading {
        let mut counts = [0usize; 11];
        for &position in background_cells {
            let (x0, x1, y0, y1) = self.cell(position);
            for y in y0..y1 {
                for colour in &self.colours[y * self.width + x0..y * self.width + x1] {
                    counts[*colour as usize] += 1;
                }
            }
        }
        let total: usize = counts.iter().sum();
        let (best, &count) = counts
            .iter()
            .enumerate()
            .max_by_key(|&(i, &n)| (n, std::cmp::Reverse(i)))
            .unwrap_or((0, &0));
        let background = (total > 0).then(|| Colour::ALL[best]);
        let cells = Position::ALL.map(|position| {
            let (colour, fraction) = self.largest_cluster(position, |c| Some(c) != background);
            match colour {
                Some(colour) if fraction >= options.min_fraction => CellReading {
                    colour: Some(colour),
                    fraction,
                },
                _ => CellReading {
                    colour: None,
                    fraction: 0.0,
                },
            }
        });
        Reading {
            background,
            background_fraction: if total == 0 {
                0.0
            } else {
                count as f32 / total as f32
            },
            cells,
        }
    }

    /// The share of the pixels of the cell at `position` whose colour `wanted` accepts.
    fn share(&self, position: Position, wanted: impl Fn(Colour) -> bool) -> f32 {
        let (x0, x1, y0, y1) = self.cell(position);
        let total = (x1 - x0) * (y1 - y0);
        if total == 0 {
            return 0.0;
        }
        let count = (y0..y1)
            .flat_map(|y| &self.colours[y * self.width + x0..y * self.width + x1])
            .filter(|&&c| wanted(c))
            .count();
        count as f32 / total as f32
    }

    /// The colour and cell share of the largest 8-connected cluster of same-colour pixels
    /// that `wanted` accepts, inside the cell at `position`.
    fn largest_cluster(
        &self,
        position: Position,
        wanted: impl Fn(Colour) -> bool,
    ) -> (Option<Colour>, f32) {
        let (x0, x1, y0, y1) = self.cell(position);
        let (w, h) = (x1 - x0, y1 - y0);
        if w == 0 || h == 0 {
            return (None, 0.0);
        }
        let at = |x: usize, y: usize| self.colours[(y0 + y) * self.width + x0 + x];
        let mut seen = vec![false; w * h];
        let mut best: (Option<Colour>, usize) = (None, 0);
        let mut stack = Vec::new();
        for start in 0..w * h {
            let colour = at(start % w, start / w);
            if seen[start] || !wanted(colour) {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let mut size = 0;
            while let Some(i) = stack.pop() {
                size += 1;
                let (x, y) = (i % w, i / w);
                for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                    for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                        let j = ny * w + nx;
                        if !seen[j] && at(nx, ny) == colour {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            if size > best.1 {
                best = (Some(colour), size);
            }
        }
        (best.0, best.1 as f32 / (w * h) as f32)
    }
}

/// Checker results over many pictures: the evaluation's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accuracy {
    /// Pictures checked.
    pub scenes: usize,
    /// Pictures with the right background colour.
    pub background_correct: usize,
    /// Named shapes checked.
    pub shapes: usize,
    /// Named shapes whose colour was found at their position.
    pub shapes_correct: usize,
    /// Pictures with everything right.
    pub scenes_all_correct: usize,
}

impl Accuracy {
    /// The header of the Markdown table whose rows [`Accuracy`]'s `Display` writes (prefix each
    /// row with `| name ` to fill the first column).
    pub const MARKDOWN_HEADER: &'static str = "| | scenes | background colour | shape colour at position | all correct |\n|---|---:|---:|---:|---:|";

    /// Adds one picture's report.
    pub fn add(&mut self, report: &CheckReport) {
        self.scenes += 1;
        self.background_correct += usize::from(report.background_correct);
        self.shapes += report.shapes.len();
        self.shapes_correct += report.shapes.iter().filter(|s| s.correct).count();
        self.scenes_all_correct += usize::from(report.all_correct());
    }

    /// The share of pictures with the right background (0 when none were checked).
    pub fn background(&self) -> f64 {
        ratio(self.background_correct, self.scenes)
    }

    /// The share of named shapes whose colour is at their position (0 when none were checked).
    pub fn shape_colour_at_position(&self) -> f64 {
        ratio(self.shapes_correct, self.shapes)
    }

    /// The share of pictures with everything right (0 when none were checked).
    pub fn all_correct(&self) -> f64 {
        ratio(self.scenes_all_correct, self.scenes)
    }
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

impl<'a> Extend<&'a CheckReport> for Accuracy {
    fn extend<I: IntoIterator<Item = &'a CheckReport>>(&mut self, reports: I) {
        reports.into_iter().for_each(|r| self.add(r));
    }
}

impl FromIterator<CheckReport> for Accuracy {
    fn from_iter<I: IntoIterator<Item = CheckReport>>(reports: I) -> Self {
        let mut accuracy = Accuracy::default();
        reports.into_iter().for_each(|r| accuracy.add(&r));
        accuracy
    }
}

impl fmt::Display for Accuracy {
    /// A Markdown table row without its first column: `| 200 | 95.0 % (190/200) | … |`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {} | {:.1} % ({}/{}) | {:.1} % ({}/{}) | {:.1} % ({}/{}) |",
            self.scenes,
            100.0 * self.background(),
            self.background_correct,
            self.scenes,
            100.0 * self.shape_colour_at_position(),
            self.shapes_correct,
            self.shapes,
            100.0 * self.all_correct(),
            self.scenes_all_correct,
            self.scenes,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenes::SceneGenerator;

    #[test]
    fn the_renderer_passes_at_several_sides() {
        for scene in SceneGenerator::new(1).take(300) {
            for side in [64, 96, 48] {
                let report = check(&scene.render(side).unwrap(), &scene);
                assert!(
                    report.all_correct(),
                    "{side}: {} {report:?}",
                    scene.caption()
                );
            }
        }
    }

    #[test]
    fn read_reports_background_and_blobs() {
        let scene = Scene::parse(
            "a small yellow star at the top left and a green square at the bottom right, on a white background",
        )
        .unwrap();
        let reading = read(&scene.render(64).unwrap());
        assert_eq!(reading.background, Some(Colour::White));
        let blobs: Vec<_> = reading.blobs().collect();
        assert_eq!(
            blobs,
            [
                (Position::TOP_LEFT, Colour::Yellow),
                (Position::BOTTOM_RIGHT, Colour::Green)
            ]
        );
    }

    #[test]
    fn empty_and_uniform_images_fail() {
        let scene = Scene::parse("a red circle on a blue background").unwrap();
        let report = check(&RgbImage::new(0, 0), &scene);
        assert!(!report.background_correct && !report.shapes[0].correct);
        let report = check(&RgbImage::new(2, 2), &scene);
        assert!(!report.all_correct());
        let red = RgbImage::from_pixel(64, 64, Colour::Red.rgb());
        assert!(
            !check(&red, &scene).shapes[0].correct,
            "a filled cell is not a shape"
        );
    }

    #[test]
    fn accuracy_counts_and_formats() {
        let scene = Scene::parse(
            "a red circle at the top and a pink ring at the left, on a blue background",
        )
        .unwrap();
        let good = check(&scene.render(64).unwrap(), &scene);
        let bad = check(&RgbImage::from_pixel(64, 64, Colour::Blue.rgb()), &scene);
        let accuracy: Accuracy = [good, bad].into_iter().collect();
        assert_eq!(
            (
                accuracy.scenes,
                accuracy.background_correct,
                accuracy.shapes,
                accuracy.shapes_correct
            ),
            (2, 2, 4, 2)
        );
        assert_eq!(
            accuracy.to_string(),
            "| 2 | 100.0 % (2/2) | 50.0 % (2/4) | 50.0 % (1/2) |"
        );
        assert_eq!(Accuracy::default().background(), 0.0);
    }
}
