//! Models by name: a Hugging Face repository id (`org/name`) resolved to a folder of the local
//! Hugging Face cache, downloaded into it when missing.
//!
//! [`resolve`] takes what a user typed where a model folder goes:
//!
//! 1. an existing file or folder (after [`expand_tilde`]) is returned as it is;
//! 2. a repository id is looked up in the cache, laid out as `huggingface_hub` lays it out
//!    (`<cache>/models--org--name/refs/<revision>` holds a commit hash,
//!    `snapshots/<hash>/` the files, symbolic links into `blobs/`); a revision that is a commit
//!    hash names its snapshot directly. A snapshot that holds what is [`Wanted`] is returned;
//! 3. otherwise, unless offline, the repository is listed and the wanted files downloaded with
//!    the `hf-hub` crate (the `hub` cargo feature) into the same layout, and the snapshot
//!    returned;
//! 4. otherwise [`Error::Hub`] says what was looked for and where.
//!
//! [`HubOptions`] left unset read the environment as `huggingface_hub` does: `HF_HUB_CACHE`,
//! `HF_HOME`, `XDG_CACHE_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH` and `HF_HUB_OFFLINE`.
//! A cached snapshot is used without asking the Hub whether the revision moved: to update a
//! branch, delete its `refs/<revision>` file (or pass the new commit as the revision).
//!
//! ```no_run
//! use prompt_diffusion_core::hub::{HubOptions, Wanted, resolve};
//!
//! # fn main() -> prompt_diffusion_core::Result<()> {
//! let options = HubOptions::default().with_revision("main");
//! let folder = resolve("stable-diffusion-v1-5/stable-diffusion-v1-5", &options, Wanted::Pipeline(&[]), None)?;
//! # let _ = folder;
//! # Ok(())
//! # }
//! ```

mod cache;
#[cfg(feature = "hub")]
mod download;
mod select;

use std::path::{Path, PathBuf};

pub use cache::{is_commit_hash, repo_folder, snapshot_holds};
pub use select::{is_weight_file, shard_names};

use crate::files::{expand_tilde, expand_tilde_in};
use crate::{Error, Result};

/// The Hub's address when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The revision when none is given.
pub const DEFAULT_REVISION: &str = "main";

/// Where and how repositories named by id are found and downloaded (diffusers' `revision=`,
/// `token=`, `cache_dir=`, `local_files_only=`). Fields left `None` come from the environment
/// when a name is resolved ([`HubOptions::settings`]). `Debug` does not show the token.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubOptions {
    /// Branch, tag or commit hash (default [`DEFAULT_REVISION`]).
    pub revision: Option<String>,
    /// Access token for private and gated repositories (default: `HF_TOKEN`, else the file
    /// `HF_TOKEN_PATH`, else `<HF_HOME>/token`, which `hf auth login` writes).
    pub token: Option<String>,
    /// The Hub's address (default: `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`]).
    pub endpoint: Option<String>,
    /// The cache folder holding `models--org--name/` (default: `HF_HUB_CACHE`, else
    /// `<HF_HOME>/hub`, with `HF_HOME` defaulting to `$XDG_CACHE_HOME/huggingface`, else
    /// `~/.cache/huggingface`).
    pub cache_dir: Option<PathBuf>,
    /// Use the cache only, never the network (default: `HF_HUB_OFFLINE` set to 1, true, yes
    /// or on).
    pub offline: Option<bool>,
    /// Show a progress bar per downloaded file (on a terminal).
    pub progress: bool,
}

impl HubOptions {
    crate::setters! {
        /// Asks for a branch, tag or commit hash.
        with_revision(revision: impl Into<String>) = Some(revision.into());
        /// Sends an access token.
        with_token(token: impl Into<String>) = Some(token.into());
        /// Talks to another Hub (a mirror, or a local server in tests).
        with_endpoint(endpoint: impl Into<String>) = Some(endpoint.into());
        /// Uses another cache folder.
        with_cache_dir(cache_dir: impl Into<PathBuf>) = Some(cache_dir.into());
        /// Uses the cache only (`true`) or allows downloads (`false`), whatever the environment says.
        with_offline(offline: bool) = Some(offline);
        /// Shows download progress bars.
        with_progress(progress: bool);
    }

    /// The options with the environment filling the unset fields.
    pub fn settings(&self) -> HubSettings {
        self.settings_with(
            |name| std::env::var(name).ok(),
            std::env::home_dir().as_deref(),
        )
    }

    /// [`settings`](Self::settings) with the environment read through `env` and `home` as the
    /// home folder (for tests).
    pub fn settings_with(
        &self,
        env: impl Fn(&str) -> Option<String>,
        home: Option<&Path>,
    ) -> HubSettings {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let path = |value: String| expand_tilde_in(Path::new(&value), home);
        let hf_home = var("HF_HOME").map(path).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME")
                .map(path)
                .unwrap_or_else(|| expand_tilde_in(Path::new("~/.cache"), home));
            cache.join("huggingface")
        });
        let cache_dir = match &self.cache_dir {
            Some(dir) => expand_tilde_in(dir, home),
            None => var("HF_HUB_CACHE")
                .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
                .map(path)
                .unwrap_or_else(|| hf_home.join("hub")),
        };
        let token = self.token.clone().or_else(|| var("HF_TOKEN")).or_else(|| {
            let file = var("HF_TOKEN_PATH")
                .map(path)
                .unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(file).ok()
        });
        let token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| var("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let env_offline = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"]
            .iter()
            .filter_map(|name| var(name))
            .next()
            .is_some_and(|v| {
                ["1", "ON", "YES", "TRUE"].contains(&v.trim().to_ascii_uppercase().as_str())
            });
        HubSettings {
            revision: self
                .revision
                .clone()
                .unwrap_or_else(|| DEFAULT_REVISION.into()),
            token,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            offline: self.offline.unwrap_or(env_offline),
            offline_from_env: self.offline.is_none() && env_offline,
            progress: self.progress,
        }
    }
}

/// [`HubOptions`] with every default filled in.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Branch, tag or commit hash.
    pub revision: String,
    /// Access token, if any.
    pub token: Option<String>,
    /// The Hub's address, without a trailing `/`.
    pub endpoint: String,
    /// The cache folder holding `models--org--name/`.
    pub cache_dir: PathBuf,
    /// Whether the network is off limits.
    pub offline: bool,
    /// Whether `offline` comes from `HF_HUB_OFFLINE` (for messages).
    pub offline_from_env: bool,
    /// Whether downloads show progress bars.
    pub progress: bool,
}

/// `Debug` for the hub option types, with the token redacted.
macro_rules! debug_without_token {
    ($($ty:ident),*) => {$(
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("revision", &self.revision)
                    .field("token", &self.token.as_ref().map(|_| "…"))
                    .field("endpoint", &self.endpoint)
                    .field("cache_dir", &self.cache_dir)
                    .field("offline", &self.offline)
                    .field("progress", &self.progress)
                    .finish()
            }
        }
    )*};
}

debug_without_token!(HubOptions, HubSettings);

impl HubSettings {
    /// [`Error::Hub`] for `repo` at this revision.
    pub(crate) fn error(
        &self,
        repo: &RepoId,
        reason: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Hub {
            repo: repo.to_string(),
            revision: self.revision.clone(),
            reason,
            source,
        }
    }
}

/// What a model needs from a repository: the files downloaded, and what a cached snapshot must
/// hold to be used as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// A diffusers pipeline: `model_index.json` and these component folders (when empty: every
    /// folder `model_index.json` lists), each with its config files and weights.
    Pipeline(&'a [&'a str]),
    /// One component (`config.json` and weights): at the repository's root, or in a sub-folder.
    Component(Option<&'a str>),
}

/// A Hugging Face repository id, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId(String);

impl RepoId {
    /// Checks `id` as `huggingface_hub` does: `namespace/name`, each 1 to 96 ASCII letters,
    /// digits, `-`, `_` or `.`, neither starting nor ending with `-` or `.`, without `--` or
    /// `..`, not ending in `.git`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] (`model`) saying which rule `id` breaks.
    pub fn parse(id: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid_input(
                "model",
                format!(
                    "`{id}` is neither an existing file or folder nor a Hugging Face repository id (namespace/name): {why}"
                ),
            )
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() != 2 {
            return Err(bad("expected one `/`"));
        }
        for part in parts {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if part.is_empty() || part.len() > 96 {
                return Err(bad("each part has 1 to 96 characters"));
            }
            if !part.chars().all(allowed) {
                return Err(bad("only letters, digits, `-`, `_` and `.` are allowed"));
            }
            if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
                return Err(bad("a part cannot start or end with `-` or `.`"));
            }
        }
        if id.contains("--") || id.contains("..") {
            return Err(bad("`--` and `..` are not allowed"));
        }
        if id.ends_with(".git") {
            return Err(bad("it cannot end in `.git`"));
        }
        Ok(Self(id.to_string()))
    }

    /// The id, `namespace/name`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is meant as a repository id rather than a path: relative, one `/`, not
/// starting with `.`, `~` or a drive; whether it is a *valid* id is [`RepoId::parse`]'s
/// business.
fn looks_like_repo_id(name: &Path) -> Option<&str> {
    let text = name.to_str()?;
    let shaped = !name.is_absolute()
        && !name.has_root()
        && text.matches('/').count() == 1
        && !text.contains('\\')
        && !text.starts_with(['.', '~'])
        && !text.contains(':');
    shaped.then_some(text)
}

/// Resolves what a user named as a model to a local file or folder (see the [module
/// docs](self)): an existing path as it is, a repository id to its snapshot in the cache,
/// downloaded first when needed and allowed. A missing path that is no repository id is
/// returned as it is, for the caller to report.
///
/// `variant` (e.g. `fp16`) picks `<stem>.<variant>.safetensors` weights where the repository
/// has them.
///
/// # Errors
/// [`Error::InvalidInput`] for a name shaped like an id (`namespace/name`) that breaks the id
/// rules; [`Error::Hub`] when the repository is not in the cache and cannot be downloaded
/// (offline, built without the `hub` feature, unknown to the Hub, no access, no network).
pub fn resolve(
    name: impl AsRef<Path>,
    options: &HubOptions,
    wanted: Wanted<'_>,
    variant: Option<&str>,
) -> Result<PathBuf> {
    let path = expand_tilde(name.as_ref());
    if path.exists() {
        return Ok(path);
    }
    let Some(text) = looks_like_repo_id(&path) else {
        return Ok(path);
    };
    let repo = RepoId::parse(text)?;
    resolve_repo(&repo, &options.settings(), wanted, variant)
}

/// [`resolve`] for a repository id, with settings already filled in.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_repo(
    repo: &RepoId,
    settings: &HubSettings,
    wanted: Wanted<'_>,
    variant: Option<&str>,
) -> Result<PathBuf> {
    let cached = cache::snapshot(&settings.cache_dir, repo, &settings.revision);
    let missing = match &cached {
        Some(snapshot) => match cache::missing(snapshot, wanted, variant) {
            None => return Ok(snapshot.clone()),
            Some(what) => format!("the cached snapshot {} lacks {what}", snapshot.display()),
        },
        None => format!(
            "not in the cache at {} (no {})",
            settings.cache_dir.display(),
            cache::ref_description(repo, &settings.revision)
        ),
    };
    if settings.offline {
        let why = if settings.offline_from_env {
            "HF_HUB_OFFLINE is set"
        } else {
            "offline mode is on"
        };
        return Err(settings.error(repo, format!("{missing}; {why}"), None));
    }
    #[cfg(feature = "hub")]
    {
        download::fetch(repo, settings, wanted, variant)
    }
    #[cfg(not(feature = "hub"))]
    {
        let _ = variant;
        let reason = format!(
            "{missing}, and this build cannot download it (built without the `hub` feature)"
        );
        Err(settings.error(repo, reason, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)], options: &HubOptions) -> HubSettings {
        let lookup = |name: &str| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        options.settings_with(lookup, Some(Path::new("/home/ada")))
    }

    #[test]
    fn the_cache_folder_follows_huggingface_hub_precedence() {
        let none = HubOptions::default();
        let dir = |env: &[(&str, &str)]| settings(env, &none).cache_dir;
        assert_eq!(dir(&[]), Path::new("/home/ada/.cache/huggingface/hub"));
        assert_eq!(
            dir(&[("XDG_CACHE_HOME", "/xdg")]),
            Path::new("/xdg/huggingface/hub")
        );
        let home = [("XDG_CACHE_HOME", "/xdg"), ("HF_HOME", "~/hf")];
        assert_eq!(dir(&home), Path::new("/home/ada/hf/hub"));
        let both = [("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/hub-cache")];
        assert_eq!(dir(&both), Path::new("/hub-cache"));
        assert_eq!(
            dir(&[("HUGGINGFACE_HUB_CACHE", "/legacy")]),
            Path::new("/legacy")
        );
        let explicit = HubOptions::default().with_cache_dir("~/mine");
        let chosen = settings(&both, &explicit).cache_dir;
        assert_eq!(chosen, Path::new("/home/ada/mine"));
    }

    #[test]
    fn endpoint_revision_and_offline_come_from_options_then_environment() {
        let s = settings(&[], &HubOptions::default());
        assert_eq!(
            (s.endpoint.as_str(), s.revision.as_str()),
            (DEFAULT_ENDPOINT, "main")
        );
        assert!(!s.offline && s.token.is_none());
        let env = [
            ("HF_ENDPOINT", "http://mirror.local/"),
            ("HF_HUB_OFFLINE", "True"),
            ("HF_TOKEN", " hf_env \n"),
        ];
        let s = settings(&env, &HubOptions::default());
        assert_eq!(s.endpoint, "http://mirror.local");
        assert!(s.offline && s.offline_from_env);
        assert_eq!(s.token.as_deref(), Some("hf_env"));
        let options = HubOptions::default()
            .with_offline(false)
            .with_token("hf_explicit")
            .with_revision("fp16")
            .with_endpoint("http://127.0.0.1:1");
        let s = settings(&env, &options);
        assert!(!s.offline);
        assert_eq!(s.token.as_deref(), Some("hf_explicit"));
        assert_eq!(
            (s.revision.as_str(), s.endpoint.as_str()),
            ("fp16", "http://127.0.0.1:1")
        );
        for off in ["0", "false", "no", ""] {
            assert!(!settings(&[("HF_HUB_OFFLINE", off)], &HubOptions::default()).offline);
        }
        assert!(settings(&[("TRANSFORMERS_OFFLINE", "1")], &HubOptions::default()).offline);
        assert!(!format!("{s:?}").contains("hf_explicit"));
        assert!(!format!("{options:?}").contains("hf_explicit"));
    }

    #[test]
    fn the_token_file_is_read_from_hf_home_or_hf_token_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_file\n").unwrap();
        std::fs::write(dir.path().join("other"), "hf_other").unwrap();
        let home = dir.path().to_str().unwrap();
        let s = settings(&[("HF_HOME", home)], &HubOptions::default());
        assert_eq!(s.token.as_deref(), Some("hf_file"));
        let other = dir.path().join("other");
        let env = [
            ("HF_HOME", home),
            ("HF_TOKEN_PATH", other.to_str().unwrap()),
        ];
        let s = settings(&env, &HubOptions::default());
        assert_eq!(s.token.as_deref(), Some("hf_other"));
        let env = [("HF_HOME", home), ("HF_TOKEN", "hf_env")];
        assert_eq!(
            settings(&env, &HubOptions::default()).token.as_deref(),
            Some("hf_env")
        );
    }

    #[test]
    fn repository_ids_follow_the_hub_rules() {
        for id in [
            "org/name",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            "a_b/c.d-9",
        ] {
            assert_eq!(RepoId::parse(id).unwrap().as_str(), id);
        }
        for (id, rule) in [
            ("name", "one `/`"),
            ("a/b/c", "one `/`"),
            ("org/na me", "letters, digits"),
            ("org/-name", "start or end"),
            ("org/name.", "start or end"),
            ("org/a--b", "`--`"),
            ("org/a..b", "`..`"),
            ("org/name.git", "`.git`"),
            ("/name", "1 to 96"),
        ] {
            let err = RepoId::parse(id).unwrap_err().to_string();
            assert!(err.contains(id) && err.contains(rule), "{id}: {err}");
        }
    }

    #[test]
    fn only_names_shaped_like_ids_go_to_the_hub() {
        let shaped = |s: &str| looks_like_repo_id(Path::new(s)).is_some();
        assert!(shaped("org/name") && shaped("org/na me"));
        for path in [
            "/models/sd15",
            "models",
            "./org/name",
            "../sd",
            "a/b/c",
            "~/sd",
            "C:/x",
        ] {
            assert!(!shaped(path), "{path}");
        }
        let options = HubOptions::default().with_offline(true);
        let missing = resolve("/no/such/folder", &options, Wanted::Component(None), None);
        assert_eq!(missing.unwrap(), Path::new("/no/such/folder"));
        let err = resolve("org/na me", &options, Wanted::Component(None), None).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }

    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_hub_feature_an_uncached_repository_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let options = HubOptions::default()
            .with_cache_dir(dir.path())
            .with_offline(false);
        let err = resolve("org/name", &options, Wanted::Pipeline(&[]), None).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Hub { .. }), "{message}");
        for needle in ["org/name", "models--org--name/refs/main", "`hub` feature"] {
            assert!(message.contains(needle), "`{needle}` not in {message}");
        }
    }
}
