//! A blocking xenstore client over a unix socket, speaking xs_wire like libxenstore:
//! one request in flight, replies recognised by type, watch events (type 15) queued
//! whenever they arrive. External frontends, the demo and tests use it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::xenstore::wire::{FrameDecoder, Message, MsgType, XsError, PAYLOAD_MAX};

/// Errors of a socket client request.
#[derive(Debug, thiserror::Error)]
pub enum SocketClientError {
    /// xenstored answered with an error.
    #[error("xenstore error {}", .0.name())]
    Xs(XsError),
    /// The socket failed or closed.
    #[error("xenstore socket: {0}")]
    Io(#[from] io::Error),
    /// The daemon broke the protocol.
    #[error("xenstore protocol: {0}")]
    Protocol(String),
}

impl SocketClientError {
    /// The xenstore error name, if the daemon sent one.
    pub fn xs(&self) -> Option<XsError> {
        match self {
            SocketClientError::Xs(e) => Some(*e),
            _ => None,
        }
    }
}

/// A connection to xenstored's socket.
#[derive(Debug)]
pub struct SocketClient {
    stream: UnixStream,
    decoder: FrameDecoder,
    events: VecDeque<(String, String)>,
}

fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

impl SocketClient {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> io::Result<SocketClient> {
        Ok(SocketClient {
            stream: UnixStream::connect(path)?,
            decoder: FrameDecoder::new(),
            events: VecDeque::new(),
        })
    }

    fn read_message(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<Message>, SocketClientError> {
        loop {
            match self.decoder.next_message() {
                Ok(Some(m)) => return Ok(Some(m)),
                Ok(None) => {}
                Err(e) => return Err(SocketClientError::Protocol(e.to_string())),
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                self.stream.set_read_timeout(Some(left))?;
            } else {
                self.stream.set_read_timeout(None)?;
            }
            let mut buf = [0u8; 8192];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(SocketClientError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn queue_event(&mut self, m: &Message) {
        let mut parts = m.payload.split(|&b| b == 0);
        let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        self.events.push_back((path, token));
    }

    /// Sends a raw request and waits for its reply payload.
    pub fn request(
        &mut self,
        ty: MsgType,
        tx_id: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, SocketClientError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(SocketClientError::Xs(XsError::E2BIG));
        }
        let msg = Message {
            msg_type: ty as u32,
            req_id: 0,
            tx_id,
            payload: payload.to_vec(),
        };
        let mut buf = Vec::with_capacity(16 + payload.len());
        msg.encode_into(&mut buf);
        self.stream.write_all(&buf)?;
        loop {
            let m = self
                .read_message(None)?
                .ok_or_else(|| SocketClientError::Protocol("no reply".into()))?;
            if m.msg_type == MsgType::WatchEvent as u32 {
                self.queue_event(&m);
                continue;
            }
            if m.msg_type == MsgType::Error as u32 {
                return Err(SocketClientError::Xs(m.error().unwrap_or(XsError::EINVAL)));
            }
            if m.msg_type != ty as u32 {
                return Err(SocketClientError::Protocol(format!(
                    "reply type {} to a request of type {}",
                    m.msg_type, ty as u32
                )));
            }
            return Ok(m.payload);
        }
    }

    /// `READ`.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, SocketClientError> {
        self.request(MsgType::Read, 0, &nul(path))
    }

    /// `WRITE`.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), SocketClientError> {
        let mut p = nul(path);
        p.extend_from_slice(value);
        self.request(MsgType::Write, 0, &p).map(|_| ())
    }

    /// `DIRECTORY`.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, SocketClientError> {
        let r = self.request(MsgType::Directory, 0, &nul(path))?;
        Ok(r.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }

    /// `RM`.
    pub fn rm(&mut self, path: &str) -> Result<(), SocketClientError> {
        self.request(MsgType::Rm, 0, &nul(path)).map(|_| ())
    }

    /// `WATCH`.
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), SocketClientError> {
        let mut p = nul(path);
        p.extend_from_slice(&nul(token));
        self.request(MsgType::Watch, 0, &p).map(|_| ())
    }

    /// Waits up to `timeout` for a watch event `(path, token)`.
    pub fn wait_event(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(String, String)>, SocketClientError> {
        if let Some(e) = self.events.pop_front() {
            return Ok(Some(e));
        }
        let deadline = Instant::now() + timeout;
        match self.read_message(Some(deadline))? {
            Some(m) if m.msg_type == MsgType::WatchEvent as u32 => {
                self.queue_event(&m);
                Ok(self.events.pop_front())
            }
            Some(m) => Err(SocketClientError::Protocol(format!(
                "unsolicited message type {}",
                m.msg_type
            ))),
            None => Ok(None),
        }
    }

    /// Writes raw bytes to the socket (for protocol tests).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The underlying stream (for protocol tests).
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }
}
