//! The Hugging Face cache layout, as `huggingface_hub` writes it:
//!
//! ```text
//! <cache>/models--org--name/
//!     refs/main                      the commit hash the branch `main` pointed at
//!     snapshots/<commit>/unet/…      the files of that commit (links into blobs/)
//!     blobs/<etag>                   the contents
//! ```

use std::path::{Path, PathBuf};

use super::select::{MARKERS, pipeline_folders, shard_names};
use super::{RepoId, Wanted};
use crate::weights::weight_file_names;

/// The folder of `repo` in the cache: `<cache_dir>/models--org--name`.
pub fn repo_folder(cache_dir: &Path, repo: &RepoId) -> PathBuf {
    cache_dir.join(format!("models--{}", repo.as_str().replace('/', "--")))
}

/// Whether `revision` is a full commit hash (40 lowercase hex digits).
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where `revision` of `repo` is recorded in the cache, for messages.
pub(super) fn ref_description(repo: &RepoId, revision: &str) -> String {
    let folder = format!("models--{}", repo.as_str().replace('/', "--"));
    if is_commit_hash(revision) {
        format!("{folder}/snapshots/{revision}")
    } else {
        format!("{folder}/refs/{revision}")
    }
}

/// The snapshot folder of `revision` in the cache, when there is one: `snapshots/<revision>`
/// for a commit hash, else `snapshots/<hash>` with the hash read from `refs/<revision>`.
pub(super) fn snapshot(cache_dir: &Path, repo: &RepoId, revision: &str) -> Option<PathBuf> {
    let folder = repo_folder(cache_dir, repo);
    let commit = if is_commit_hash(revision) {
        revision.to_string()
    } else if super::select::is_safe_repo_path(revision) {
        let text = std::fs::read_to_string(folder.join("refs").join(revision)).ok()?;
        Some(text.trim().to_string()).filter(|c| is_commit_hash(c))?
    } else {
        return None;
    };
    let snapshot = folder.join("snapshots").join(commit);
    snapshot.is_dir().then_some(snapshot)
}

/// Whether the snapshot folder holds everything `wanted` needs (see [`Wanted`]): each component
/// folder a config file and, when it has a `config.json`, its weights (every shard of a sharded
/// checkpoint).
pub fn snapshot_holds(snapshot: &Path, wanted: Wanted<'_>, variant: Option<&str>) -> bool {
    missing(snapshot, wanted, variant).is_none()
}

/// What the snapshot lacks of `wanted`, or `None`.
pub(super) fn missing(
    snapshot: &Path,
    wanted: Wanted<'_>,
    variant: Option<&str>,
) -> Option<String> {
    match wanted {
        Wanted::Component(subfolder) => {
            let name = subfolder.unwrap_or_default();
            let dir = snapshot.join(name);
            if !dir.join("config.json").is_file() {
                return Some(format!("{}config.json", prefix(name)));
            }
            weights_missing(&dir, name, variant)
        }
        Wanted::Pipeline(folders) => {
            let listed;
            let folders: Vec<&str> = if folders.is_empty() {
                match pipeline_folders(&snapshot.join("model_index.json")) {
                    Ok(folders) => listed = folders,
                    Err(_) => return Some("model_index.json".into()),
                }
                listed.iter().map(String::as_str).collect()
            } else {
                folders.to_vec()
            };
            if folders.is_empty() {
                return Some("model_index.json".into());
            }
            folders
                .iter()
                .find_map(|folder| folder_missing(&snapshot.join(folder), folder, variant))
        }
    }
}

/// `name/`, or nothing for the root.
fn prefix(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!("{name}/")
    }
}

/// What a component folder of a pipeline lacks: a config file, or its weights.
fn folder_missing(dir: &Path, name: &str, variant: Option<&str>) -> Option<String> {
    if !MARKERS.iter().any(|marker| dir.join(marker).is_file()) {
        return Some(format!("{name}/ (or its config file)"));
    }
    if dir.join("config.json").is_file() {
        weights_missing(dir, name, variant)
    } else {
        None
    }
}

/// What a folder lacks of its weights: none found, or a shard its index names.
fn weights_missing(dir: &Path, name: &str, variant: Option<&str>) -> Option<String> {
    let Some(found) = weight_file_names(variant)
        .into_iter()
        .find(|file| dir.join(file).is_file())
    else {
        return Some(format!("{}weights", prefix(name)));
    };
    if !found.ends_with(".json") {
        return None;
    }
    match shard_names(&dir.join(&found)) {
        Ok(shards) => shards
            .into_iter()
            .find(|shard| !dir.join(shard).is_file())
            .map(|shard| format!("{}{shard}", prefix(name))),
        Err(_) => Some(format!("{}{found}", prefix(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A cache holding `org/name` at `COMMIT` (branch `main`) with `files`.
    fn cache_with(files: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId::parse("org/name").unwrap();
        let folder = repo_folder(dir.path(), &repo);
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::write(folder.join("refs/main"), format!("{COMMIT}\n")).unwrap();
        let snapshot = folder.join("snapshots").join(COMMIT);
        for file in files {
            let path = snapshot.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"{}").unwrap();
        }
        std::fs::create_dir_all(&snapshot).unwrap();
        (dir, snapshot)
    }

    #[test]
    fn refs_and_commit_hashes_lead_to_the_snapshot() {
        let (dir, expected) = cache_with(&["config.json"]);
        let repo = RepoId::parse("org/name").unwrap();
        assert_eq!(folder_name(dir.path(), &repo), "models--org--name");
        assert_eq!(snapshot(dir.path(), &repo, "main"), Some(expected.clone()));
        assert_eq!(snapshot(dir.path(), &repo, COMMIT), Some(expected));
        assert_eq!(snapshot(dir.path(), &repo, "dev"), None);
        assert_eq!(snapshot(dir.path(), &repo, "../../etc"), None);
        let other = RepoId::parse("org/other").unwrap();
        assert_eq!(snapshot(dir.path(), &other, "main"), None);
        let refs = repo_folder(dir.path(), &repo).join("refs");
        std::fs::write(refs.join("bad"), "../../somewhere").unwrap();
        assert_eq!(snapshot(dir.path(), &repo, "bad"), None);
        assert!(is_commit_hash(COMMIT) && !is_commit_hash("main"));
        assert!(!is_commit_hash(&COMMIT.to_uppercase()));
    }

    fn folder_name(cache: &Path, repo: &RepoId) -> String {
        let folder = repo_folder(cache, repo);
        folder.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn a_snapshot_holds_a_pipeline_when_every_folder_has_its_config_and_weights() {
        let complete = [
            "model_index.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "tokenizer/tokenizer_config.json",
            "scheduler/scheduler_config.json",
        ];
        let (_dir, snapshot) = cache_with(&complete);
        let folders = ["unet", "tokenizer", "scheduler"];
        assert!(snapshot_holds(&snapshot, Wanted::Pipeline(&folders), None));
        assert!(snapshot_holds(
            &snapshot,
            Wanted::Pipeline(&folders),
            Some("fp16")
        ));
        let lacks = |wanted| missing(&snapshot, wanted, None);
        assert_eq!(
            lacks(Wanted::Pipeline(&["vae"])).as_deref(),
            Some("vae/ (or its config file)")
        );
        assert_eq!(lacks(Wanted::Component(Some("unet"))), None);
        assert_eq!(
            lacks(Wanted::Component(None)).as_deref(),
            Some("config.json")
        );

        let (_dir, partial) =
            cache_with(&["unet/config.json", "unet/model.safetensors.index.json"]);
        let index = partial.join("unet/model.safetensors.index.json");
        std::fs::write(&index, r#"{"weight_map": {"a": "model-1.safetensors"}}"#).unwrap();
        let lacks = missing(&partial, Wanted::Pipeline(&["unet"]), None);
        assert_eq!(lacks.as_deref(), Some("unet/model-1.safetensors"));
        std::fs::write(partial.join("unet/model-1.safetensors"), b"").unwrap();
        assert!(snapshot_holds(
            &partial,
            Wanted::Component(Some("unet")),
            None
        ));
    }

    #[test]
    fn an_empty_pipeline_list_means_the_folders_model_index_lists() {
        let (_dir, snapshot) = cache_with(&["unet/config.json"]);
        assert!(!snapshot_holds(&snapshot, Wanted::Pipeline(&[]), None));
        let index = r#"{"unet": ["diffusers", "UNet2DConditionModel"]}"#;
        std::fs::write(snapshot.join("model_index.json"), index).unwrap();
        let lacks = missing(&snapshot, Wanted::Pipeline(&[]), None);
        assert_eq!(lacks.as_deref(), Some("unet/weights"));
        std::fs::write(snapshot.join("unet/diffusion_pytorch_model.bin"), b"").unwrap();
        assert!(snapshot_holds(&snapshot, Wanted::Pipeline(&[]), None));
    }
}
