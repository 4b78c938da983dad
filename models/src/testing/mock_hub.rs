//! A stand-in for the Hugging Face Hub's file endpoint (`/{org}/{name}/resolve/{revision}/{file}`)
//! on a local port, for tests of the real download code (hf-hub) where the Hub is unreachable.
//! It answers as the Hub does: ranged reads with `x-repo-commit`, `etag` and `content-range`,
//! and errors carrying `x-error-code` (RepoNotFound, RevisionNotFound, EntryNotFound,
//! GatedRepo).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Default, Clone)]
pub struct MockRepo {
    /// Revision name (branch or tag) -> commit.
    pub refs: HashMap<String, String>,
    /// file name -> bytes (one commit's tree).
    pub files: HashMap<String, Vec<u8>>,
    /// Requires `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl MockRepo {
    /// A repo whose `main` is `commit` and whose files are those of a directory.
    pub fn from_dir(dir: &Path, commit: &str) -> std::io::Result<Self> {
        let mut files = HashMap::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            if e.file_type()?.is_file() {
                files.insert(
                    e.file_name().to_string_lossy().to_string(),
                    std::fs::read(e.path())?,
                );
            }
        }
        Ok(MockRepo {
            refs: HashMap::from([("main".to_string(), commit.to_string())]),
            files,
            token: None,
        })
    }
}

pub struct MockHub {
    pub endpoint: String,
    /// Paths requested so far (to check that offline runs ask for nothing).
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl MockHub {
    pub fn start(repos: HashMap<String, MockRepo>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let repos = Arc::new(repos);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let repos = repos.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &repos, &log);
                });
            }
        });
        Ok(MockHub { endpoint, requests })
    }
}

fn serve(
    mut stream: TcpStream,
    repos: &HashMap<String, MockRepo>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    log.lock().unwrap().push(path.clone());
    let error = |stream: &mut TcpStream, code: u16, kind: &str| {
        write!(
            stream,
            "HTTP/1.1 {code} Error\r\nx-error-code: {kind}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    };
    // /{org}/{name}/resolve/{revision}/{file}
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", rev, file] = parts.as_slice() else {
        return error(&mut stream, 404, "EntryNotFound");
    };
    let Some(repo) = repos.get(&format!("{org}/{name}")) else {
        return error(&mut stream, 401, "RepoNotFound");
    };
    if let Some(token) = &repo.token {
        if headers.get("authorization") != Some(&format!("Bearer {token}")) {
            return error(&mut stream, 401, "GatedRepo");
        }
    }
    let commit = match repo.refs.get(*rev) {
        Some(c) => c.clone(),
        None if repo.refs.values().any(|c| c == rev) => rev.to_string(),
        None => return error(&mut stream, 404, "RevisionNotFound"),
    };
    let Some(body) = repo.files.get(*file) else {
        return error(&mut stream, 404, "EntryNotFound");
    };
    let sha: String = Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let start: usize = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end: usize = headers
        .get("range")
        .and_then(|r| r.split('-').nth(1))
        .and_then(|s| s.parse::<usize>().ok())
        .map(|e| e + 1)
        .unwrap_or(body.len())
        .min(body.len());
    let slice = &body[start.min(end)..end];
    write!(
        stream,
        "HTTP/1.1 206 Partial Content\r\nx-repo-commit: {commit}\r\netag: \"{sha}\"\r\ncontent-range: bytes {start}-{}/{}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        end.saturating_sub(1),
        body.len(),
        slice.len()
    )?;
    stream.write_all(slice)?;
    stream.flush()
}
