//! Output files that appear whole or not at all: each is written to a temporary file
//! beside its target and renamed over the target once the run has succeeded; a run that
//! fails (or is interrupted before the rename) leaves no half-written file where the
//! output should be, and removes its temporary file when it can.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::npy::{Encode, NpyWriter, Stored};
use crate::{runtime, Failure, Outcome};

/// Bytes buffered before each write to the file.
const WRITE_BUFFER: usize = 1 << 20;

/// Where an output's bytes go.
enum Sink {
    /// A temporary file beside the target, renamed over it at the end.
    Temporary(NamedTempFile),
    /// A target that is not a regular file (`/dev/stdout`, a FIFO): written in place,
    /// since renaming over it would replace the device rather than write to it.
    Direct(File),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Temporary(f) => f.write(buf),
            Sink::Direct(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Temporary(f) => f.flush(),
            Sink::Direct(f) => f.flush(),
        }
    }
}

/// An `.npy` output being written, for the flag that named it.
pub struct Output {
    flag: &'static str,
    /// As the user gave it, for messages.
    path: PathBuf,
    /// Where the file goes: `path` with its links followed, so writing through a link
    /// writes the file it names, as writing in place would.
    target: PathBuf,
    writer: NpyWriter<BufWriter<Sink>>,
}

impl Output {
    /// Starts the output `path` (given to `flag`) as a `dtype` array of `shape`.
    pub fn create(
        flag: &'static str,
        path: &Path,
        dtype: impl Into<Stored>,
        shape: &[usize],
    ) -> Outcome<Self> {
        let fail = |e: std::io::Error| write_failure(flag, path, e);
        let target = resolve(path).unwrap_or_else(|| path.to_path_buf());
        let is_special = std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir());
        let sink = if is_special {
            Sink::Direct(File::create(path).map_err(fail)?)
        } else {
            let dir = match target.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            let name = target.file_name().unwrap_or_default().to_string_lossy();
            let prefix = format!(".{name}.");
            let mut builder = tempfile::Builder::new();
            builder.prefix(&prefix).suffix(".partial");
            // As File::create makes files: 0o666 less the umask (a temporary file is
            // otherwise the owner's alone).
            #[cfg(unix)]
            builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
            Sink::Temporary(builder.tempfile_in(dir).map_err(fail)?)
        };
        let writer = NpyWriter::new(BufWriter::with_capacity(WRITE_BUFFER, sink), dtype, shape)
            .map_err(fail)?;
        Ok(Output {
            flag,
            path: path.to_path_buf(),
            target,
            writer,
        })
    }

    /// Appends `values`.
    pub fn write<T: Encode>(&mut self, values: &[T]) -> Outcome<()> {
        self.writer
            .write(values)
            .map_err(|e| write_failure(self.flag, &self.path, e))
    }

    /// Completes the file and puts it where the output goes.
    pub fn commit(self) -> Outcome<()> {
        let fail = |e: std::io::Error| write_failure(self.flag, &self.path, e);
        let buffered = self.writer.finish().map_err(fail)?;
        let sink = buffered.into_inner().map_err(|e| fail(e.into_error()))?;
        if let Sink::Temporary(file) = sink {
            file.persist(&self.target).map_err(|e| fail(e.error))?;
        }
        Ok(())
    }
}

fn write_failure(flag: &str, path: &Path, e: std::io::Error) -> Failure {
    runtime(format!("{flag} {}: cannot write: {e}", path.display()))
}

/// Every output file must be its own: two flags naming one file would have the second
/// write silently replace the first. Checked before anything is read or written, so a
/// clash writes nothing.
pub fn check_distinct(outputs: &[(&str, &Path)]) -> Outcome<()> {
    for (i, &(first, a)) in outputs.iter().enumerate() {
        for &(second, b) in &outputs[i + 1..] {
            if same_file(a, b) {
                return Err(runtime(format!(
                    "{first} {} and {second} {} name the same file; give each output its own",
                    a.display(),
                    b.display()
                )));
            }
        }
    }
    Ok(())
}

/// Whether two paths name one file: the same path, or the same file once resolved
/// (`y.npy` and `./y.npy`, a symbolic link and its target).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}

/// `path` made absolute with every link resolved; a file not there yet is resolved
/// through its directory, and a link to one through the link (writing follows it).
/// None where the directory is not there either (writing there fails anyway).
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut path = path.to_path_buf();
    // Linux follows at most 40 links.
    for _ in 0..40 {
        if let Ok(resolved) = std::fs::canonicalize(&path) {
            return Some(resolved);
        }
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        // A relative target is relative to the link's directory.
        path = path
            .parent()
            .map_or(target.clone(), |dir| dir.join(&target));
    }
    let name = path.file_name()?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(dir).ok()?.join(name))
}
