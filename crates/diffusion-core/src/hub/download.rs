//! Downloading a repository's wanted files into the cache with `hf-hub`'s blocking client.
//!
//! The repository is listed once (`/api/models/{repo}/revision/{revision}`: its commit and
//! files); the files a model needs ([`plan_folder`]) that the commit's snapshot lacks are then
//! fetched one by one (`/{repo}/resolve/{revision}/{file}`), each into `blobs/` with a link
//! from `snapshots/<commit>/`, and `refs/<revision>` records the commit.

use std::path::PathBuf;

use hf_hub::api::RepoInfo;
use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Cache, Repo, RepoType};

use super::cache::{is_commit_hash, repo_folder};
use super::select::{pipeline_folders, plan_folder, repo_path, shard_names};
use super::{HubSettings, RepoId, Wanted};
use crate::{Error, Result};

/// One repository at one revision, being downloaded.
struct Download<'a> {
    repo: &'a RepoId,
    settings: &'a HubSettings,
    api: ApiRepo,
    /// `snapshots/<commit>` of the listed commit.
    snapshot: PathBuf,
}

impl Download<'_> {
    fn error(
        &self,
        reason: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        self.settings.error(self.repo, reason, source)
    }

    /// The file at `path` in the snapshot, downloaded first when it is not there.
    fn get(&self, path: &str) -> Result<PathBuf> {
        let local = self.snapshot.join(path);
        if local.is_file() {
            return Ok(local);
        }
        // A link whose blob was deleted is replaced, not kept (hf-hub keeps any existing path).
        if std::fs::symlink_metadata(&local).is_ok() {
            std::fs::remove_file(&local).map_err(|e| Error::io(&local, e))?;
        }
        tracing::info!("downloading {path} of {}", self.repo);
        let fetched = self.api.download(path).map_err(|e| {
            let reason = format!("downloading {path} from {} failed", self.settings.endpoint);
            self.error(reason, Some(Box::new(e)))
        })?;
        if fetched != local {
            let reason = format!(
                "{path} came from another commit ({}) than the listing's; the revision moved during the download: run again",
                fetched.display()
            );
            return Err(self.error(reason, None));
        }
        Ok(local)
    }

    /// Downloads one component folder's weights (every shard of a sharded checkpoint), then its
    /// config files.
    fn get_folder(&self, siblings: &[String], folder: &str, variant: Option<&str>) -> Result<()> {
        let plan = plan_folder(siblings, folder, variant);
        if plan.weights.is_none() && plan.configs.is_empty() {
            let what = if folder.is_empty() {
                "no config or weight file".to_string()
            } else {
                format!("no `{folder}/` folder with config files or weights")
            };
            return Err(self.error(format!("the repository has {what}"), None));
        }
        if let Some(weights) = &plan.weights {
            let file = self.get(weights)?;
            if weights.ends_with(".json") {
                for shard in shard_names(&file)? {
                    self.get(&repo_path(folder, &shard))?;
                }
            }
        }
        for config in &plan.configs {
            self.get(config)?;
        }
        Ok(())
    }
}

/// Lists `repo` at the settings' revision and downloads what `wanted` needs that the cache
/// lacks; returns the snapshot folder.
pub(super) fn fetch(
    repo: &RepoId,
    settings: &HubSettings,
    wanted: Wanted<'_>,
    variant: Option<&str>,
) -> Result<PathBuf> {
    let cache = Cache::new(settings.cache_dir.clone());
    let api = ApiBuilder::from_cache(cache.clone())
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token.clone())
        .with_progress(settings.progress)
        .with_user_agent("prompt-diffusion", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| {
            let reason = "cannot set up the download client".to_string();
            settings.error(repo, reason, Some(Box::new(e)))
        })?;
    let hf_repo = Repo::with_revision(repo.to_string(), RepoType::Model, settings.revision.clone());
    let api = api.repo(hf_repo.clone());
    let info = list(&api, repo, settings)?;
    let snapshot = repo_folder(&settings.cache_dir, repo)
        .join("snapshots")
        .join(&info.sha);
    let download = Download {
        repo,
        settings,
        api,
        snapshot,
    };
    let siblings: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let has_index = siblings.iter().any(|s| s == "model_index.json");
    let folders: Vec<String> = match wanted {
        Wanted::Pipeline(folders) if !folders.is_empty() => {
            folders.iter().map(|f| f.to_string()).collect()
        }
        Wanted::Pipeline(_) => {
            if !has_index {
                let reason = "the repository has no model_index.json (not a diffusers pipeline)";
                return Err(download.error(reason.into(), None));
            }
            pipeline_folders(&download.get("model_index.json")?)?
        }
        Wanted::Component(subfolder) => vec![subfolder.unwrap_or_default().to_string()],
    };
    for folder in &folders {
        download.get_folder(&siblings, folder, variant)?;
    }
    if matches!(wanted, Wanted::Pipeline(_)) && has_index {
        download.get("model_index.json")?;
    }
    if !is_commit_hash(&settings.revision) {
        cache.repo(hf_repo).create_ref(&info.sha).map_err(|e| {
            let folder = repo_folder(&settings.cache_dir, repo).join("refs");
            Error::io(folder.join(&settings.revision), e)
        })?;
    }
    Ok(download.snapshot)
}

/// The repository's commit and files at the settings' revision.
fn list(api: &ApiRepo, repo: &RepoId, settings: &HubSettings) -> Result<RepoInfo> {
    let url = format!(
        "{}/api/models/{repo}/revision/{}",
        settings.endpoint,
        settings.revision.replace('/', "%2F")
    );
    let error = |reason: String, source: Option<Box<dyn std::error::Error + Send + Sync>>| {
        settings.error(repo, reason, source)
    };
    let response = api
        .info_request()
        .config()
        .http_status_as_error(false)
        .build()
        .call();
    let mut response = response.map_err(|e| {
        let reason = format!(
            "cannot list the repository at {url} (no network? HF_HUB_OFFLINE=1 uses the cache only)"
        );
        error(reason, Some(Box::new(e)))
    })?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        let reason = match status {
            401 | 403 | 404 => format!(
                "{url} answered HTTP {status}: no such repository or revision, or a private or gated one that needs a token (--token, HF_TOKEN)"
            ),
            _ => format!("{url} answered HTTP {status}"),
        };
        return Err(error(reason, None));
    }
    let info: RepoInfo = response.body_mut().read_json().map_err(|e| {
        error(
            format!("{url}: not a repository listing"),
            Some(Box::new(e)),
        )
    })?;
    if !is_commit_hash(&info.sha) {
        let reason = format!(
            "{url}: the listing's commit `{}` is not a commit hash",
            info.sha
        );
        return Err(error(reason, None));
    }
    Ok(info)
}
