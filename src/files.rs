//! Bounded reads of the files an operator names (the config and its Lua scripts): regular files only, and
//! never more than a cap, whatever the file's metadata claims (`/dev/zero` reports a length of 0).

use std::fmt;
use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a file was not read. `Display` names the reason, never the file's content.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// A directory, FIFO, device or socket: reading one can block forever or never end.
    NotRegular(&'static str),
    /// More bytes than the cap (which is given).
    TooLarge(u64),
    NotUtf8,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => match e.kind() {
                std::io::ErrorKind::NotFound => f.write_str("no such file"),
                std::io::ErrorKind::PermissionDenied => f.write_str("permission denied"),
                _ => write!(f, "{e}"),
            },
            ReadError::NotRegular(kind) => write!(f, "it is {kind}, not a regular file"),
            ReadError::TooLarge(max) => write!(f, "it is larger than {max} bytes"),
            ReadError::NotUtf8 => f.write_str("it is not UTF-8 text"),
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// What a file that is not a regular file is, for the error.
fn irregular(file_type: FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_char_device() || file_type.is_block_device() {
        Some("a device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// Reads `path` (symbolic links followed) as UTF-8 text of at most `max` bytes.
///
/// The type is checked before opening, so a FIFO is never opened (opening one blocks until a writer comes),
/// and again on the open file, in case the path was swapped in between; the open itself does not block
/// (`O_NONBLOCK`) and cannot make a terminal the controlling one. At most `max + 1` bytes are read.
pub(crate) fn read_text(path: &Path, max: u64) -> Result<String, ReadError> {
    if let Some(kind) = irregular(std::fs::metadata(path)?.file_type()) {
        return Err(ReadError::NotRegular(kind));
    }
    let file: File = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let metadata = file.metadata()?;
    if let Some(kind) = irregular(metadata.file_type()) {
        return Err(ReadError::NotRegular(kind));
    }
    let mut bytes = Vec::with_capacity(metadata.len().min(max) as usize + 1);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_regular_files_within_the_cap_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_text(&path, 10).unwrap(), "0123456789");
        assert!(matches!(read_text(&path, 9), Err(ReadError::TooLarge(9))));
        assert!(matches!(read_text(dir.path(), 10), Err(ReadError::NotRegular("a directory"))));
        // /dev/zero says its length is 0 and never ends; it is refused before a byte is read.
        assert!(matches!(read_text(Path::new("/dev/zero"), 10), Err(ReadError::NotRegular("a device"))));
        assert!(matches!(read_text(&dir.path().join("missing"), 10), Err(ReadError::Io(_))));
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&path, 10), Err(ReadError::NotUtf8)));
        // A symbolic link to a device is judged by what it points at.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(read_text(&link, 10), Err(ReadError::NotRegular("a device"))));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        // Opening a FIFO for reading blocks until a writer opens it; this returns because it never opens it.
        assert!(matches!(read_text(&fifo, 10), Err(ReadError::NotRegular("a FIFO"))));
    }
}
