//! Atomic writes and content hashes.
//!
//! Every artifact is written to a temporary sibling, flushed to disk, then renamed
//! over its final name, so a reader sees either the old file or the whole new one.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// An I/O error with the path it happened on, and a hint when the cause is
/// a common one (a full disk, a read-only or forbidden place).
#[derive(Debug, thiserror::Error)]
#[error("{action} `{path}`: {source}{}", hint(source))]
pub struct FsError {
    /// What was being done ("cannot write", "cannot read", …).
    pub action: &'static str,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: io::Error,
}

fn hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "; the disk is full: free some space or pass --run-dir on another disk"
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            "; the place is not writable: fix its permissions or pass --run-dir to a writable directory"
        }
        io::ErrorKind::NotADirectory => "; a file stands where a directory is needed: pass another --run-dir",
        _ => "",
    }
}

impl FsError {
    /// Wraps `source` with the path and the action.
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self { action, path: path.into(), source }
    }
}

/// The temporary sibling used while `path` is being written.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `path` atomically: the closure writes to a temporary file, which is
/// synced and renamed over `path` only when the closure succeeds.
pub fn write_atomic_with<E>(path: &Path, write: impl FnOnce(&mut io::BufWriter<File>) -> Result<(), E>) -> Result<(), E>
where
    E: From<FsError>,
{
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| FsError::new("cannot create directory", parent, e))?;
    }
    let tmp = temp_path(path);
    let file = File::create(&tmp).map_err(|e| FsError::new("cannot create", &tmp, e))?;
    let mut writer = io::BufWriter::new(file);
    let result = write(&mut writer).and_then(|()| {
        if crate::fault::hit("disk-full") {
            return Err(FsError::new("cannot write", &tmp, io::Error::from_raw_os_error(28)).into());
        }
        let file = writer.into_inner().map_err(|e| FsError::new("cannot write", &tmp, e.into_error()))?;
        file.sync_all().map_err(|e| FsError::new("cannot sync", &tmp, e))?;
        Ok(())
    });
    match result {
        Ok(()) => fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            FsError::new("cannot rename into place", path, e).into()
        }),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    write_atomic_with(path, |w| w.write_all(bytes).map_err(|e| FsError::new("cannot write", path, e)))
}

/// Copies the file `from` to `to` atomically.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<(), FsError> {
    let bytes = std::fs::read(from).map_err(|e| FsError::new("cannot read", from, e))?;
    write_atomic(to, &bytes)
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), FsError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| FsError::new("cannot serialise", path, io::Error::other(e)))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// The SHA-256 of a file's content, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, FsError> {
    let file = File::open(path).map_err(|e| FsError::new("cannot open", path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| FsError::new("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The SHA-256 of some bytes, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `dir` and its parents, with the path in the error.
pub fn create_dir_all(dir: &Path) -> Result<(), FsError> {
    fs::create_dir_all(dir).map_err(|e| {
        // The OS says "File exists" when `dir` itself is a file.
        let e = if e.kind() == io::ErrorKind::AlreadyExists && !dir.is_dir() {
            io::Error::new(io::ErrorKind::NotADirectory, "it is a file")
        } else {
            e
        };
        FsError::new("cannot create directory", dir, e)
    })
}

/// Removes `path` if it exists.
pub fn remove_file_if_exists(path: &Path) -> Result<(), FsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FsError::new("cannot remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_where_a_directory_is_wanted_gets_the_hint_whatever_its_depth() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, "").unwrap();
        for wanted in [file.clone(), file.join("sub")] {
            let err = create_dir_all(&wanted).unwrap_err().to_string();
            assert!(err.contains("a file stands where a directory is needed"), "{err}");
        }
        create_dir_all(&dir.path().join("new/deeper")).unwrap();
        create_dir_all(&dir.path().join("new/deeper")).unwrap();
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn failed_write_keeps_old_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"good").unwrap();
        let result: Result<(), FsError> = write_atomic_with(&path, |w| {
            w.write_all(b"half").unwrap();
            Err(FsError::new("simulated", &path, io::Error::other("boom")))
        });
        assert!(result.is_err());
        assert_eq!(fs::read(&path).unwrap(), b"good");
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn sha256_matches_known_vector() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(sha256_bytes(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_bytes(b"abc"));
    }
}
