//! A TCP link the test controls, between a node and what it talks to (PostgreSQL,
//! Redis, or a WebSocket client and the node): it can pass bytes, pass them late,
//! hold them (a dead peer: packets dropped, no close), or go down (every connection
//! closed and new ones refused, as when a server stops).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Bytes pass at once.
    Pass,
    /// Every byte arrives this late, in both directions.
    Lag(Duration),
    /// Nothing passes and nothing is closed: the peer vanished without a word.
    Hold,
    /// Every connection is closed and new ones are refused.
    Down,
}

pub(crate) struct Link {
    pub(crate) port: u16,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    pub(crate) async fn start(target: String, mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let (mode, watching) = watch::channel(mode);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *watching.borrow() == Mode::Down {
                    continue; // dropped: the connection is refused
                }
                let Ok(outbound) = TcpStream::connect(target.as_str()).await else { continue };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                tokio::spawn(pipe(in_read, out_write, watching.clone()));
                tokio::spawn(pipe(out_read, in_write, watching.clone()));
            }
        });
        Self { port, mode, task }
    }

    pub(crate) fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub(crate) fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A PostgreSQL URL through this link, with the query of `url` (its schema).
    pub(crate) fn postgres_url(&self, url: &str) -> String {
        let (_, rest) = url.split_once("://").expect("a URL");
        let (_, path) = rest.split_once('/').expect("a URL with a database");
        format!("postgres://postgres@127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
        self.set(Mode::Down);
    }
}

/// Copies `from` to `to` as the mode says, in order; ends (closing both) when the
/// link goes down or either side closes.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let mut writer_mode = mode.clone();
    let writer = tokio::spawn(async move {
        while let Some((read_at, bytes)) = rx.recv().await {
            loop {
                let current = *writer_mode.borrow_and_update();
                match current {
                    Mode::Down => return,
                    Mode::Hold => {
                        if writer_mode.changed().await.is_err() {
                            return;
                        }
                    }
                    Mode::Lag(delay) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(read_at + delay) => break,
                            changed = writer_mode.changed() => if changed.is_err() { return },
                        }
                    }
                    Mode::Pass => break,
                }
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While held, read nothing: the sender's buffers fill as with a dead peer.
        while *mode.borrow_and_update() == Mode::Hold {
            if mode.changed().await.is_err() {
                return;
            }
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(n) if n > 0 => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                _ => break,
            },
            changed = mode.changed() => {
                if changed.is_err() || *mode.borrow() == Mode::Down {
                    break;
                }
            }
        }
    }
    drop(tx);
    if *mode.borrow() == Mode::Down {
        writer.abort();
    } else {
        let _ = writer.await;
    }
}
