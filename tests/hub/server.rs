//! A Hugging Face Hub on loopback for the download tests: an HTTP/1.1 server on 127.0.0.1 that
//! serves a folder as one model repository at one commit, answering the requests `hf-hub` makes
//! as the Hub does:
//!
//! * `GET /api/models/{repo}/revision/{revision}` — the listing: `{"sha", "siblings"}`;
//! * `GET /{repo}/resolve/{revision}/{file}` — the file with `x-repo-commit` and `etag`,
//!   honouring `Range` (`206`, `content-range`); for `*.safetensors` (LFS files on the Hub) a
//!   `302` to an absolute `Location` on the same server, with `x-linked-etag`;
//! * `GET /cdn/{etag}` — the redirected content, honouring `Range`.
//!
//! Other repositories, revisions and files are `404`. Every request line is recorded.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A repository: its id, commit and files (repository path → contents).
struct Repository {
    id: String,
    commit: String,
    files: BTreeMap<String, Vec<u8>>,
}

/// The running server.
pub struct Hub {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    /// Serves the files under `dir` (and `extra` files) as repository `id` at `commit`.
    pub fn serve(id: &str, commit: &str, dir: &Path, extra: &[(&str, &[u8])]) -> Self {
        let mut files = BTreeMap::new();
        collect(dir, dir, &mut files);
        for (path, bytes) in extra {
            files.insert(path.to_string(), bytes.to_vec());
        }
        let repo = Arc::new(Repository {
            id: id.into(),
            commit: commit.into(),
            files,
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, base) = (requests.clone(), endpoint.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (repo, log, base) = (repo.clone(), log.clone(), base.clone());
                std::thread::spawn(move || handle(stream, &repo, &log, &base));
            }
        });
        Self { endpoint, requests }
    }

    /// The request lines (`GET /path Range`) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let name = path.strip_prefix(root).unwrap().to_string_lossy();
            files.insert(name.replace('\\', "/"), std::fs::read(&path).unwrap());
        }
    }
}

/// A stand-in for the Hub's content hashes (git blob sha1, LFS sha256): 40 hex digits.
fn etag(bytes: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{:016x}{:024x}", hasher.finish(), bytes.len())
}

struct Response {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: &'static str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Reads requests from `stream` and answers them until the client closes it.
fn handle(stream: TcpStream, repo: &Repository, log: &Mutex<Vec<String>>, base: &str) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let entry = format!("GET {path} {}", range.clone().unwrap_or_default());
        log.lock().unwrap().push(entry.trim_end().to_string());
        let response = route(repo, &path, range.as_deref(), base);
        let mut head = format!(
            "HTTP/1.1 {}\r\ncontent-length: {}\r\n",
            response.status,
            response.body.len()
        );
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&response.body).is_err() {
            return;
        }
    }
}

fn not_found(what: &str) -> Response {
    let body = format!("{{\"error\":\"{what} not found\"}}").into_bytes();
    Response::new("404 Not Found", body).header("content-type", "application/json")
}

fn route(repo: &Repository, path: &str, range: Option<&str>, base: &str) -> Response {
    let revisions = ["main", repo.commit.as_str()];
    if let Some(rest) = path.strip_prefix("/api/models/") {
        return match rest.rsplit_once("/revision/") {
            Some((id, revision)) if id == repo.id && revisions.contains(&revision) => {
                let siblings: Vec<String> = repo
                    .files
                    .keys()
                    .map(|name| format!("{{\"rfilename\":\"{name}\"}}"))
                    .collect();
                let body = format!(
                    "{{\"id\":\"{}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
                    repo.id,
                    repo.commit,
                    siblings.join(",")
                );
                Response::new("200 OK", body.into_bytes())
                    .header("content-type", "application/json")
            }
            _ => not_found("Repository"),
        };
    }
    if let Some(tag) = path.strip_prefix("/cdn/") {
        return match repo.files.values().find(|bytes| etag(bytes) == tag) {
            Some(bytes) => ranged(bytes, range),
            None => not_found("Object"),
        };
    }
    let Some(rest) = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(repo.id.as_str()))
        .and_then(|p| p.strip_prefix("/resolve/"))
    else {
        return not_found("Repository");
    };
    let Some((revision, file)) = rest.split_once('/') else {
        return not_found("Entry");
    };
    let Some(bytes) = repo
        .files
        .get(file)
        .filter(|_| revisions.contains(&revision))
    else {
        return not_found("Entry");
    };
    let tag = etag(bytes);
    if file.ends_with(".safetensors") {
        return Response::new("302 Found", Vec::new())
            .header("location", format!("{base}/cdn/{tag}"))
            .header("x-repo-commit", &repo.commit)
            .header("x-linked-etag", format!("\"{tag}\""))
            .header("x-linked-size", bytes.len().to_string())
            .header("etag", "\"pointer-file\"");
    }
    ranged(bytes, range)
        .header("x-repo-commit", &repo.commit)
        .header("etag", format!("\"{tag}\""))
}

/// `bytes`, whole (`200`) or the requested `bytes=a-b` / `bytes=a-` range (`206`).
fn ranged(bytes: &[u8], range: Option<&str>) -> Response {
    let Some(spec) = range.and_then(|r| r.strip_prefix("bytes=")) else {
        return Response::new("200 OK", bytes.to_vec());
    };
    let (start, end) = spec.split_once('-').unwrap_or((spec, ""));
    let start: usize = start.parse().unwrap_or(0).min(bytes.len());
    let last = bytes.len().saturating_sub(1);
    let end: usize = end.parse().map_or(last, |e: usize| e.min(last));
    let body = bytes.get(start..=end).unwrap_or_default().to_vec();
    Response::new("206 Partial Content", body).header(
        "content-range",
        format!("bytes {start}-{end}/{}", bytes.len()),
    )
}
