//! Captioned procedural scenes, and a checker that tells whether a picture shows its caption.
//!
//! A scene ([`Scene`]) is a plain background in one of eleven colour words ([`Colour`]) and
//! one or two shapes ([`ShapeKind`]: circle, square, triangle, star, ring) of three sizes
//! ([`Size`]) in cells of a 3 × 3 grid ([`Position`]), e.g. "a small yellow star at the top
//! left and a green square at the bottom right, on a white background". They are the data of
//! a text-to-image model small enough to train with this library, and the means to measure it:
//!
//! * [`SceneGenerator`] draws scenes from a seed, on either side of a fixed train / held-out
//!   split ([`Scene::split`]: by the hash of the scene's canonical caption);
//! * [`Scene::caption`] / [`Scene::caption_with`] word them ([`Phrasing`]; the grammar is in
//!   the `caption` module's documentation, repeated in `docs/scenes.md`) and [`Scene::parse`]
//!   reads any such caption back;
//! * [`Scene::render`] draws the picture (exact at 64 × 64), and [`Scene::segmentation_map`],
//!   [`Scene::edge_map`], [`Scene::depth_map`] its maps for in-context tasks;
//! * [`check`] reads a picture with fixed rules (nearest palette colour in CIE L\*a\*b\*,
//!   clusters per grid cell) and reports whether the background and each named shape's colour
//!   at its position are right; [`Accuracy`] sums reports into the evaluation's numbers.
//!
//! ```
//! use prompt_diffusion::scenes::{Accuracy, SceneGenerator, Split, check};
//!
//! let mut accuracy = Accuracy::default();
//! for scene in SceneGenerator::with_split(0, Split::HeldOut).take(20) {
//!     let picture = scene.render(64)?;
//!     accuracy.add(&check(&picture, &scene));
//! }
//! assert_eq!(accuracy.background(), 1.0);
//! assert_eq!(accuracy.shape_colour_at_position(), 1.0);
//! # Ok::<(), prompt_diffusion::core::Error>(())
//! ```

mod caption;
mod check;
mod maps;
mod palette;
mod render;
mod scene;

pub use caption::{Phrasing, Template};
pub use check::{
    Accuracy, CellReading, CheckOptions, CheckReport, Reading, ShapeCheck, check, check_with, read,
};
pub use maps::{SEGMENT_COLOURS, background_depth_grey, depth_grey, segment_colour};
pub use palette::{Colour, Lab};
pub use render::CANVAS;
pub use scene::{HELD_OUT_ONE_IN, Position, Scene, SceneGenerator, Shape, ShapeKind, Size, Split};
