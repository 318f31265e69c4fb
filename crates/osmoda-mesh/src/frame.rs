//! Framing on the TCP link: a 4-byte big-endian length, then that many bytes (a Noise message).
//! A length of 0 or above [`MAX_FRAME`] is refused before any body byte is read or buffered, so
//! a peer can make us hold at most one frame. [`Decoder`] is the pure, incremental decoder the
//! fuzz target drives; [`read_frame`]/[`write_frame`] are the async edges.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body: Noise's largest message.
pub const MAX_FRAME: usize = 65_535;

/// Why a byte stream is not a frame sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Length 0 (never sent: every Noise message has at least a tag or a key).
    #[error("empty frame")]
    Empty,
    /// Length above [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    Oversized(u32),
}

/// Incremental decoder: feed bytes, take whole frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `Ok(None)` while incomplete.
    ///
    /// # Errors
    /// [`FrameError`] for a length the stream may never carry; the stream is then unusable.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        check_len(len)?;
        let len = len as usize;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }

    /// Bytes buffered and not yet returned.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn check_len(len: u32) -> Result<(), FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len as usize > MAX_FRAME {
        return Err(FrameError::Oversized(len));
    }
    Ok(())
}

/// `data` with its length prefix.
///
/// # Panics
/// Never for `data.len()` in `1..=MAX_FRAME`; callers only frame Noise messages.
pub fn encode(data: &[u8]) -> Vec<u8> {
    debug_assert!(!data.is_empty() && data.len() <= MAX_FRAME);
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Reads one frame. The body is read into a buffer of exactly its size, never zeroed first;
/// give a buffered reader (as the link does) so a frame costs one read call, not two.
///
/// # Errors
/// I/O errors (end of stream included, also inside a body) and, as `InvalidData`, a
/// [`FrameError`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes(head);
    check_len(len).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let len = len as usize;
    let mut body = Vec::with_capacity(len);
    r.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended {} bytes into a {len}-byte frame",
                body.len()
            ),
        ));
    }
    Ok(body)
}

/// Writes one frame: the length prefix and `data` in one vectored write (no copy, one
/// segment on a socket with Nagle off), then a flush.
///
/// # Errors
/// I/O errors; `InvalidInput` for an empty or oversized body.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() || data.len() > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("frame of {} bytes", data.len()),
        ));
    }
    let head = (data.len() as u32).to_be_bytes();
    let mut both = bytes::Buf::chain(&head[..], data);
    w.write_all_buf(&mut both).await?;
    w.flush().await
}

/// The body of the `frame_decoder` fuzz target: arbitrary bytes fed in arbitrary pieces must
/// give frames that re-encode to exactly the consumed prefix, or an error, never a panic, and
/// never buffer more than one frame plus one read.
pub fn fuzz_one(data: &[u8]) {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    let split = data.first().map_or(1, |b| usize::from(*b).max(1));
    for chunk in data.chunks(split) {
        d.feed(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= MAX_FRAME);
                    out.extend_from_slice(&encode(&f));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(d.pending() <= 4 + MAX_FRAME + chunk.len());
    }
    assert_eq!(
        &data[..out.len()],
        &out[..],
        "frames re-encode to the input"
    );
    assert_eq!(out.len() + d.pending(), data.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_and_bad_lengths() {
        let wire: Vec<u8> = [encode(b"abc"), encode(&[7u8; 300]), encode(b"z")].concat();
        for split in 1..wire.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for c in wire.chunks(split) {
                d.feed(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, vec![b"abc".to_vec(), vec![7u8; 300], b"z".to_vec()]);
            assert_eq!(d.pending(), 0);
        }
        let mut d = Decoder::default();
        d.feed(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        let mut d = Decoder::default();
        d.feed(&65_536u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::Oversized(65_536)));
        let mut d = Decoder::default();
        d.feed(&u32::MAX.to_be_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::Oversized(u32::MAX)));
        // Truncated: a header promising more than arrives stays pending.
        let mut d = Decoder::default();
        d.feed(&[0, 0, 0, 9, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
    }

    /// Frames through a pipe that passes a few bytes at a time: every split of header and body
    /// arrives whole; a stream cut inside a body is an error, not a short frame.
    #[tokio::test]
    async fn async_edges_survive_short_reads_and_writes() {
        for cap in [1, 3, 4, 5, 64] {
            let (mut a, mut b) = tokio::io::duplex(cap);
            let frames = [b"abc".to_vec(), vec![7u8; 300], vec![9u8; MAX_FRAME]];
            let sent = frames.clone();
            let writer = tokio::spawn(async move {
                for f in &sent {
                    write_frame(&mut a, f).await.unwrap();
                }
            });
            for f in &frames {
                assert_eq!(&read_frame(&mut b).await.unwrap(), f, "cap {cap}");
            }
            writer.await.unwrap();
        }
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        use tokio::io::AsyncWriteExt as _;
        a.write_all(&[0, 0, 0, 10, 1, 2, 3]).await.unwrap();
        drop(a);
        let e = read_frame(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    }

    #[tokio::test]
    async fn async_edges_refuse_bad_lengths_before_reading_the_body() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        write_frame(&mut a, b"hello").await.unwrap();
        assert_eq!(read_frame(&mut b).await.unwrap(), b"hello");
        assert!(write_frame(&mut a, &[]).await.is_err());
        assert!(write_frame(&mut a, &vec![0u8; MAX_FRAME + 1])
            .await
            .is_err());
        use tokio::io::AsyncWriteExt as _;
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let e = read_frame(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }

    /// The fuzz body on stable: random bytes, and valid streams cut and corrupted.
    #[test]
    fn fuzz_body_on_stable() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let n = (next() % 300) as usize;
            let mut data: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            if next() % 2 == 0 {
                // Mostly-valid streams: real frames, then a cut or a flipped length byte.
                let mut w = Vec::new();
                for _ in 0..(next() % 4) {
                    let len = 1 + (next() % 40) as usize;
                    w.extend(encode(&vec![next() as u8; len]));
                }
                if !w.is_empty() && next() % 3 == 0 {
                    let i = (next() as usize) % w.len();
                    w[i] ^= 0x80;
                }
                w.truncate(w.len().saturating_sub((next() % 3) as usize));
                data = w;
            }
            fuzz_one(&data);
        }
    }
}
