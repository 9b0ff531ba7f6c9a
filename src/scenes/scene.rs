//! What a scene holds (shapes, sizes, grid positions, a background) and the seeded generator
//! with its train / held-out split.

use std::fmt;

use prompt_diffusion_core::{Error, Result};

use super::caption::Phrasing;
use super::palette::Colour;

/// The kinds of shape a scene can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeKind {
    /// A filled disc.
    Circle,
    /// A filled axis-aligned square.
    Square,
    /// A filled equilateral triangle, apex up.
    Triangle,
    /// A filled five-pointed star, one point up.
    Star,
    /// A disc with a hole of 0.4 of its radius (the background shows through).
    Ring,
}

impl ShapeKind {
    /// Every kind, in declaration order.
    pub const ALL: [ShapeKind; 5] = [
        ShapeKind::Circle,
        ShapeKind::Square,
        ShapeKind::Triangle,
        ShapeKind::Star,
        ShapeKind::Ring,
    ];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Circle => "circle",
            ShapeKind::Square => "square",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Star => "star",
            ShapeKind::Ring => "ring",
        }
    }

    /// The kind named by a (lower-case) caption word.
    pub fn from_word(word: &str) -> Option<ShapeKind> {
        ShapeKind::ALL.into_iter().find(|k| k.name() == word)
    }
}

prompt_diffusion_core::named_values!(ShapeKind: "shape");

/// How large a shape is drawn. Captions say `small` and `large`; a medium shape has no size
/// word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Size {
    /// Radius 6 px on the 64 × 64 canvas.
    Small,
    /// Radius 7.75 px; the size of a shape whose caption names none.
    #[default]
    Medium,
    /// Radius 9.5 px (the shape nearly fills its grid cell of 21⅓ px).
    Large,
}

impl Size {
    /// Every size, smallest first.
    pub const ALL: [Size; 3] = [Size::Small, Size::Medium, Size::Large];

    /// The radius of the shape's bounding circle, in pixels of the 64 × 64 canvas.
    pub fn radius(self) -> f32 {
        match self {
            Size::Small => 6.0,
            Size::Medium => 7.75,
            Size::Large => 9.5,
        }
    }

    /// The caption word, `None` for [`Size::Medium`] (which captions leave unsaid).
    pub fn word(self) -> Option<&'static str> {
        match self {
            Size::Small => Some("small"),
            Size::Medium => None,
            Size::Large => Some("large"),
        }
    }

    /// The size named by a (lower-case) caption word (`small`, `medium`, `large`).
    pub fn from_word(word: &str) -> Option<Size> {
        match word {
            "small" => Some(Size::Small),
            "medium" => Some(Size::Medium),
            "large" => Some(Size::Large),
            _ => None,
        }
    }
}

/// A cell of the 3 × 3 grid the canvas is divided into; a shape is centred in its cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    row: u8,
    col: u8,
}

impl Position {
    /// Top left.
    pub const TOP_LEFT: Position = Position { row: 0, col: 0 };
    /// Top (centre column).
    pub const TOP: Position = Position { row: 0, col: 1 };
    /// Top right.
    pub const TOP_RIGHT: Position = Position { row: 0, col: 2 };
    /// Left (middle row).
    pub const LEFT: Position = Position { row: 1, col: 0 };
    /// The centre.
    pub const CENTRE: Position = Position { row: 1, col: 1 };
    /// Right (middle row).
    pub const RIGHT: Position = Position { row: 1, col: 2 };
    /// Bottom left.
    pub const BOTTOM_LEFT: Position = Position { row: 2, col: 0 };
    /// Bottom (centre column).
    pub const BOTTOM: Position = Position { row: 2, col: 1 };
    /// Bottom right.
    pub const BOTTOM_RIGHT: Position = Position { row: 2, col: 2 };

    /// The nine cells in reading order (row by row, left to right).
    pub const ALL: [Position; 9] = [
        Position::TOP_LEFT,
        Position::TOP,
        Position::TOP_RIGHT,
        Position::LEFT,
        Position::CENTRE,
        Position::RIGHT,
        Position::BOTTOM_LEFT,
        Position::BOTTOM,
        Position::BOTTOM_RIGHT,
    ];

    /// The cell at `row` and `col` (each 0, 1 or 2; larger values are clamped to 2).
    pub fn new(row: u8, col: u8) -> Position {
        Position {
            row: row.min(2),
            col: col.min(2),
        }
    }

    /// The row, 0 (top) to 2 (bottom).
    pub fn row(self) -> u8 {
        self.row
    }

    /// The column, 0 (left) to 2 (right).
    pub fn col(self) -> u8 {
        self.col
    }

    /// The index in [`Position::ALL`] (reading order).
    pub fn index(self) -> usize {
        usize::from(self.row) * 3 + usize::from(self.col)
    }

    /// The words naming the cell: `top left`, `top`, …, `centre`, …, `bottom right`.
    pub fn words(self) -> &'static str {
        [
            "top left",
            "top",
            "top right",
            "left",
            "centre",
            "right",
            "bottom left",
            "bottom",
            "bottom right",
        ][self.index()]
    }

    /// The preposition captions use before `the` and [`Position::words`]: `on` for the left
    /// and right of the middle row, `in` for the centre, `at` elsewhere.
    pub fn preposition(self) -> &'static str {
        match (self.row, self.col) {
            (1, 1) => "in",
            (1, _) => "on",
            _ => "at",
        }
    }

    /// The cell's centre in pixels of a `side` × `side` canvas.
    pub fn centre(self, side: f32) -> (f32, f32) {
        let cell = side / 3.0;
        (
            (f32::from(self.col) + 0.5) * cell,
            (f32::from(self.row) + 0.5) * cell,
        )
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.words())
    }
}

/// One shape of a scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    /// What is drawn.
    pub kind: ShapeKind,
    /// Its colour (never the scene's background colour in a valid scene).
    pub colour: Colour,
    /// How large it is.
    pub size: Size,
    /// The grid cell it is centred in.
    pub position: Position,
}

/// A captioned scene: a plain background and one or two shapes.
///
/// A valid scene ([`Scene::validate`]) has one or two shapes, no two in the same grid cell,
/// and no shape of the background's colour. The shapes are listed in the order the caption
/// names them; the generator lists them in reading order of their cells.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scene {
    /// The background colour.
    pub background: Colour,
    /// The shapes, in caption order.
    pub shapes: Vec<Shape>,
}

/// Which side of the train / held-out split a scene belongs to (see [`Scene::split`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Scenes to train on (about nine in ten).
    Train,
    /// Scenes kept out of training, to evaluate on (about one in ten).
    HeldOut,
}

/// One scene in [`HELD_OUT_ONE_IN`] is held out.
pub const HELD_OUT_ONE_IN: u64 = 10;

impl Scene {
    /// A scene, checked with [`Scene::validate`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the scene is not valid.
    pub fn new(background: Colour, shapes: Vec<Shape>) -> Result<Scene> {
        let scene = Scene { background, shapes };
        scene.validate()?;
        Ok(scene)
    }

    /// Checks that the scene has one or two shapes, in distinct cells, none of the background
    /// colour.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the rule that is broken.
    pub fn validate(&self) -> Result<()> {
        let n = self.shapes.len();
        if !(1..=2).contains(&n) {
            return Err(Error::invalid_input(
                "scene",
                format!("a scene has one or two shapes, this one has {n}"),
            ));
        }
        for (i, shape) in self.shapes.iter().enumerate() {
            if shape.colour == self.background {
                return Err(Error::invalid_input(
                    "scene",
                    format!(
                        "the {} {} has the background's colour",
                        shape.colour, shape.kind
                    ),
                ));
            }
            if self.shapes[..i]
                .iter()
                .any(|s| s.position == shape.position)
            {
                return Err(Error::invalid_input(
                    "scene",
                    format!("two shapes are in the same cell ({})", shape.position),
                ));
            }
        }
        Ok(())
    }

    /// The caption that identifies the scene whatever its phrasing: the canonical phrasing
    /// of the scene with its shapes in reading order (so the same picture always has the same
    /// key).
    pub fn key(&self) -> String {
        let mut sorted = self.clone();
        sorted.shapes.sort_by_key(|s| s.position);
        sorted.caption_with(Phrasing::CANONICAL)
    }

    /// The scene's side of the split: held out when the 64-bit FNV-1a hash of [`Scene::key`],
    /// passed through SplitMix64's finaliser, is divisible by [`HELD_OUT_ONE_IN`]. Every
    /// phrasing and shape order of a scene is on the same side, so held-out captions never
    /// describe a training picture.
    pub fn split(&self) -> Split {
        if mix64(fnv1a(self.key().as_bytes())).is_multiple_of(HELD_OUT_ONE_IN) {
            Split::HeldOut
        } else {
            Split::Train
        }
    }
}

/// 64-bit FNV-1a.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64's finaliser.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64: a small, fixed pseudo-random stream (the generator's output must not change
/// with a dependency's version).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A uniform integer in `0..n` (`n` > 0; the modulo bias is below 2⁻⁵⁸ for these `n`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A seeded, endless stream of valid scenes.
///
/// Each scene has a uniformly drawn background; one shape (probability ½) or two; uniformly
/// drawn kinds, sizes and colours other than the background's; a lone shape sits in the centre
/// with probability 0.4 and otherwise in a uniformly drawn cell, two shapes in two distinct
/// uniformly drawn cells, listed in reading order. The same seed and split give the same
/// scenes on every machine.
///
/// ```
/// use prompt_diffusion::scenes::{SceneGenerator, Split};
/// let held_out: Vec<_> = SceneGenerator::with_split(7, Split::HeldOut).take(3).collect();
/// assert!(held_out.iter().all(|s| s.split() == Split::HeldOut));
/// ```
#[derive(Debug, Clone)]
pub struct SceneGenerator {
    rng: SplitMix64,
    split: Option<Split>,
}

impl SceneGenerator {
    /// All scenes, both sides of the split, drawn from `seed`.
    pub fn new(seed: u64) -> SceneGenerator {
        SceneGenerator {
            rng: SplitMix64(seed),
            split: None,
        }
    }

    /// Only the scenes of `split` (the others are drawn and skipped).
    pub fn with_split(seed: u64, split: Split) -> SceneGenerator {
        SceneGenerator {
            rng: SplitMix64(seed),
            split: Some(split),
        }
    }

    /// The next scene and a caption for it in a phrasing drawn from the same stream (so the
    /// same picture is seen with several phrasings in training).
    pub fn next_captioned(&mut self) -> (Scene, String) {
        let scene = self.next_scene();
        let phrasing = self.rng.pick(&Phrasing::ALL);
        let caption = scene.caption_with(phrasing);
        (scene, caption)
    }

    /// The next scene of the generator's split.
    pub fn next_scene(&mut self) -> Scene {
        loop {
            let scene = self.draw();
            if self.split.is_none_or(|split| scene.split() == split) {
                return scene;
            }
        }
    }

    fn draw(&mut self) -> Scene {
        let rng = &mut self.rng;
        let background = rng.pick(&Colour::ALL);
        let colours: Vec<Colour> = Colour::ALL
            .into_iter()
            .filter(|&c| c != background)
            .collect();
        let positions = if rng.below(2) == 0 {
            if rng.below(10) < 4 {
                vec![Position::CENTRE]
            } else {
                vec![rng.pick(&Position::ALL)]
            }
        } else {
            let first = rng.below(9);
            let second = (first + 1 + rng.below(8)) % 9;
            vec![
                Position::ALL[first.min(second)],
                Position::ALL[first.max(second)],
            ]
        };
        let shapes = positions
            .into_iter()
            .map(|position| Shape {
                kind: rng.pick(&ShapeKind::ALL),
                colour: rng.pick(&colours),
                size: rng.pick(&Size::ALL),
                position,
            })
            .collect();
        Scene { background, shapes }
    }
}

impl Iterator for SceneGenerator {
    type Item = Scene;

    /// The next scene; the stream never ends.
    fn next(&mut self) -> Option<Scene> {
        Some(self.next_scene())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_scenes_are_valid_and_shapes_in_reading_order() {
        for scene in SceneGenerator::new(3).take(2000) {
            scene.validate().unwrap();
            assert!(
                scene
                    .shapes
                    .windows(2)
                    .all(|w| w[0].position < w[1].position)
            );
        }
    }

    #[test]
    fn validate_names_the_broken_rule() {
        let shape = Shape {
            kind: ShapeKind::Circle,
            colour: Colour::Red,
            size: Size::Small,
            position: Position::TOP,
        };
        let msg = |r: Result<Scene>| r.unwrap_err().to_string();
        assert!(msg(Scene::new(Colour::Red, vec![shape])).contains("background's colour"));
        assert!(msg(Scene::new(Colour::Blue, vec![shape, shape])).contains("same cell"));
        assert!(msg(Scene::new(Colour::Blue, vec![])).contains("one or two"));
        assert!(Scene::new(Colour::Blue, vec![shape]).is_ok());
    }

    #[test]
    fn split_ignores_shape_order_and_is_about_one_in_ten() {
        let mut held = 0;
        for mut scene in SceneGenerator::new(11).take(5000) {
            let split = scene.split();
            held += usize::from(split == Split::HeldOut);
            scene.shapes.reverse();
            assert_eq!(scene.split(), split);
        }
        assert!((350..650).contains(&held), "{held} of 5000 held out");
    }

    #[test]
    fn positions_have_words_and_centres() {
        assert_eq!(
            Position::ALL.map(Position::index),
            std::array::from_fn(|i| i)
        );
        assert_eq!(Position::new(5, 9), Position::BOTTOM_RIGHT);
        assert_eq!(Position::CENTRE.centre(64.0), (32.0, 32.0));
        assert_eq!(Position::LEFT.preposition(), "on");
        assert_eq!(Position::TOP_LEFT.to_string(), "top left");
    }
}
