//! Named pipes: the builder talks to the git hooks it runs through two of them.

use std::io;
use std::path::Path;

/// Creates a named pipe at `path`, readable and writable by this user only.
pub fn create(path: &Path) -> io::Result<()> {
    rustix::fs::mkfifoat(rustix::fs::CWD, path, rustix::fs::Mode::from_raw_mode(0o600)).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn a_fifo_carries_bytes_between_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipe");
        super::create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            std::fs::File::open(reader_path).unwrap().read_to_string(&mut s).unwrap();
            s
        });
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(b"hello").unwrap();
        assert_eq!(reader.join().unwrap(), "hello");
        assert_eq!(super::create(&path).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
    }
}
