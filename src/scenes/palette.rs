//! The colour words of the scenes, their canonical sRGB values, and the nearest-colour rule the
//! checker reads images with (CIE L\*a\*b\*, D65).

use std::fmt;
use std::str::FromStr;

use image::Rgb;
use prompt_diffusion_core::{Error, Result};

/// A colour word of the scenes' captions, drawn with one canonical sRGB value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Colour {
    /// `red`, sRGB (220, 40, 40).
    Red,
    /// `orange`, sRGB (245, 140, 30).
    Orange,
    /// `yellow`, sRGB (250, 220, 40).
    Yellow,
    /// `green`, sRGB (40, 165, 60).
    Green,
    /// `blue`, sRGB (40, 80, 220).
    Blue,
    /// `purple`, sRGB (130, 50, 180).
    Purple,
    /// `pink`, sRGB (250, 150, 205).
    Pink,
    /// `brown`, sRGB (120, 70, 30).
    Brown,
    /// `grey` (also read as `gray`), sRGB (128, 128, 128).
    Grey,
    /// `white`, sRGB (245, 245, 245).
    White,
    /// `black`, sRGB (20, 20, 20).
    Black,
}

impl Colour {
    /// Every colour, in declaration order.
    pub const ALL: [Colour; 11] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
        Colour::Brown,
        Colour::Grey,
        Colour::White,
        Colour::Black,
    ];

    /// The caption word.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Pink => "pink",
            Colour::Brown => "brown",
            Colour::Grey => "grey",
            Colour::White => "white",
            Colour::Black => "black",
        }
    }

    /// The canonical sRGB value the renderer paints.
    pub fn rgb(self) -> Rgb<u8> {
        Rgb(match self {
            Colour::Red => [220, 40, 40],
            Colour::Orange => [245, 140, 30],
            Colour::Yellow => [250, 220, 40],
            Colour::Green => [40, 165, 60],
            Colour::Blue => [40, 80, 220],
            Colour::Purple => [130, 50, 180],
            Colour::Pink => [250, 150, 205],
            Colour::Brown => [120, 70, 30],
            Colour::Grey => [128, 128, 128],
            Colour::White => [245, 245, 245],
            Colour::Black => [20, 20, 20],
        })
    }

    /// The colour named by a (lower-case) caption word, `gray` included; `None` for other words.
    pub fn from_word(word: &str) -> Option<Colour> {
        if word == "gray" {
            return Some(Colour::Grey);
        }
        Colour::ALL.into_iter().find(|c| c.name() == word)
    }

    /// The palette colour nearest to `pixel` in CIE L\*a\*b\* (Euclidean distance, ΔE76).
    pub fn nearest(pixel: Rgb<u8>) -> Colour {
        let lab = Lab::from_rgb(pixel);
        let mut best = (Colour::Red, f32::INFINITY);
        for (colour, reference) in Colour::ALL.into_iter().zip(palette_lab()) {
            let d = lab.distance_squared(reference);
            if d < best.1 {
                best = (colour, d);
            }
        }
        best.0
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Colour {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Colour::from_word(&s.to_ascii_lowercase()).ok_or_else(|| {
            Error::invalid_input(
                "colour",
                format!(
                    "`{s}` is not one of {}",
                    Colour::ALL.map(Colour::name).join(", ")
                ),
            )
        })
    }
}

/// A colour in CIE L\*a\*b\* (D65 white), the space [`Colour::nearest`] measures distances in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lab {
    /// Lightness, 0 (black) to 100 (white).
    pub l: f32,
    /// Green (−) to red (+).
    pub a: f32,
    /// Blue (−) to yellow (+).
    pub b: f32,
}

impl Lab {
    /// Converts an 8-bit sRGB pixel (IEC 61966-2-1 transfer curve, D65 XYZ matrix).
    pub fn from_rgb(pixel: Rgb<u8>) -> Lab {
        let [r, g, b] = pixel.0.map(|v| SRGB_TO_LINEAR[usize::from(v)]);
        let x = (0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b) / 0.950_47;
        let y = 0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b;
        let z = (0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b) / 1.088_83;
        let (fx, fy, fz) = (lab_f(x), lab_f(y), lab_f(z));
        Lab {
            l: 116.0 * fy - 16.0,
            a: 500.0 * (fx - fy),
            b: 200.0 * (fy - fz),
        }
    }

    /// The squared Euclidean distance (ΔE76²) to `other`.
    pub fn distance_squared(self, other: Lab) -> f32 {
        (self.l - other.l).powi(2) + (self.a - other.a).powi(2) + (self.b - other.b).powi(2)
    }
}

/// The sRGB transfer curve as a table over the 256 byte values.
static SRGB_TO_LINEAR: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| {
        let v = i as f32 / 255.0;
        if v <= 0.040_45 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    })
});

/// The palette in L\*a\*b\*, in [`Colour::ALL`] order.
fn palette_lab() -> [Lab; 11] {
    static PALETTE: std::sync::LazyLock<[Lab; 11]> =
        std::sync::LazyLock::new(|| Colour::ALL.map(|c| Lab::from_rgb(c.rgb())));
    *PALETTE
}

fn lab_f(t: f32) -> f32 {
    const DELTA: f32 = 6.0 / 29.0;
    if t > DELTA * DELTA * DELTA {
        t.cbrt()
    } else {
        t / (3.0 * DELTA * DELTA) + 4.0 / 29.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_colour_is_its_own_nearest_and_words_round_trip() {
        for colour in Colour::ALL {
            assert_eq!(Colour::nearest(colour.rgb()), colour);
            assert_eq!(Colour::from_word(colour.name()), Some(colour));
            assert_eq!(colour.to_string().parse::<Colour>().unwrap(), colour);
        }
        assert_eq!("Gray".parse::<Colour>().unwrap(), Colour::Grey);
        assert!("teal".parse::<Colour>().is_err());
        assert_eq!(Colour::from_word("background"), None);
    }

    #[test]
    fn palette_colours_are_far_apart() {
        let lab = palette_lab();
        for i in 0..lab.len() {
            for j in i + 1..lab.len() {
                let d = lab[i].distance_squared(lab[j]).sqrt();
                assert!(
                    d > 25.0,
                    "{} and {}: ΔE {d}",
                    Colour::ALL[i],
                    Colour::ALL[j]
                );
            }
        }
    }

    #[test]
    fn lab_of_white_and_black() {
        let white = Lab::from_rgb(Rgb([255, 255, 255]));
        assert!((white.l - 100.0).abs() < 0.01 && white.a.abs() < 0.01 && white.b.abs() < 0.01);
        let black = Lab::from_rgb(Rgb([0, 0, 0]));
        assert!(black.l.abs() < 1e-4);
    }

    #[test]
    fn small_shifts_keep_the_colour() {
        for colour in Colour::ALL {
            let [r, g, b] = colour.rgb().0;
            let shifted = Rgb([
                r.saturating_add(12),
                g.saturating_sub(12),
                b.saturating_add(8),
            ]);
            assert_eq!(Colour::nearest(shifted), colour);
        }
    }
}
