//! Models by name: a repository id resolved through a Hugging Face cache laid out as
//! `huggingface_hub` lays it out (offline), and downloaded with `hf-hub` from a Hub on loopback
//! serving `fixtures/tiny-sd` as a repository; each loaded pipeline generates exactly what the
//! folder itself does.

mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::RgbImage;
use prompt_diffusion::core::Error;
use prompt_diffusion::core::hub::{HubOptions, Wanted, snapshot_holds};
use prompt_diffusion::core::progress::NoProgress;
use prompt_diffusion::core::weights::{LoadOptions, Pretrained};
use prompt_diffusion::unet::UNet2DConditionModel;
use prompt_diffusion::{Generation, ModelOptions, StableDiffusion};

use server::Hub;

use crate::common::{B, DEVICE, fixtures};

const REPO: &str = "tiny/sd";
const COMMIT: &str = "3d1b9f3b2c6e4a5f8e7d6c5b4a39281706f5e4d3";

fn tiny_sd() -> PathBuf {
    fixtures().join("tiny-sd")
}

/// The images `model` generates with `options` (two steps, a fixed seed).
fn generate(model: impl AsRef<Path>, options: &ModelOptions) -> Result<Vec<RgbImage>, Error> {
    let sd = StableDiffusion::<B>::from_pretrained(model, options, &DEVICE)?;
    let generation = Generation::new("a fox in the snow")
        .with_steps(2)
        .with_seed(7);
    sd.text_to_image(&generation, &mut NoProgress)
}

/// What the folder itself generates.
fn reference() -> Vec<RgbImage> {
    generate(tiny_sd(), &ModelOptions::default()).unwrap()
}

/// `repo`'s folder in the cache.
fn repo_folder(cache: &Path, repo: &str) -> PathBuf {
    cache.join(format!("models--{}", repo.replace('/', "--")))
}

/// Lays `fixtures/tiny-sd` out in `cache` as `huggingface_hub` does: contents in `blobs/`, the
/// commit's files as relative symbolic links in `snapshots/<commit>/`, and `refs/<name>` holding
/// the commit for every name of `refs`.
fn fixture_cache(cache: &Path, refs: &[&str]) {
    let folder = repo_folder(cache, REPO);
    let snapshot = folder.join("snapshots").join(COMMIT);
    link_files(&tiny_sd(), &tiny_sd(), &folder.join("blobs"), &snapshot);
    for name in refs {
        let path = folder.join("refs").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, COMMIT).unwrap();
    }
}

fn link_files(root: &Path, dir: &Path, blobs: &Path, snapshot: &Path) {
    std::fs::create_dir_all(blobs).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            link_files(root, &path, blobs, snapshot);
            continue;
        }
        let relative = path.strip_prefix(root).unwrap();
        let blob = format!(
            "blob-{}",
            relative.to_string_lossy().replace(['/', '\\'], "-")
        );
        std::fs::copy(&path, blobs.join(&blob)).unwrap();
        let link = snapshot.join(relative);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let up = "../".repeat(relative.components().count() + 1);
        #[cfg(unix)]
        std::os::unix::fs::symlink(format!("{up}blobs/{blob}"), &link).unwrap();
        #[cfg(not(unix))]
        std::fs::copy(blobs.join(&blob), &link).unwrap();
    }
}

/// Model options reading the cache `cache` (only) and the Hub at `endpoint`.
fn options(cache: &Path, endpoint: Option<&str>) -> ModelOptions {
    let hub = HubOptions::default().with_cache_dir(cache);
    let hub = match endpoint {
        Some(endpoint) => hub.with_endpoint(endpoint).with_offline(false),
        None => hub.with_offline(true),
    };
    ModelOptions::default().with_hub(hub)
}

fn hub_error(err: Error) -> String {
    assert!(matches!(err, Error::Hub { .. }), "not Error::Hub: {err}");
    err.to_string()
}

#[test]
fn a_cached_repository_loads_offline_by_id_by_branch_and_by_commit() {
    let dir = tempfile::tempdir().unwrap();
    fixture_cache(dir.path(), &["main", "v1.0"]);
    let expected = reference();
    let offline = options(dir.path(), None);
    assert_eq!(generate(REPO, &offline).unwrap(), expected, "refs/main");
    for revision in ["v1.0", COMMIT] {
        let hub = offline.hub.clone().with_revision(revision);
        let options = offline.clone().with_hub(hub);
        assert_eq!(generate(REPO, &options).unwrap(), expected, "{revision}");
    }
    // A branch the cache has no ref for is not guessed.
    let hub = offline.hub.clone().with_revision("dev");
    let err = hub_error(generate(REPO, &offline.clone().with_hub(hub)).unwrap_err());
    assert!(err.contains("models--tiny--sd/refs/dev"), "{err}");
}

#[test]
fn a_snapshot_missing_a_component_is_not_used_offline() {
    let dir = tempfile::tempdir().unwrap();
    fixture_cache(dir.path(), &["main"]);
    let snapshot = repo_folder(dir.path(), REPO).join("snapshots").join(COMMIT);
    std::fs::remove_file(snapshot.join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let err = hub_error(generate(REPO, &options(dir.path(), None)).unwrap_err());
    for needle in ["tiny/sd", "revision main", "lacks vae/weights", "offline"] {
        assert!(err.contains(needle), "`{needle}` not in {err}");
    }
}

#[test]
fn a_repository_downloads_from_the_hub_then_loads_offline() {
    let dir = tempfile::tempdir().unwrap();
    let extra: [(&str, &[u8]); 2] = [
        ("README.md", b"# tiny"),
        (
            "unet/diffusion_pytorch_model.bin",
            b"not the preferred weights",
        ),
    ];
    let hub = Hub::serve(REPO, COMMIT, &tiny_sd(), &extra);
    let expected = reference();
    let online = options(dir.path(), Some(&hub.endpoint));
    assert_eq!(generate(REPO, &online).unwrap(), expected);

    let requests = hub.requests();
    assert_eq!(requests[0], "GET /api/models/tiny/sd/revision/main");
    let fetched = |file: &str| {
        let probe = format!("GET /tiny/sd/resolve/main/{file} bytes=0-0");
        requests.contains(&probe)
    };
    for file in [
        "model_index.json",
        "unet/config.json",
        "tokenizer/vocab.json",
    ] {
        assert!(fetched(file), "{file} not fetched: {requests:#?}");
    }
    assert!(fetched("vae/diffusion_pytorch_model.safetensors"));
    assert!(
        requests.iter().any(|r| r.starts_with("GET /cdn/")),
        "no redirect followed"
    );
    for skipped in ["README.md", "unet/diffusion_pytorch_model.bin"] {
        assert!(!fetched(skipped), "{skipped} fetched");
    }

    // The cache is laid out as huggingface_hub lays it out.
    let folder = repo_folder(dir.path(), REPO);
    let commit = std::fs::read_to_string(folder.join("refs/main")).unwrap();
    assert_eq!(commit.trim(), COMMIT);
    let snapshot = folder.join("snapshots").join(COMMIT);
    let weights = snapshot.join("unet/diffusion_pytorch_model.safetensors");
    #[cfg(unix)]
    assert!(std::fs::symlink_metadata(&weights).unwrap().is_symlink());
    let blob = std::fs::canonicalize(&weights).unwrap();
    assert!(blob.starts_with(std::fs::canonicalize(folder.join("blobs")).unwrap()));

    // The second load needs no network.
    let count = hub.requests().len();
    assert_eq!(
        generate(REPO, &options(dir.path(), None)).unwrap(),
        expected
    );
    assert_eq!(generate(REPO, &online).unwrap(), expected);
    assert_eq!(
        hub.requests().len(),
        count,
        "the cached model was fetched again"
    );

    // A deleted blob is fetched again, its dangling link replaced.
    let vae = snapshot.join("vae/diffusion_pytorch_model.safetensors");
    std::fs::remove_file(std::fs::canonicalize(&vae).unwrap()).unwrap();
    assert_eq!(generate(REPO, &online).unwrap(), expected);
    let again = &hub.requests()[count..];
    let probe = "GET /tiny/sd/resolve/main/vae/diffusion_pytorch_model.safetensors bytes=0-0";
    assert!(again.iter().any(|r| r == probe), "{again:#?}");
    assert!(!again.iter().any(|r| r.contains("unet/")), "{again:#?}");
}

#[test]
fn a_component_downloads_its_subfolder_alone() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::serve(REPO, COMMIT, &tiny_sd(), &[]);
    let settings = HubOptions::default()
        .with_cache_dir(dir.path())
        .with_endpoint(&hub.endpoint)
        .with_offline(false);
    let load = LoadOptions::default()
        .with_hub(settings)
        .with_subfolder("unet");
    let device = DEVICE;
    UNet2DConditionModel::<B>::from_pretrained(REPO, &load, &device).unwrap();
    let requests = hub.requests();
    let files: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("/resolve/"))
        .collect();
    assert!(!files.is_empty());
    assert!(
        files.iter().all(|r| r.contains("/resolve/main/unet/")),
        "{files:#?}"
    );
    let snapshot = repo_folder(dir.path(), REPO).join("snapshots").join(COMMIT);
    assert!(snapshot_holds(
        &snapshot,
        Wanted::Component(Some("unet")),
        None
    ));
    let pipeline = Wanted::Pipeline(&["unet", "vae"]);
    assert!(!snapshot_holds(&snapshot, pipeline, None));
}

#[test]
fn missing_repositories_are_typed_errors_naming_what_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().display().to_string();
    let err = hub_error(generate("tiny/unknown", &options(dir.path(), None)).unwrap_err());
    for needle in [
        "tiny/unknown",
        &cache,
        "models--tiny--unknown/refs/main",
        "offline",
    ] {
        assert!(err.contains(needle), "`{needle}` not in {err}");
    }

    let hub = Hub::serve(REPO, COMMIT, &tiny_sd(), &[]);
    let online = options(dir.path(), Some(&hub.endpoint));
    let err = hub_error(generate("tiny/unknown", &online).unwrap_err());
    let listing = format!("{}/api/models/tiny/unknown/revision/main", hub.endpoint);
    for needle in ["tiny/unknown", &listing, "HTTP 404", "token"] {
        assert!(err.contains(needle), "`{needle}` not in {err}");
    }
    let revision = online.hub.clone().with_revision("v9");
    let err = hub_error(generate(REPO, &online.clone().with_hub(revision)).unwrap_err());
    assert!(
        err.contains("revision v9") && err.contains("HTTP 404"),
        "{err}"
    );

    let err = generate("tiny/s d", &online).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("`tiny/s d`"), "{err}");
    assert!(
        hub.requests()
            .iter()
            .all(|r| !r.contains("s%20d") && !r.contains("s d"))
    );
    // A Hub that cannot be reached (a port nothing listens on).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let unreachable = options(dir.path(), Some(&format!("http://{closed}")));
    let err = hub_error(generate(REPO, &unreachable).unwrap_err());
    assert!(
        err.contains("cannot list") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
}

/// Runs the program with `args` and extra environment variables `env`.
fn run(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_prompt-diffusion"));
    command.args(args).env("RUST_LOG", "error");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("the program starts")
}

#[test]
fn the_program_takes_a_repository_id_and_expands_tilde_in_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    fixture_cache(&cache, &["main"]);
    crate::common::copy_dir(&tiny_sd(), &dir.path().join("models/tiny-sd"));
    let env = [
        ("HF_HUB_CACHE", cache.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
        ("HOME", dir.path()),
    ];
    let generate = [
        "txt2img", "--prompt", "a fox", "--steps", "2", "--seed", "7",
    ];
    let by_id = dir.path().join("by-id.png");
    let by_id_arg = format!("--output={}", by_id.display());
    let out = run(
        &[&generate[..], &["--model", REPO, &by_id_arg]].concat(),
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tilde = ["--model=~/models/tiny-sd", "--output=~/by-path.png"];
    let out = run(&[&generate[..], &tilde].concat(), &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decode = |path: PathBuf| image::open(path).unwrap().to_rgb8();
    assert_eq!(decode(by_id), decode(dir.path().join("by-path.png")));

    let out = run(
        &[&generate[..], &["--model", "tiny/unknown"]].concat(),
        &env,
    );
    let what = "txt2img --model tiny/unknown";
    let needles = ["tiny/unknown", "not in the cache", "HF_HUB_OFFLINE is set"];
    crate::common::assert_one_line_error(what, &out, &needles);
}
