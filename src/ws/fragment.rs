//! Splits every large WebSocket frame a client sends into frames of at most
//! [`PIECE`] bytes, on the byte stream below tungstenite.
//!
//! Ours because no crate does it and the alternative costs memory: tungstenite reads
//! a whole frame into its connection's read buffer, hands the frame out as a slice
//! of that buffer, and keeps the grown buffer for the connection's life (measured:
//! one 1 MiB frame on each of 150 connections kept 152 MiB; through this, 47 MiB of
//! allocator high-water mark that 75 more connections did not raise). A message sent
//! as pieces is instead assembled in a buffer of its own, freed once the message is
//! handled, so the read buffer never grows past a piece. Fragmenting is what RFC 6455
//! §5.4 lets any intermediary do: the data frame keeps its opcode with FIN cleared,
//! the rest follow as continuation frames, the last carries the original FIN; each
//! piece keeps the client's mask key, which stays aligned because a piece is a
//! multiple of four bytes. Control frames (at most 125 bytes) pass unchanged.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest frame tungstenite is handed: big enough that the longest chat message
/// (4,000 characters, up to 16 KB of UTF-8) is one frame, a multiple of four (mask
/// alignment), and under 64 KiB so its header is short.
pub(crate) const PIECE: u64 = 20 * 1024;
/// Header bytes read ahead from the socket at a time.
const READ_AHEAD: usize = 4096;
/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask key.
const MAX_HEADER: usize = 14;

/// A client's byte stream with its large frames split; writes pass through.
#[derive(Debug)]
pub(crate) struct Refragment<S> {
    inner: S,
    /// Bytes read ahead from `inner`, `buf[pos..]` not yet passed on.
    buf: Vec<u8>,
    pos: usize,
    /// A header to pass on, `header[at..len]` not yet passed on.
    header: [u8; MAX_HEADER],
    header_len: usize,
    header_at: usize,
    /// Payload bytes of the current (piece of a) frame still to pass on.
    piece_left: u64,
    /// The frame being split: payload after the current piece, its FIN, its mask.
    rest_left: u64,
    rest_fin: bool,
    mask: Option<[u8; 4]>,
}

impl<S> Refragment<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            pos: 0,
            header: [0; MAX_HEADER],
            header_len: 0,
            header_at: 0,
            piece_left: 0,
            rest_left: 0,
            rest_fin: false,
            mask: None,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Prepares the header of a frame to pass on.
    fn set_header(&mut self, first: u8, len: u64, mask: Option<[u8; 4]>) {
        let mut h = [0u8; MAX_HEADER];
        h[0] = first;
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        let mut n = 2;
        if len < 126 {
            h[1] = mask_bit | len as u8;
        } else if len <= u64::from(u16::MAX) {
            h[1] = mask_bit | 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            n = 4;
        } else {
            h[1] = mask_bit | 127;
            h[2..10].copy_from_slice(&len.to_be_bytes());
            n = 10;
        }
        if let Some(key) = mask {
            h[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        self.header = h;
        self.header_len = n;
        self.header_at = 0;
        self.piece_left = len;
    }

    /// Reads the next frame header from `buffered()`, if it is all there, and
    /// prepares what to pass on. `None` when more bytes are needed.
    fn parse_header(&mut self) -> Option<()> {
        let data = self.buffered();
        let (&b0, &b1) = (data.first()?, data.get(1)?);
        let masked = b1 & 0x80 != 0;
        let (len, mut n) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([*data.get(2)?, *data.get(3)?])), 4),
            127 => {
                let bytes: [u8; 8] = data.get(2..10)?.try_into().ok()?;
                (u64::from_be_bytes(bytes), 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            let key: [u8; 4] = data.get(n..n + 4)?.try_into().ok()?;
            n += 4;
            Some(key)
        } else {
            None
        };
        self.pos += n;
        let is_control = b0 & 0x08 != 0;
        if is_control || len <= PIECE {
            // Verbatim: a control frame, or a data frame small enough already.
            let mut h = [0u8; MAX_HEADER];
            h[..n].copy_from_slice(&self.buf[self.pos - n..self.pos]);
            self.header = h;
            self.header_len = n;
            self.header_at = 0;
            self.piece_left = len;
        } else {
            // The first piece keeps the opcode and RSV bits, with FIN cleared.
            self.rest_left = len - PIECE;
            self.rest_fin = b0 & 0x80 != 0;
            self.mask = mask;
            self.set_header(b0 & 0x7f, PIECE, mask);
        }
        Some(())
    }

    /// Prepares the header of the next continuation piece of a frame being split.
    fn next_piece(&mut self) {
        let len = self.rest_left.min(PIECE);
        self.rest_left -= len;
        let fin = if self.rest_left == 0 && self.rest_fin { 0x80 } else { 0 };
        self.set_header(fin, len, self.mask);
    }
}

impl<S: AsyncRead + Unpin> Refragment<S> {
    /// Reads more bytes from the socket into the read-ahead buffer; `false` at EOF.
    ///
    /// The bytes land on the stack first and only those that came are kept: the
    /// connection's task is polled for its writer too, so most polls find nothing,
    /// and a poll that finds nothing allocates nothing (reading into the buffer
    /// itself cost a 4 KiB allocation, zeroed, about three times a message in the
    /// open loop).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
        let mut read = ReadBuf::uninit(&mut stack);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut read);
        self.buf.extend_from_slice(read.filled());
        if polled.is_pending() && self.buf.is_empty() {
            // An idle connection keeps no read-ahead buffer.
            self.buf = Vec::new();
        }
        ready!(polled)?;
        Poll::Ready(Ok(!read.filled().is_empty()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Refragment<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if this.header_at < this.header_len {
                let part = &this.header[this.header_at..this.header_len];
                let n = part.len().min(out.remaining());
                out.put_slice(&part[..n]);
                this.header_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.piece_left > 0 {
                let want = usize::try_from(this.piece_left).unwrap_or(usize::MAX).min(out.remaining());
                if !this.buffered().is_empty() {
                    let n = want.min(this.buffered().len());
                    out.put_slice(&this.buf[this.pos..this.pos + n]);
                    this.pos += n;
                    this.piece_left -= n as u64;
                    return Poll::Ready(Ok(()));
                }
                // Payload goes straight from the socket to the reader, no copy here
                // (tungstenite hands over an initialized buffer, so this zeroes nothing).
                let mut read = ReadBuf::new(out.initialize_unfilled_to(want));
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                let n = read.filled().len();
                out.advance(n);
                this.piece_left -= n as u64;
                return Poll::Ready(Ok(()));
            }
            if this.rest_left > 0 {
                this.next_piece();
                continue;
            }
            if this.parse_header().is_some() {
                continue;
            }
            if !ready!(this.poll_fill(cx))? {
                // End of stream: pass on whatever partial header there was, then EOF.
                let rest = this.buffered().len().min(out.remaining());
                out.put_slice(&this.buf[this.pos..this.pos + rest]);
                this.pos += rest;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Refragment<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Bytes, Message};

    use super::*;

    /// A client and a server that reads through `Refragment` and refuses any frame
    /// over a piece, so a message only arrives if it was split.
    async fn pair() -> (WebSocketStream<tokio::io::DuplexStream>, WebSocketStream<Refragment<tokio::io::DuplexStream>>)
    {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let config = WebSocketConfig::default().max_frame_size(Some(PIECE as usize)).max_message_size(Some(4 << 20));
        let client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(Refragment::new(b), Role::Server, Some(config)).await;
        (client, server)
    }

    #[tokio::test]
    async fn messages_of_every_size_arrive_whole_through_frames_of_at_most_a_piece() {
        let (mut client, mut server) = pair().await;
        let piece = PIECE as usize;
        let sizes = [0, 1, 125, 126, 65_535, piece - 1, piece, piece + 1, 2 * piece, 2 * piece + 3, 1 << 20];
        let sender = tokio::spawn(async move {
            for (i, size) in sizes.iter().enumerate() {
                let text: String = (0..*size).map(|j| char::from(b'a' + ((i + j) % 26) as u8)).collect();
                client.send(Message::text(text)).await.unwrap();
                client.send(Message::Ping(Bytes::from_static(b"between"))).await.unwrap();
                client.send(Message::binary(vec![7u8; *size])).await.unwrap();
            }
            client
        });
        for (i, size) in sizes.iter().enumerate() {
            let expected: String = (0..*size).map(|j| char::from(b'a' + ((i + j) % 26) as u8)).collect();
            match server.next().await.unwrap().unwrap() {
                Message::Text(text) => assert_eq!(text.as_str(), expected, "text of {size}"),
                other => panic!("{size}: {other:?}"),
            }
            assert_eq!(server.next().await.unwrap().unwrap(), Message::Ping(Bytes::from_static(b"between")));
            assert_eq!(server.next().await.unwrap().unwrap(), Message::binary(vec![7u8; *size]), "binary of {size}");
        }
        let mut client = sender.await.unwrap();
        client.close(None).await.unwrap();
    }

    /// A socket that hands out `bytes` `chunk` at a time, pending before each.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        chunk: usize,
        ready: bool,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            let n = self.chunk.min(out.remaining()).min(self.bytes.len() - self.at);
            out.put_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Headers and payloads cut at every point, and many frames in one read, arrive
    /// as the messages that were sent.
    #[tokio::test]
    async fn frames_arrive_whole_however_the_socket_cuts_them() {
        let piece = PIECE as usize;
        let sizes = [0, 5, 125, 126, 300, piece, piece + 7, 3 * piece + 1];
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut client = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let text = |size: usize| -> String { (0..size).map(|j| char::from(b'a' + (j % 26) as u8)).collect() };
        for size in sizes {
            client.send(Message::text(text(size))).await.unwrap();
        }
        drop(client);
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut b, &mut bytes).await.unwrap();
        let config = WebSocketConfig::default()
            .read_buffer_size(256)
            .max_frame_size(Some(piece))
            .max_message_size(Some(4 << 20));
        for chunk in [1, 2, 3, 13, 255, 4096, 1 << 20] {
            let socket = Refragment::new(Trickle { bytes: bytes.clone(), at: 0, chunk, ready: false });
            let mut server = WebSocketStream::from_raw_socket(socket, Role::Server, Some(config)).await;
            for size in sizes {
                match server.next().await.unwrap().unwrap() {
                    Message::Text(got) => assert_eq!(got.as_str(), text(size), "{size} bytes in chunks of {chunk}"),
                    other => panic!("{size} in chunks of {chunk}: {other:?}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn the_server_still_refuses_a_message_over_its_limit() {
        let (mut client, mut server) = pair().await;
        tokio::spawn(async move {
            let _ = client.send(Message::text("x".repeat(5 << 20))).await;
        });
        let refused = server.next().await.unwrap();
        assert!(matches!(refused, Err(tokio_tungstenite::tungstenite::Error::Capacity(_))), "{refused:?}");
    }
}
