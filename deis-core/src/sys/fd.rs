//! [`AsyncFdIo`]: a pipe end or a pseudo-terminal's master, non-blocking, on the tokio
//! reactor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// A descriptor we own, switched to non-blocking and registered with the tokio reactor:
/// reads and writes wait for readiness instead of blocking a thread. Also an
/// [`AsyncRead`].
#[derive(Debug)]
pub struct AsyncFdIo {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncFdIo {
    /// Takes `fd` (read and written). Needs a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        Self::with_interest(fd, Interest::READABLE | Interest::WRITABLE)
    }

    /// Takes `fd`, to be waited on only for `interest` (a pipe's read end is never
    /// writable). Needs a tokio runtime.
    pub fn with_interest(fd: OwnedFd, interest: Interest) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // SAFETY: an `OwnedFd` is an open descriptor that it alone closes, on drop; it is
        // moved into the `AsyncFd` and never handed out mutably or replaced, so it stays
        // open and the same descriptor for as long as the `AsyncFd` lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, interest) }?;
        Ok(Self { fd })
    }

    /// Reads once into `buf`, waiting until there is something to read; `Ok(0)` at end
    /// of file.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| retry_interrupted(|| rustix::io::read(fd.get_ref(), &mut *buf))) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads what is there right now, without waiting: `None` when nothing is (or on an
    /// error, which the next [`read`](Self::read) reports).
    pub fn read_now(&self, buf: &mut [u8]) -> Option<usize> {
        // A readiness that this EAGAIN leaves stale only costs the next `read` one more
        // try.
        retry_interrupted(|| rustix::io::read(self.fd.get_ref(), &mut *buf)).ok()
    }

    /// Writes all of `bytes`, waiting whenever the other side is full.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| retry_interrupted(|| rustix::io::write(fd.get_ref(), bytes))) {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}

impl AsFd for AsyncFdIo {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl AsyncRead for AsyncFdIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| retry_interrupted(|| rustix::io::read(fd.get_ref(), &mut *unfilled))) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Runs `op` again while a signal interrupts it; maps the error to [`io::Error`].
fn retry_interrupted<T>(mut op: impl FnMut() -> rustix::io::Result<T>) -> io::Result<T> {
    loop {
        match op() {
            Err(rustix::io::Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn bytes_travel_through_a_pipe_with_backpressure() {
        let (r, w) = std::io::pipe().unwrap();
        let reader = AsyncFdIo::with_interest(r.into(), Interest::READABLE).unwrap();
        let writer = AsyncFdIo::with_interest(w.into(), Interest::WRITABLE).unwrap();
        assert_eq!(reader.read_now(&mut [0u8; 8]), None, "nothing there yet, and no waiting");
        // More than a pipe holds (64 KiB): the writer must wait for the reader.
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let write = tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            // Dropped here: end of file for the reader.
        });
        let mut reader = reader;
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        write.await.unwrap();
        assert!(got == data, "{} bytes came back out of {}", got.len(), data.len());
        assert_eq!(reader.read(&mut [0u8; 8]).await.unwrap(), 0);
    }
}
