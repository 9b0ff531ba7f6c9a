//! Output files of every subcommand: checked before any work (a folder, a missing folder or a
//! file in place of the folder is one line, before any model is loaded), written to a temporary
//! file and renamed into place (a symbolic link is replaced, never written through; a failed
//! write leaves the previous file intact and no temporary file behind).

use std::path::Path;
use std::process::Command;

use prompt_diffusion::core::testing::file_names as names;

use crate::common::{
    assert_cli_succeeds, assert_one_line_error, fixture, in_context_images, restore_args, run_cli,
    versatile_args,
};

/// Every subcommand that writes files, with arguments that are valid up to the output (the
/// models are not all loadable: a check after loading would report another error), and the
/// extension its output takes. `OUT` stands for the output path.
fn writers() -> Vec<(Vec<String>, &'static str)> {
    let (tiny, init) = (fixture("tiny-sd"), fixture("pipeline/init.png"));
    let words = |s: &[&str]| -> Vec<String> { s.iter().map(|w| w.to_string()).collect() };
    let sd = |cmd: &str| words(&[cmd, "--model", &tiny, "--prompt", "x", "--steps", "1"]);
    let with = |mut head: Vec<String>, tail: &[&str]| {
        head.extend(words(tail));
        head
    };
    let images = in_context_images(&init, &init, &init);
    vec![
        (with(sd("txt2img"), &["--output", "OUT"]), "png"),
        (
            with(sd("img2img"), &["--init-image", &init, "--output", "OUT"]),
            "png",
        ),
        (
            with(sd("in-context"), &images)
                .into_iter()
                .chain(words(&["--output", "OUT"]))
                .collect(),
            "png",
        ),
        (
            with(
                sd("controlnet"),
                &["--controlnet", &tiny, "--hint", &init, "--output", "OUT"],
            ),
            "png",
        ),
        (words(&["annotate", "--kind", "canny", &init, "OUT"]), "png"),
        (
            restore_args(
                &tiny,
                &tiny,
                &tiny,
                &["--input", &init, "--task", "derain", "--output", "OUT"],
            ),
            "png",
        ),
        (
            with(
                versatile_args("text-to-image"),
                &["--prompt", "x", "--output", "OUT"],
            ),
            "png",
        ),
        (
            with(
                versatile_args("image-to-text"),
                &["--image", &init, "--output", "OUT"],
            ),
            "txt",
        ),
    ]
}

/// `args` with `OUT` replaced by `out`.
fn at(args: &[String], out: &Path) -> Vec<String> {
    let out = out.display().to_string();
    args.iter()
        .map(|a| if a == "OUT" { out.clone() } else { a.clone() })
        .collect()
}

#[test]
fn outputs_that_cannot_be_written_are_rejected_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    for (args, ext) in writers() {
        let folder = dir.path().join(format!("taken.{ext}"));
        std::fs::create_dir_all(&folder).unwrap();
        let cases = [
            (folder.clone(), "is a folder"),
            (file.join(format!("out.{ext}")), "not a folder"),
            (
                dir.path().join(format!("missing/out.{ext}")),
                "does not exist",
            ),
        ];
        for (out, reason) in cases {
            let args = at(&args, &out);
            let start = std::time::Instant::now();
            let result = run_cli(&args);
            assert_one_line_error(&format!("{args:?}"), &result, &["output", reason]);
            assert!(start.elapsed().as_secs() < 30, "{args:?} was slow to fail");
        }
    }
    assert_eq!(names(dir.path()), ["a-file", "taken.png", "taken.txt"]);
}

#[cfg(unix)]
#[test]
fn a_symlink_at_the_output_is_replaced_and_its_target_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious.png");
    std::fs::write(&target, b"another program's file").unwrap();
    let (annotate, txt2img) = (&writers()[4].0, &writers()[0].0);
    for (i, args) in [annotate, txt2img].into_iter().enumerate() {
        let link = dir.path().join(format!("link{i}.png"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_cli_succeeds(at(args, &link));
        assert_eq!(std::fs::read(&target).unwrap(), b"another program's file");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(image::open(&link).is_ok());
    }
    assert_eq!(
        names(dir.path()),
        ["link0.png", "link1.png", "precious.png"]
    );
}

/// A noise image whose PNG does not compress below a few kilobytes.
fn noise_image(path: &Path) {
    let mut state = 12345u32;
    let image = image::RgbImage::from_fn(128, 128, |_, _| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let [a, b, c, _] = state.to_le_bytes();
        image::Rgb([a, b, c])
    });
    image.save(path).unwrap();
}

#[cfg(unix)]
#[test]
fn a_failed_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("noise.png");
    noise_image(&input);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("edges.png");
    std::fs::write(&out, b"the previous, good file").unwrap();
    let input = input.display().to_string();
    let args = ["annotate", "--kind", "softedge", "--sigma", "0", &input];
    // A file-size limit of 1 KiB makes the write fail (EFBIG) for every user, root included;
    // SIGXFSZ is ignored so the write returns the error instead of killing the program.
    let limited = Command::new("sh")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 2 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_prompt-diffusion"))
        .args(args)
        .arg(&out)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert_one_line_error("annotate under a file-size limit", &limited, &["edges.png"]);
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous, good file");
    assert_eq!(
        names(&out_dir),
        ["edges.png"],
        "a temporary file was left behind"
    );
    // Without the limit the same run replaces the file.
    let mut args: Vec<String> = args.map(String::from).to_vec();
    args.push(out.display().to_string());
    assert_cli_succeeds(&args);
    assert!(image::open(&out).is_ok());
    assert_eq!(names(&out_dir), ["edges.png"]);
}
