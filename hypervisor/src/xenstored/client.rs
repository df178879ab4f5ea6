//! In-process xenstore connections: how the daemon's own toolstack, backends and
//! frontends talk to xenstored, with the same semantics a socket client gets (a
//! domid, a privilege level, relative paths, transactions, watches).

use std::sync::Arc;

use tokio::sync::{mpsc as tmpsc, Mutex};

use super::server::{Command, Shared};
use crate::xenstore::store::ConnId;
use crate::xenstore::wire::{Message, MsgType, XsError};
use crate::DomId;

/// A watch firing: the node path and the token given to `watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (relative if the watch was registered relative).
    pub path: String,
    /// The watch's token.
    pub token: String,
}

/// Errors of an in-process request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XsClientError {
    /// xenstored answered with an error.
    #[error("xenstore: {}", .0.name())]
    Xs(XsError),
    /// The connection is gone (xenstored stopped or the domain was destroyed).
    #[error("xenstore connection closed")]
    Closed,
    /// A reply that does not parse.
    #[error("malformed xenstore reply")]
    BadReply,
}

impl XsClientError {
    /// The xenstore error, if that is what this is.
    pub fn xs(&self) -> Option<XsError> {
        match self {
            XsClientError::Xs(e) => Some(*e),
            _ => None,
        }
    }
}

/// One in-process connection. Requests are serialised per connection (one in flight,
/// like libxenstore); watch events arrive on a separate queue.
#[derive(Debug)]
pub struct XsClient {
    shared: Arc<Shared>,
    conn: ConnId,
    domid: DomId,
    replies: Mutex<tmpsc::UnboundedReceiver<Message>>,
    watches: Mutex<tmpsc::UnboundedReceiver<Message>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

pub(crate) fn connect(shared: &Arc<Shared>, domid: DomId, privileged: bool) -> XsClient {
    let conn = shared.new_conn_id();
    let (rtx, rrx) = tmpsc::unbounded_channel();
    let (wtx, wrx) = tmpsc::unbounded_channel();
    shared.send(Command::Connect {
        conn,
        domid,
        privileged,
        replies: rtx,
        watches: wtx,
    });
    XsClient {
        shared: Arc::clone(shared),
        conn,
        domid,
        replies: Mutex::new(rrx),
        watches: Mutex::new(wrx),
    }
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    v
}

fn strings(payload: &[u8]) -> Vec<String> {
    payload
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

impl XsClient {
    /// The domain this connection acts as.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// Sends one raw request and waits for its reply payload.
    pub async fn request(
        &self,
        ty: MsgType,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XsClientError> {
        let mut replies = self.replies.lock().await;
        let msg = Message {
            msg_type: ty as u32,
            req_id: 0,
            tx_id,
            payload,
        };
        if !self.shared.send(Command::Request {
            conn: self.conn,
            msg,
        }) {
            return Err(XsClientError::Closed);
        }
        let reply = replies.recv().await.ok_or(XsClientError::Closed)?;
        if reply.msg_type == MsgType::Error as u32 {
            return Err(XsClientError::Xs(reply.error().unwrap_or(XsError::EINVAL)));
        }
        Ok(reply.payload)
    }

    /// `READ`.
    pub async fn read(&self, tx: u32, path: &str) -> Result<Vec<u8>, XsClientError> {
        self.request(MsgType::Read, tx, with_nul(path)).await
    }

    /// `READ` as UTF-8 text (lossy).
    pub async fn read_string(&self, tx: u32, path: &str) -> Result<String, XsClientError> {
        Ok(String::from_utf8_lossy(&self.read(tx, path).await?).into_owned())
    }

    /// `READ`, mapping ENOENT to `None`.
    pub async fn try_read_string(
        &self,
        tx: u32,
        path: &str,
    ) -> Result<Option<String>, XsClientError> {
        match self.read_string(tx, path).await {
            Ok(v) => Ok(Some(v)),
            Err(XsClientError::Xs(XsError::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `WRITE`.
    pub async fn write(&self, tx: u32, path: &str, value: &[u8]) -> Result<(), XsClientError> {
        let mut p = with_nul(path);
        p.extend_from_slice(value);
        self.request(MsgType::Write, tx, p).await.map(|_| ())
    }

    /// `MKDIR`.
    pub async fn mkdir(&self, tx: u32, path: &str) -> Result<(), XsClientError> {
        self.request(MsgType::Mkdir, tx, with_nul(path))
            .await
            .map(|_| ())
    }

    /// `RM` (subtree).
    pub async fn rm(&self, tx: u32, path: &str) -> Result<(), XsClientError> {
        self.request(MsgType::Rm, tx, with_nul(path))
            .await
            .map(|_| ())
    }

    /// `DIRECTORY`: child names in creation order.
    pub async fn directory(&self, tx: u32, path: &str) -> Result<Vec<String>, XsClientError> {
        Ok(strings(
            &self.request(MsgType::Directory, tx, with_nul(path)).await?,
        ))
    }

    /// `GET_PERMS`.
    pub async fn get_perms(&self, tx: u32, path: &str) -> Result<Vec<String>, XsClientError> {
        Ok(strings(
            &self.request(MsgType::GetPerms, tx, with_nul(path)).await?,
        ))
    }

    /// `SET_PERMS` with perms like `["n0", "r5"]`.
    pub async fn set_perms(
        &self,
        tx: u32,
        path: &str,
        perms: &[String],
    ) -> Result<(), XsClientError> {
        let mut p = with_nul(path);
        for perm in perms {
            p.extend_from_slice(perm.as_bytes());
            p.push(0);
        }
        self.request(MsgType::SetPerms, tx, p).await.map(|_| ())
    }

    /// `WATCH`; events (the initial one included) arrive through [`XsClient::next_event`].
    pub async fn watch(&self, path: &str, token: &str) -> Result<(), XsClientError> {
        let mut p = with_nul(path);
        p.extend_from_slice(&with_nul(token));
        self.request(MsgType::Watch, 0, p).await.map(|_| ())
    }

    /// `UNWATCH`.
    pub async fn unwatch(&self, path: &str, token: &str) -> Result<(), XsClientError> {
        let mut p = with_nul(path);
        p.extend_from_slice(&with_nul(token));
        self.request(MsgType::Unwatch, 0, p).await.map(|_| ())
    }

    /// `TRANSACTION_START`: the new transaction id.
    pub async fn transaction_start(&self) -> Result<u32, XsClientError> {
        let r = self.request(MsgType::TransactionStart, 0, vec![0]).await?;
        strings(&r)
            .first()
            .and_then(|s| s.parse().ok())
            .ok_or(XsClientError::BadReply)
    }

    /// `TRANSACTION_END`: commit (`true`) or abort. A conflicting commit fails with EAGAIN.
    pub async fn transaction_end(&self, tx: u32, commit: bool) -> Result<(), XsClientError> {
        let arg = if commit { "T" } else { "F" };
        self.request(MsgType::TransactionEnd, tx, with_nul(arg))
            .await
            .map(|_| ())
    }

    /// The next watch event (waits).
    pub async fn next_event(&self) -> Result<WatchEvent, XsClientError> {
        let msg = self
            .watches
            .lock()
            .await
            .recv()
            .await
            .ok_or(XsClientError::Closed)?;
        let mut parts = msg.payload.split(|&b| b == 0);
        let path = parts.next().ok_or(XsClientError::BadReply)?;
        let token = parts.next().ok_or(XsClientError::BadReply)?;
        Ok(WatchEvent {
            path: String::from_utf8_lossy(path).into_owned(),
            token: String::from_utf8_lossy(token).into_owned(),
        })
    }

    /// A queued watch event, if any (does not wait).
    pub fn try_next_event(&self) -> Option<WatchEvent> {
        let mut q = self.watches.try_lock().ok()?;
        let msg = q.try_recv().ok()?;
        let mut parts = msg.payload.split(|&b| b == 0);
        let path = parts.next()?;
        let token = parts.next()?;
        Some(WatchEvent {
            path: String::from_utf8_lossy(path).into_owned(),
            token: String::from_utf8_lossy(token).into_owned(),
        })
    }
}

impl Drop for XsClient {
    fn drop(&mut self) {
        self.shared.send(Command::Disconnect { conn: self.conn });
    }
}
