//! A counting TCP relay, put between two real peers to see how many connections one opens to
//! the other (connection reuse, pooling) without changing what they say.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use crate::serving::Serving;

/// Accepts on `127.0.0.1` and relays every connection, bytes unchanged in both directions, to a
/// fixed target. Stops (with its connections) when dropped.
pub struct TcpRelay {
    serving: Serving,
}

// === impl TcpRelay ===

impl TcpRelay {
    /// Starts a relay to `target` on a port the OS picks.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let serving = Serving::bind(SocketAddr::from(([127, 0, 0, 1], 0)), move |client| {
            relay(client, target)
        })
        .await?;
        Ok(Self { serving })
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.serving.addr()
    }

    /// How many connections the relay has accepted (each one is a connection to the target).
    pub fn connections(&self) -> u64 {
        self.serving.accepted()
    }
}

/// Copies both ways until both sides are done; a target that refuses closes the client.
async fn relay(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    // A reset on either side just ends this connection: there is no one to report it to.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
