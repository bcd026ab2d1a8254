//! A bound on the size of one inbound protocol message, checked before it is buffered.
//!
//! pgwire accepts a frontend message of up to 1 GiB (PostgreSQL's own bound) and buffers
//! it whole before decoding it, so without this a client could make the server hold 1 GiB
//! per connection before any check of ours ran. [`MessageLimit`] sits between the socket
//! and pgwire's framing and reads each message's length word as the bytes pass: a message
//! longer than the bound fails the read before its body is buffered, and the connection
//! ends with a FATAL 54000 (see `serve_socket`).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The reason a read failed: a message longer than the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageTooLarge {
    /// The message's length, as its length word gives it (the word included).
    pub(crate) bytes: u64,
    /// The bound (`PgServerConfig::message_bytes_max`).
    pub(crate) max: usize,
}

impl fmt::Display for MessageTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a protocol message of {} bytes is more than the limit of {} (message_bytes_max); \
             send large values in smaller pieces (COPY sends rows in messages of their own)",
            self.bytes, self.max
        )
    }
}

impl std::error::Error for MessageTooLarge {}

/// Where the scanner is in the stream of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// In a header: `typed` says whether it starts with a type byte (every message but the
    /// first, the startup packet), `have` how many header bytes have passed.
    Header {
        typed: bool,
        have: usize,
        length: [u8; 4],
    },
    /// In a body, with `left` bytes of it still to pass.
    Body { left: u64 },
}

/// Follows message boundaries in the bytes read from a client.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    position: Position,
    max: usize,
}

impl Scanner {
    /// A scanner at the start of a connection's messages: the startup packet comes first.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            position: Position::Header {
                typed: false,
                have: 0,
                length: [0; 4],
            },
            max,
        }
    }

    /// Passes `bytes`, the next ones read; an error as soon as a length word announces a
    /// message longer than the bound.
    pub(crate) fn pass(&mut self, mut bytes: &[u8]) -> Result<(), MessageTooLarge> {
        while !bytes.is_empty() {
            match &mut self.position {
                Position::Body { left } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    bytes = &bytes[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.position = Position::Header {
                            typed: true,
                            have: 0,
                            length: [0; 4],
                        };
                    }
                }
                Position::Header {
                    typed,
                    have,
                    length,
                } => {
                    let start = usize::from(*typed);
                    if *have >= start {
                        length[*have - start] = bytes[0];
                    }
                    *have += 1;
                    bytes = &bytes[1..];
                    if *have == start + 4 {
                        let declared = u64::from(u32::from_be_bytes(*length));
                        if declared > self.max as u64 {
                            return Err(MessageTooLarge {
                                bytes: declared,
                                max: self.max,
                            });
                        }
                        // The length counts its own 4 bytes; one below 4 is pgwire's to
                        // refuse, and leaves nothing here to skip.
                        let left = declared.saturating_sub(4);
                        self.position = if left == 0 {
                            Position::Header {
                                typed: true,
                                have: 0,
                                length: [0; 4],
                            }
                        } else {
                            Position::Body { left }
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

/// A client stream whose reads fail once a message longer than the bound is announced.
pub(crate) struct MessageLimit<S> {
    inner: S,
    scanner: Scanner,
    failed: Option<MessageTooLarge>,
}

impl<S> MessageLimit<S> {
    /// Wraps `inner`, whose bytes so far `scanner` has passed.
    pub(crate) fn new(inner: S, scanner: Scanner) -> Self {
        Self {
            inner,
            scanner,
            failed: None,
        }
    }
}

fn too_large(e: MessageTooLarge) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The bound a failed read reports, if that is why it failed.
pub(crate) fn message_too_large(e: &io::Error) -> Option<MessageTooLarge> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<MessageTooLarge>())
        .copied()
}

impl<S: AsyncRead + Unpin> AsyncRead for MessageLimit<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failed {
            return Poll::Ready(Err(too_large(e)));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled
            && let Err(e) = this.scanner.pass(&buf.filled()[before..])
        {
            // The bytes just read are dropped with the connection.
            buf.set_filled(before);
            this.failed = Some(e);
            return Poll::Ready(Err(too_large(e)));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for MessageLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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
    use super::*;

    fn typed(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn follows_messages_split_anywhere_and_stops_at_the_first_too_long() {
        let mut stream = Vec::new();
        // The startup packet: untyped.
        stream.extend_from_slice(&12u32.to_be_bytes());
        stream.extend_from_slice(&[0, 3, 0, 0, b'x', 0, 0, 0]);
        stream.extend(typed(b'Q', b"SELECT 1\0"));
        stream.extend(typed(b'S', b""));
        stream.extend(typed(b'Q', &[b'a'; 20]));
        for chunk in [1, 2, 3, 5, 7, stream.len()] {
            // Within the bound: every message passes, however the reads cut them.
            let mut scanner = Scanner::new(24);
            for piece in stream.chunks(chunk) {
                scanner.pass(piece).unwrap();
            }
            // One byte under the last message's length: refused, at its length word.
            let mut scanner = Scanner::new(23);
            let mut failed = None;
            for piece in stream.chunks(chunk) {
                if let Err(e) = scanner.pass(piece) {
                    failed = Some(e);
                    break;
                }
            }
            assert_eq!(
                failed,
                Some(MessageTooLarge { bytes: 24, max: 23 }),
                "{chunk}"
            );
        }
    }

    #[test]
    fn a_huge_length_word_is_refused_before_any_body() {
        let mut scanner = Scanner::new(1 << 20);
        scanner.pass(&8u32.to_be_bytes()).unwrap();
        scanner.pass(&[0, 3, 0, 0]).unwrap();
        let e = scanner.pass(&[b'Q', 0x3f, 0xff, 0xff, 0xff]).unwrap_err();
        assert_eq!(e.bytes, 0x3fff_ffff);
        let io = too_large(e);
        assert_eq!(message_too_large(&io), Some(e));
    }
}
