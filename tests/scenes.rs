//! The procedural scenes (`prompt_diffusion::scenes`): the seeded generator and its split,
//! captions and their parser, the maps, and the checker's properties — full marks on the
//! renderer's own pictures (also blurred, resampled or noisy), low marks on pictures that do
//! not show the scene.

use std::collections::HashSet;

use image::RgbImage;
use image::imageops::{self, FilterType};
use prompt_diffusion::scenes::{
    Accuracy, CANVAS, Colour, Phrasing, Position, Scene, SceneGenerator, ShapeKind, Size, Split,
    check, segment_colour,
};

fn scenes(seed: u64, n: usize) -> Vec<Scene> {
    SceneGenerator::new(seed).take(n).collect()
}

/// The checker's accuracy over `scenes`, each checked against `picture(i, scene)`.
fn accuracy(scenes: &[Scene], picture: impl Fn(usize, &Scene) -> RgbImage) -> Accuracy {
    scenes
        .iter()
        .enumerate()
        .map(|(i, scene)| check(&picture(i, scene), scene))
        .collect()
}

#[test]
fn same_seed_same_scenes_and_other_seeds_differ() {
    assert_eq!(scenes(42, 200), scenes(42, 200));
    let (mut a, mut b) = (SceneGenerator::new(42), SceneGenerator::new(42));
    for _ in 0..50 {
        assert_eq!(a.next_captioned(), b.next_captioned());
    }
    let other = scenes(43, 200);
    let same = scenes(42, 200)
        .iter()
        .zip(&other)
        .filter(|(x, y)| x == y)
        .count();
    assert!(same < 10, "{same} of 200 scenes equal across seeds");
    assert_eq!(
        SceneGenerator::with_split(9, Split::Train)
            .take(100)
            .collect::<Vec<_>>(),
        SceneGenerator::with_split(9, Split::Train)
            .take(100)
            .collect::<Vec<_>>()
    );
}

#[test]
fn every_word_appears() {
    let all = scenes(0, 3000);
    let backgrounds: HashSet<Colour> = all.iter().map(|s| s.background).collect();
    let shapes: Vec<_> = all.iter().flat_map(|s| s.shapes.iter().copied()).collect();
    let colours: HashSet<Colour> = shapes.iter().map(|s| s.colour).collect();
    let kinds: HashSet<ShapeKind> = shapes.iter().map(|s| s.kind).collect();
    let sizes: HashSet<Size> = shapes.iter().map(|s| s.size).collect();
    let positions: HashSet<Position> = shapes.iter().map(|s| s.position).collect();
    assert_eq!(backgrounds.len(), Colour::ALL.len());
    assert_eq!(colours.len(), Colour::ALL.len());
    assert_eq!(kinds.len(), ShapeKind::ALL.len());
    assert_eq!(sizes.len(), Size::ALL.len());
    assert_eq!(positions.len(), Position::ALL.len());
    let counts = [1, 2].map(|n| all.iter().filter(|s| s.shapes.len() == n).count());
    assert!(counts.iter().all(|&c| c > 1200), "{counts:?}");
    for scene in &all {
        scene.validate().unwrap();
    }
}

#[test]
fn captions_round_trip_through_parse() {
    for (i, scene) in scenes(7, 1000).into_iter().enumerate() {
        for phrasing in Phrasing::ALL {
            let caption = scene.caption_with(phrasing);
            assert_eq!(Scene::parse(&caption).unwrap(), scene, "{caption}");
        }
        let caption = scene.caption();
        assert_eq!(Scene::parse(&caption).unwrap(), scene);
        if i < 3 {
            // Captions are plain words: colour, kind and position words are all there.
            for shape in &scene.shapes {
                assert!(
                    caption.contains(shape.colour.name()) && caption.contains(shape.kind.name())
                );
            }
            assert!(caption.contains(&format!("{} background", scene.background)));
        }
    }
    let s = Scene::parse("A lone RED circle, on a blue background.").unwrap();
    assert_eq!(s.shapes[0].position, Position::CENTRE);
}

#[test]
fn held_out_captions_are_disjoint_from_training_ones() {
    let captions = |split| -> HashSet<String> {
        SceneGenerator::with_split(1, split)
            .take(2000)
            .flat_map(|s| {
                let mut reversed = s.clone();
                reversed.shapes.reverse();
                Phrasing::ALL
                    .into_iter()
                    .flat_map(move |p| [s.caption_with(p), reversed.caption_with(p)])
            })
            .collect()
    };
    let train = captions(Split::Train);
    let held_out = captions(Split::HeldOut);
    assert!(held_out.len() > 3000, "{}", held_out.len());
    assert_eq!(train.intersection(&held_out).count(), 0);
    for caption in held_out.iter().take(200) {
        assert_eq!(Scene::parse(caption).unwrap().split(), Split::HeldOut);
    }
}

#[test]
fn checker_gives_full_marks_to_the_renderer() {
    let held_out: Vec<Scene> = SceneGenerator::with_split(3, Split::HeldOut)
        .take(200)
        .collect();
    let exact = accuracy(&held_out, |_, s| s.render(64).unwrap());
    assert_eq!(
        (exact.background(), exact.shape_colour_at_position()),
        (1.0, 1.0),
        "{exact}"
    );

    let blurred = accuracy(&held_out, |_, s| {
        imageops::blur(&s.render(64).unwrap(), 0.8)
    });
    let resampled = accuracy(&held_out, |_, s| {
        let small = imageops::resize(&s.render(64).unwrap(), 32, 32, FilterType::Triangle);
        imageops::resize(&small, 64, 64, FilterType::Triangle)
    });
    let lanczos = accuracy(&held_out, |_, s| {
        let small = prompt_diffusion::core::image::resize(&s.render(64).unwrap(), 32, 32);
        prompt_diffusion::core::image::resize(&small, 64, 64)
    });
    let noisy = accuracy(&held_out, |i, s| {
        let mut image = s.render(64).unwrap();
        let mut state = (i as u32).wrapping_mul(2_654_435_761) | 1;
        for p in image.pixels_mut() {
            for c in &mut p.0 {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (state >> 24) as i32 % 17 - 8;
                *c = (i32::from(*c) + noise).clamp(0, 255) as u8;
            }
        }
        image
    });
    let large = accuracy(&held_out, |_, s| s.render(256).unwrap());
    for (name, a) in [
        ("blurred", blurred),
        ("resampled", resampled),
        ("lanczos", lanczos),
        ("noisy", noisy),
        ("256 px", large),
    ] {
        assert!(
            a.background() >= 0.99 && a.shape_colour_at_position() >= 0.99,
            "{name}: {a}"
        );
    }
}

#[test]
fn checker_gives_low_marks_to_wrong_pictures() {
    let held_out: Vec<Scene> = SceneGenerator::with_split(4, Split::HeldOut)
        .take(200)
        .collect();
    let grey = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    let uniform = accuracy(&held_out, |_, _| grey.clone());
    let mismatched = accuracy(&held_out, |i, _| {
        held_out[(i + 1) % held_out.len()].render(64).unwrap()
    });
    // Smooth coloured noise, as a random-weight model draws: blobs of every colour everywhere.
    let noise = accuracy(&held_out, |i, _| {
        let mut state = (i as u32).wrapping_mul(2_654_435_761) | 1;
        let coarse = RgbImage::from_fn(8, 8, |_, _| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            Colour::ALL[(state >> 24) as usize % Colour::ALL.len()].rgb()
        });
        imageops::resize(&coarse, 64, 64, FilterType::Triangle)
    });
    for (name, a) in [
        ("uniform grey", uniform),
        ("mismatched", mismatched),
        ("coloured noise", noise),
    ] {
        println!("{name}: {a}");
        assert!(
            a.background() <= 0.3 && a.shape_colour_at_position() <= 0.3,
            "{name}: {a}"
        );
    }
    assert_eq!(uniform.shape_colour_at_position(), 0.0);
}

#[test]
fn segmentation_labels_are_the_shapes_pixels() {
    for scene in scenes(5, 100) {
        for side in [64, 100] {
            let labels = scene.labels(side).unwrap();
            let picture = scene.render(side).unwrap();
            let segmentation = scene.segmentation_map(side).unwrap();
            let scale = CANVAS / side as f32;
            for (i, &label) in labels.iter().enumerate() {
                let (x, y) = ((i % side as usize) as u32, (i / side as usize) as u32);
                let (u, v) = ((x as f32 + 0.5) * scale, (y as f32 + 0.5) * scale);
                let inside: Vec<usize> = (0..scene.shapes.len())
                    .filter(|&k| scene.shapes[k].contains(u, v))
                    .collect();
                let expected_colour = match label {
                    0 => {
                        assert!(inside.is_empty());
                        scene.background
                    }
                    l => {
                        assert_eq!(inside, [usize::from(l) - 1]);
                        scene.shapes[usize::from(l) - 1].colour
                    }
                };
                assert_eq!(*picture.get_pixel(x, y), expected_colour.rgb());
                assert_eq!(*segmentation.get_pixel(x, y), segment_colour(label));
            }
        }
    }
}

#[test]
fn edges_are_on_boundaries_and_depth_puts_shapes_in_front() {
    for scene in scenes(6, 100) {
        let n = 64usize;
        let labels = scene.labels(64).unwrap();
        let edges = scene.edge_map(64).unwrap();
        let depth = scene.depth_map(64).unwrap();
        for (i, &label) in labels.iter().enumerate() {
            let (x, y) = (i % n, i / n);
            let neighbours = [
                (x.wrapping_sub(1), y),
                (x + 1, y),
                (x, y.wrapping_sub(1)),
                (x, y + 1),
            ];
            let on_boundary = neighbours
                .iter()
                .any(|&(nx, ny)| nx >= n || ny >= n || labels[ny * n + nx] != label);
            let edge = edges.get_pixel(x as u32, y as u32).0;
            assert!(edge == [255; 3] || edge == [0; 3]);
            assert_eq!(edge == [255; 3], label != 0 && on_boundary, "({x}, {y})");
            let grey = depth.get_pixel(x as u32, y as u32).0[0];
            if label == 0 {
                assert!(grey <= 80);
            } else {
                assert!(grey >= 150);
            }
        }
        let edge_pixels = edges.pixels().filter(|p| p.0[0] == 255).count();
        assert!(edge_pixels >= 12 * scene.shapes.len(), "{edge_pixels}");
    }
    // Larger is nearer.
    let scene = Scene::parse(
        "a small red circle at the top and a large red square at the bottom, on a blue background",
    )
    .unwrap();
    let depth = scene.depth_map(64).unwrap();
    let grey = |p: Position| {
        let (x, y) = p.centre(64.0);
        depth.get_pixel(x as u32, y as u32).0[0]
    };
    assert!(grey(Position::TOP) < grey(Position::BOTTOM));
}

#[test]
fn bad_sides_and_captions_are_errors() {
    let scene = Scene::parse("a red circle on a blue background").unwrap();
    for side in [0, 100_000] {
        assert!(scene.render(side).is_err());
        assert!(scene.edge_map(side).is_err());
        assert!(scene.segmentation_map(side).is_err());
        assert!(scene.depth_map(side).is_err());
    }
    let err = Scene::parse("a teal hexagon").unwrap_err();
    assert!(matches!(
        err,
        prompt_diffusion::core::Error::InvalidInput { .. }
    ));
}
