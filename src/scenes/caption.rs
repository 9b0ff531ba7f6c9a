//! Plain-English captions of scenes and their parser.
//!
//! # Grammar
//!
//! ```text
//! caption    = shapes [","] " on " background                   (background last)
//!            | background " with " shapes                       (background first)
//!            | shapes " against " background                    (against)
//! background = ("a" | "an") " " COLOUR " background"
//! shapes     = shape [" and " shape]
//! shape      = ("a" | "an") [SIZE] COLOUR KIND [" " PREP " the " POSITION]
//!                                   ("an" before a vowel: "an orange", "a large orange")
//! SIZE       = "small" | "large"                     (a medium shape has no size word)
//! COLOUR     = "red" | "orange" | "yellow" | "green" | "blue" | "purple" | "pink" | "brown"
//!            | "grey" | "white" | "black"
//! KIND       = "circle" | "square" | "triangle" | "star" | "ring"
//! POSITION   = "top left" | "top" | "top right" | "left" | "centre" | "right"
//!            | "bottom left" | "bottom" | "bottom right"
//! PREP       = "in" (centre) | "on" (left, right) | "at" (the others)
//! ```
//!
//! Every shape's position is said, except that of a lone shape in the centre, which a
//! phrasing may leave out ("a red circle on a blue background"). The comma of the first form
//! appears when a position is said. [`Scene::parse`] reads every phrasing back, and is lenient
//! about case, punctuation, `gray`, `center`/`middle`, `medium`, `top centre` and the like.

use prompt_diffusion_core::{Error, Result};

use super::palette::Colour;
use super::scene::{Position, Scene, Shape, ShapeKind, Size, fnv1a, mix64};

/// Where the background is named in a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    /// "a red circle on a blue background".
    BackgroundLast,
    /// "a blue background with a red circle".
    BackgroundFirst,
    /// "a red circle against a blue background".
    Against,
}

/// A way of wording a scene's caption; every phrasing names the same colours, kinds, sizes and
/// positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Phrasing {
    /// Where the background is named.
    pub template: Template,
    /// Whether a lone shape in the centre is said to be `in the centre` (the positions of
    /// other shapes are always said).
    pub say_centre: bool,
}

impl Phrasing {
    /// The phrasing of [`Scene::key`]: background last, a lone centred shape's position unsaid.
    pub const CANONICAL: Phrasing = Phrasing {
        template: Template::BackgroundLast,
        say_centre: false,
    };

    /// Every phrasing.
    pub const ALL: [Phrasing; 6] = [
        Phrasing::CANONICAL,
        Phrasing {
            template: Template::BackgroundLast,
            say_centre: true,
        },
        Phrasing {
            template: Template::BackgroundFirst,
            say_centre: false,
        },
        Phrasing {
            template: Template::BackgroundFirst,
            say_centre: true,
        },
        Phrasing {
            template: Template::Against,
            say_centre: false,
        },
        Phrasing {
            template: Template::Against,
            say_centre: true,
        },
    ];
}

impl Scene {
    /// The scene's caption, in a phrasing chosen by the hash of [`Scene::key`] (so the same
    /// scene always gets the same caption, and the phrasings are spread over the scenes).
    pub fn caption(&self) -> String {
        let hash = mix64(fnv1a(self.key().as_bytes()) ^ 0x5eed);
        self.caption_with(Phrasing::ALL[(hash % Phrasing::ALL.len() as u64) as usize])
    }

    /// The scene's caption in `phrasing` (see the module's grammar).
    pub fn caption_with(&self, phrasing: Phrasing) -> String {
        let lone_centre = self.shapes.len() == 1 && self.shapes[0].position == Position::CENTRE;
        let say_position = !lone_centre || phrasing.say_centre;
        let phrases: Vec<String> = self
            .shapes
            .iter()
            .map(|shape| shape_phrase(shape, say_position))
            .collect();
        let shapes = join_and(&phrases);
        let background = format!("{} {}", article(self.background.name()), self.background);
        match phrasing.template {
            Template::BackgroundLast => {
                let sep = if say_position { ", " } else { " " };
                format!("{shapes}{sep}on {background} background")
            }
            Template::BackgroundFirst => format!("{background} background with {shapes}"),
            Template::Against => format!("{shapes} against {background} background"),
        }
    }

    /// Reads a caption back into its scene (any phrasing of the grammar, and some variants).
    /// A shape without a position is in the centre, which only a lone shape may be; a shape
    /// without a size word is [`Size::Medium`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (`what` = `caption`) when the caption names no background or
    /// no shape, has a colour or size word that belongs to nothing, names a position in two
    /// contradicting ways, leaves a position unsaid beside another shape, or describes an
    /// invalid scene ([`Scene::validate`]).
    pub fn parse(caption: &str) -> Result<Scene> {
        let fail =
            |reason: String| Error::invalid_input("caption", format!("`{caption}`: {reason}"));
        let lower = caption.to_lowercase();
        let tokens: Vec<&str> = lower
            .split(|c: char| !c.is_alphabetic())
            .filter(|t| !t.is_empty())
            .collect();
        let mut used = vec![false; tokens.len()];

        let backgrounds: Vec<usize> = (0..tokens.len())
            .filter(|&i| tokens[i] == "background")
            .collect();
        let background = match backgrounds[..] {
            [i] => {
                let colour = i
                    .checked_sub(1)
                    .and_then(|j| Colour::from_word(tokens[j]))
                    .ok_or_else(|| fail("no colour word before `background`".into()))?;
                used[i] = true;
                used[i - 1] = true;
                colour
            }
            [] => return Err(fail("it names no background".into())),
            _ => return Err(fail("it names more than one background".into())),
        };

        let mut shapes: Vec<(Shape, bool)> = Vec::new();
        for i in 0..tokens.len() {
            let Some(kind) = ShapeKind::from_word(tokens[i]) else {
                continue;
            };
            let colour = i
                .checked_sub(1)
                .filter(|&j| !used[j])
                .and_then(|j| Colour::from_word(tokens[j]))
                .ok_or_else(|| fail(format!("no colour word before `{kind}`")))?;
            used[i] = true;
            used[i - 1] = true;
            let mut size = Size::Medium;
            if let Some(j) = i.checked_sub(2)
                && let Some(s) = Size::from_word(tokens[j])
            {
                size = s;
                used[j] = true;
            }
            let position = read_position(&tokens, i + 1).map_err(|r| fail(r.to_string()))?;
            shapes.push((
                Shape {
                    kind,
                    colour,
                    size,
                    position: position.unwrap_or(Position::CENTRE),
                },
                position.is_some(),
            ));
        }
        if let Some(i) = (0..tokens.len()).find(|&i| {
            !used[i]
                && (Colour::from_word(tokens[i]).is_some() || Size::from_word(tokens[i]).is_some())
        }) {
            return Err(fail(format!("`{}` belongs to no shape", tokens[i])));
        }
        if shapes.len() > 1 && shapes.iter().any(|(_, said)| !said) {
            return Err(fail(
                "a shape has no position (only a lone shape may leave it unsaid)".into(),
            ));
        }
        let shapes: Vec<Shape> = shapes.into_iter().map(|(shape, _)| shape).collect();
        if shapes.is_empty() {
            return Err(fail("it names no shape".into()));
        }
        Scene::new(background, shapes).map_err(|e| fail(e.to_string()))
    }
}

/// "a small red circle at the top left".
fn shape_phrase(shape: &Shape, say_position: bool) -> String {
    let mut words: Vec<&str> = Vec::with_capacity(8);
    words.extend(shape.size.word());
    words.push(shape.colour.name());
    words.push(shape.kind.name());
    let mut phrase = format!("{} {}", article(words[0]), words.join(" "));
    if say_position {
        let position = shape.position;
        phrase.push_str(&format!(
            " {} the {}",
            position.preposition(),
            position.words()
        ));
    }
    phrase
}

/// The indefinite article before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "a", "a and b", "a, b and c".
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The position phrase starting at `tokens[start]` ("at the top left", "in the centre", …),
/// if there is one.
fn read_position(
    tokens: &[&str],
    start: usize,
) -> std::result::Result<Option<Position>, &'static str> {
    let (Some(prep), Some(the)) = (tokens.get(start), tokens.get(start + 1)) else {
        return Ok(None);
    };
    if !matches!(*prep, "at" | "on" | "in") || *the != "the" {
        return Ok(None);
    }
    let (mut row, mut col) = (None, None);
    let mut any = false;
    for word in tokens.iter().skip(start + 2) {
        let (slot, value) = match *word {
            "top" => (&mut row, 0),
            "bottom" => (&mut row, 2),
            "left" => (&mut col, 0),
            "right" => (&mut col, 2),
            "centre" | "center" | "middle" => {
                any = true;
                continue;
            }
            _ => break,
        };
        if slot.is_some_and(|v| v != value) {
            return Err("it names a position in two contradicting ways");
        }
        *slot = Some(value);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(Position::new(row.unwrap_or(1), col.unwrap_or(1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenes::SceneGenerator;

    fn scene(caption: &str) -> Scene {
        Scene::parse(caption).unwrap()
    }

    #[test]
    fn issue_examples_parse() {
        let s = scene("a red circle on a blue background");
        assert_eq!(s.background, Colour::Blue);
        assert_eq!(
            s.shapes,
            [Shape {
                kind: ShapeKind::Circle,
                colour: Colour::Red,
                size: Size::Medium,
                position: Position::CENTRE
            }]
        );
        assert_eq!(
            s.caption_with(Phrasing::CANONICAL),
            "a red circle on a blue background"
        );

        let text = "a small yellow star at the top left and a green square at the bottom right, on a white background";
        let s = scene(text);
        assert_eq!(s.background, Colour::White);
        assert_eq!(s.shapes[0].size, Size::Small);
        assert_eq!(s.shapes[0].position, Position::TOP_LEFT);
        assert_eq!(s.shapes[1].kind, ShapeKind::Square);
        assert_eq!(s.shapes[1].position, Position::BOTTOM_RIGHT);
        assert_eq!(s.caption_with(Phrasing::CANONICAL), text);
    }

    #[test]
    fn every_phrasing_round_trips() {
        for s in SceneGenerator::new(5).take(500) {
            for phrasing in Phrasing::ALL {
                let caption = s.caption_with(phrasing);
                assert_eq!(Scene::parse(&caption).unwrap(), s, "{caption}");
            }
            assert_eq!(Scene::parse(&s.caption()).unwrap(), s);
        }
    }

    #[test]
    fn articles_and_prepositions() {
        let s = scene(
            "A large orange ring on the left and an orange triangle in the centre against a grey background.",
        );
        assert_eq!(
            s.caption_with(Phrasing::ALL[4]),
            "a large orange ring on the left and an orange triangle in the centre against a grey background"
        );
        let s = scene("an orange star in the centre on a black background");
        assert_eq!(
            s.caption_with(Phrasing::ALL[2]),
            "a black background with an orange star"
        );
        let s = scene("a black star on an orange background");
        assert_eq!(
            s.caption_with(Phrasing::ALL[2]),
            "an orange background with a black star"
        );
        assert_eq!(
            s.caption_with(Phrasing::ALL[5]),
            "a black star in the centre against an orange background"
        );
    }

    #[test]
    fn lenient_variants() {
        let s = scene(
            "a gray background with a medium pink circle at the top-center and a blue ring at the middle left",
        );
        assert_eq!(s.background, Colour::Grey);
        assert_eq!(s.shapes[0].position, Position::TOP);
        assert_eq!(s.shapes[1].position, Position::LEFT);
        assert_eq!(
            scene("a red star at the top right corner on a blue background").shapes[0].position,
            Position::TOP_RIGHT
        );
    }

    #[test]
    fn bad_captions_are_errors_naming_the_caption() {
        for (text, why) in [
            ("a red circle", "no background"),
            ("a blue background", "no shape"),
            (
                "a circle on a blue background",
                "no colour word before `circle`",
            ),
            (
                "a red and green circle on a blue background",
                "`red` belongs to no shape",
            ),
            (
                "a red circle and a green square on a blue background",
                "no position",
            ),
            (
                "a red circle at the top bottom on a blue background",
                "contradicting",
            ),
            ("a red circle on a red background", "background's colour"),
            (
                "a red circle at the top and a green star at the top on a blue background",
                "same cell",
            ),
            (
                "a red circle on a blue background and a green background",
                "more than one",
            ),
            (
                "a red circle on a background",
                "no colour word before `background`",
            ),
        ] {
            let err = Scene::parse(text).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(text), "{text}: {err}");
        }
    }
}
