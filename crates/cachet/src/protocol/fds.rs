//! Passing file descriptors over the Unix socket (SCM_RIGHTS): how the client hands the
//! build's jobserver pipe to the server. The fds ride on the client's first write and are
//! taken by the server's first read, which therefore uses recvmsg.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// At most this many fds are accepted with one message.
const MAX_FDS: usize = 4;

/// Writes all of `bytes`, with `fds` attached to the first byte.
pub(crate) fn send_with_fds(
    socket: impl AsFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let socket = socket.as_fd();
    if fds.is_empty() {
        return write_all(socket, bytes);
    }
    let mut space = vec![MaybeUninit::uninit(); SendAncillaryMessage::ScmRights(fds).size()];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "no room for the fds in the control buffer",
        ));
    }
    // MSG_NOSIGNAL: a server gone away is an error here, not a SIGPIPE for the client.
    let sent = rustix::io::retry_on_intr(|| {
        rustix::net::sendmsg(
            socket,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
    })?;
    write_all(socket, &bytes[sent..])
}

fn write_all(socket: BorrowedFd<'_>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n =
            rustix::io::retry_on_intr(|| rustix::net::send(socket, bytes, SendFlags::NOSIGNAL))?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// One recvmsg on a non-blocking socket: the bytes read (empty at end of stream) and any
/// fds that came with them (CLOEXEC). `WouldBlock` when nothing is there yet.
///
/// `socket` must be open for the length of the call (the caller holds its stream).
pub(crate) fn recv_with_fds(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // SAFETY: the caller keeps the socket open for this call (see the doc above); the
    // borrow does not outlive it.
    let socket = unsafe { BorrowedFd::borrow_raw(socket) };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        // CLOEXEC: a compiler the server starts must not inherit a client's fds.
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) {
        // More fds than we take: the kernel closed the rest; ours are still fine to drop.
        tracing::warn!("a client sent more than {MAX_FDS} descriptors");
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn fds_travel_with_the_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        send_with_fds(&a, b"hello", &[file.as_fd(), file.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 2);
        // The received fd is the same open file.
        let st = |fd: BorrowedFd<'_>| {
            let s = rustix::fs::fstat(fd).unwrap();
            (s.st_dev, s.st_ino)
        };
        assert_eq!(st(fds[0].as_fd()), st(file.as_fd()));
        // Without fds it is a plain write.
        send_with_fds(&a, b"more", &[]).unwrap();
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"more"[..], 0));
    }
}
