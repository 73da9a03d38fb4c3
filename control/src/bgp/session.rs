//! One peer's session as a tokio task: it opens connections (unless passive), takes
//! the ones the listener hands it, runs each through the RFC 4271 state machine of
//! [`fsm`](super::fsm), resolves connection collisions (RFC 4271 6.8) and reports to
//! the speaker: session up, UPDATEs, route-refresh requests, session down.
//!
//! A connection's bytes are read by a task of its own that cuts them into messages
//! with the header checks of [`frame`](super::frame); this task decodes them, so a
//! bad message anywhere ends in the right NOTIFICATION and a closed connection.

use super::frame::{self, Notification};
use super::fsm::{self, Action, PeerOpen, State, Timer, Timers};
use super::rib::PeerId;
use super::socket::{self, Dial};
use super::wire::{self, Decoding, Family, Message, Open, Update};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a session reports to the speaker.
#[derive(Debug)]
pub enum Event {
    State {
        peer: PeerId,
        state: State,
    },
    Up {
        peer: PeerId,
        ours: Open,
        theirs: Open,
        /// Our address on the connection (next-hop self).
        local: IpAddr,
    },
    Update {
        peer: PeerId,
        update: Update,
    },
    Refresh {
        peer: PeerId,
        family: Family,
    },
    Down {
        peer: PeerId,
        reason: String,
        /// The peer may be restarting gracefully: keep its routes as stale.
        graceful: bool,
    },
}

/// What the speaker tells a session.
#[derive(Debug)]
pub enum Command {
    /// Encoded messages for the established connection.
    Send(Vec<Vec<u8>>),
    /// Ask the peer to send its routes again.
    Refresh(Family),
    /// Close with a Cease NOTIFICATION and end the task.
    Stop,
    /// Close the connection without a NOTIFICATION and end the task: the agent stops
    /// for a graceful restart, and a peer keeps our routes only if the session just
    /// ends (RFC 4724 without RFC 8538's N bit, which we do not announce).
    Abandon,
}

/// A session's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub peer: PeerId,
    pub dial: Dial,
    pub remote_asn: u32,
    /// Wait for the peer to connect.
    pub passive: bool,
    pub ours: Open,
    pub timers: Timers,
}

/// A connection to the peer as a session uses it: its two halves and our address on
/// it. A TCP stream in the agent; an in-memory pipe in the replay tests.
pub struct Stream {
    read: Box<dyn AsyncRead + Send + Unpin>,
    write: Box<dyn AsyncWrite + Send + Unpin>,
    local: IpAddr,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("local", &self.local)
            .finish()
    }
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Stream {
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let (r, w) = stream.into_split();
        Stream {
            read: Box::new(r),
            write: Box::new(w),
            local,
        }
    }
}

impl Stream {
    /// An in-memory connection whose local address is `local`, and the peer's end.
    #[cfg(test)]
    pub fn pipe(local: IpAddr) -> (Stream, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(ours);
        (
            Stream {
                read: Box::new(r),
                write: Box::new(w),
                local,
            },
            theirs,
        )
    }
}

/// The speaker's side of a running session.
#[derive(Debug)]
pub struct Handle {
    pub commands: mpsc::UnboundedSender<Command>,
    /// Connections the listener accepted from this peer.
    pub incoming: mpsc::Sender<Stream>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// A handle with no session behind it: what the speaker sends comes out of the
    /// receiver (the replay tests play the peer).
    #[cfg(test)]
    pub fn detached() -> (Handle, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let (incoming, _) = mpsc::channel(1);
        let task = tokio::spawn(async {});
        (
            Handle {
                commands,
                incoming,
                task,
            },
            rx,
        )
    }

    /// Whether the session task has ended.
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // A session dropped without Stop ends at once.
        let _ = self.commands.send(Command::Stop);
        let task = &self.task;
        if task.is_finished() {
            return;
        }
        let abort = task.abort_handle();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            abort.abort();
            return;
        };
        rt.spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            abort.abort();
        });
    }
}

/// Starts the session task.
pub fn spawn(config: Config, events: mpsc::Sender<Event>) -> Handle {
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (incoming, incoming_rx) = mpsc::channel(4);
    let task = tokio::spawn(run(config, events, command_rx, incoming_rx));
    Handle {
        commands,
        incoming,
        task,
    }
}

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

enum Read {
    /// The whole messages of one read, in order: `data[ends[i-1]..ends[i]]`.
    Messages {
        data: Vec<u8>,
        ends: Vec<usize>,
    },
    Bad(Notification),
    Closed(String),
}

struct Conn {
    id: u64,
    /// We opened it (for collision resolution).
    ours: bool,
    fsm: fsm::Session,
    write: Box<dyn AsyncWrite + Send + Unpin>,
    /// Our address on the connection.
    local: IpAddr,
    reader: tokio::task::JoinHandle<()>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    theirs: Option<Open>,
    decoding: Decoding,
    /// The connection is to go.
    dropped: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(
    id: u64,
    mut r: Box<dyn AsyncRead + Send + Unpin>,
    tx: mpsc::Sender<(u64, Read)>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Take every whole message in the buffer, then drop them all at once (not one
        // by one, which would move the rest of the buffer once per message).
        let mut at = 0;
        let mut ends = Vec::new();
        let bad = loop {
            match frame::next_message(&buf[at..], frame::MAX_LEN) {
                Ok(Some(n)) => {
                    at += n;
                    ends.push(at);
                }
                Ok(None) => break None,
                Err(n) => break Some(n),
            }
        };
        if !ends.is_empty() {
            // The framed part moves on as it is; only the partial tail is copied.
            let rest = buf.split_off(at);
            let data = std::mem::replace(&mut buf, rest);
            buf.reserve(chunk.len());
            if tx.send((id, Read::Messages { data, ends })).await.is_err() {
                return;
            }
        }
        if let Some(n) = bad {
            let _ = tx.send((id, Read::Bad(n))).await;
            return;
        }
        match r.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx
                    .send((id, Read::Closed("connection closed by the peer".into())))
                    .await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let _ = tx.send((id, Read::Closed(format!("reading: {e}")))).await;
                return;
            }
        }
    }
}

struct Task {
    config: Config,
    events: mpsc::Sender<Event>,
    conns: Vec<Conn>,
    next_id: u64,
    reads: mpsc::Sender<(u64, Read)>,
    retry_at: Option<Instant>,
    connecting: bool,
    /// The connection that is established, if any.
    established: Option<u64>,
    state: State,
}

async fn run(
    config: Config,
    events: mpsc::Sender<Event>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut incoming: mpsc::Receiver<Stream>,
) {
    let (reads, mut read_rx) = mpsc::channel(256);
    let (connected_tx, mut connected_rx) = mpsc::channel::<std::io::Result<TcpStream>>(1);
    let passive = config.passive;
    let mut t = Task {
        config,
        events,
        conns: Vec::new(),
        next_id: 0,
        reads,
        retry_at: (!passive).then(Instant::now),
        connecting: false,
        established: None,
        state: State::Idle,
    };
    t.report_state().await;
    loop {
        let deadline = t.next_deadline();
        tokio::select! {
            c = commands.recv() => match c {
                Some(Command::Send(msgs)) => t.send_established(&msgs).await,
                Some(Command::Refresh(f)) => t.send_established(&[wire::encode_route_refresh(f)]).await,
                Some(Command::Stop) | None => {
                    t.stop().await;
                    return;
                }
                Some(Command::Abandon) => return,
            },
            Some(stream) = incoming.recv() => t.accept(stream).await,
            Some(r) = connected_rx.recv() => {
                t.connecting = false;
                match r {
                    Ok(stream) => t.add(stream.into(), true).await,
                    Err(e) => {
                        tracing::debug!(peer = %t.config.dial.remote, error = %e, "BGP connect");
                        t.retry_at = Some(Instant::now() + t.config.timers.connect_retry);
                    }
                }
            }
            Some((id, r)) = read_rx.recv() => t.read(id, r).await,
            _ = sleep_until(deadline) => t.timers().await,
        }
        if t.retry_at.is_some_and(|at| at <= Instant::now()) && !t.connecting && t.conns.is_empty()
        {
            t.retry_at = None;
            t.connecting = true;
            let dial = t.config.dial.clone();
            let tx = connected_tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(socket::connect(&dial, CONNECT_TIMEOUT).await).await;
            });
        }
        t.sweep().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Task {
    fn next_deadline(&self) -> Option<Instant> {
        let conn = self
            .conns
            .iter()
            .flat_map(|c| [c.hold_at, c.keepalive_at])
            .flatten();
        conn.chain(self.retry_at).min()
    }

    async fn report_state(&mut self) {
        let state = self
            .conns
            .iter()
            .map(|c| c.fsm.state())
            .max_by_key(|s| rank(*s))
            .unwrap_or(if self.connecting || self.retry_at.is_some() {
                State::Connect
            } else if self.config.passive {
                State::Active
            } else {
                State::Idle
            });
        if state != self.state {
            self.state = state;
            let _ = self
                .events
                .send(Event::State {
                    peer: self.config.peer,
                    state,
                })
                .await;
        }
    }

    async fn add(&mut self, stream: Stream, ours: bool) {
        let Stream {
            read: r,
            write: w,
            local,
        } = stream;
        let id = self.next_id;
        self.next_id += 1;
        let reader = tokio::spawn(read_loop(id, r, self.reads.clone()));
        let mut fsm = fsm::Session::new(self.config.timers);
        fsm.handle(fsm::Event::Start { passive: !ours });
        self.conns.push(Conn {
            id,
            ours,
            fsm,
            write: w,
            local,
            reader,
            hold_at: None,
            keepalive_at: None,
            theirs: None,
            decoding: Decoding { asn4: false },
            dropped: false,
        });
        self.feed(id, fsm::Event::TcpUp).await;
    }

    async fn accept(&mut self, mut stream: Stream) {
        if let Some(est) = self.established {
            let graceful = self
                .conns
                .iter()
                .find(|c| c.id == est)
                .is_some_and(|c| self.gr_negotiated(c));
            if graceful {
                // RFC 4724 4.2: a new connection from a peer we are established with
                // means it restarted: the old session ends, its routes turn stale.
                tracing::info!(peer = %self.config.dial.remote, "peer reconnected: graceful restart");
                self.feed(est, fsm::Event::TcpFailed).await;
            } else {
                // RFC 4271 6.8: the established connection wins.
                let n = cease(7);
                let _ = stream.write.write_all(&n.encode()).await;
                return;
            }
        }
        if self.conns.iter().filter(|c| !c.dropped).count() >= 2 {
            let _ = stream.write.write_all(&cease(7).encode()).await;
            return;
        }
        self.add(stream, false).await;
    }

    fn gr_negotiated(&self, c: &Conn) -> bool {
        self.config.ours.graceful_restart.is_some()
            && c.theirs
                .as_ref()
                .is_some_and(|t| t.graceful_restart.is_some())
    }

    async fn send_established(&mut self, msgs: &[Vec<u8>]) {
        let Some(id) = self.established else { return };
        for m in msgs {
            if let Err(e) = self.write(id, m).await {
                tracing::info!(peer = %self.config.dial.remote, error = %e, "BGP write");
                self.feed(id, fsm::Event::TcpFailed).await;
                return;
            }
        }
    }

    async fn write(&mut self, id: u64, bytes: &[u8]) -> std::io::Result<()> {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return Ok(());
        };
        c.write.write_all(bytes).await
    }

    async fn stop(&mut self) {
        let ids: Vec<u64> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            self.feed(id, fsm::Event::Stop).await;
        }
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        for c in &mut self.conns {
            if c.hold_at.is_some_and(|t| t <= now) {
                c.hold_at = None;
                due.push((c.id, fsm::Event::HoldExpired));
            }
            if c.keepalive_at.is_some_and(|t| t <= now) {
                c.keepalive_at = None;
                due.push((c.id, fsm::Event::KeepaliveExpired));
            }
        }
        for (id, e) in due {
            self.feed(id, e).await;
        }
    }

    async fn read(&mut self, id: u64, r: Read) {
        match r {
            Read::Closed(why) => {
                tracing::info!(peer = %self.config.dial.remote, reason = why.as_str(), "BGP connection");
                self.feed(id, fsm::Event::TcpFailed).await
            }
            Read::Bad(n) => self.feed(id, fsm::Event::BadMessage(n)).await,
            Read::Messages { data, ends } => {
                let mut start = 0;
                for end in ends {
                    self.message(id, &data[start..end]).await;
                    start = end;
                }
            }
        }
    }

    /// Handles one whole message from connection `id`.
    async fn message(&mut self, id: u64, bytes: &[u8]) {
        // Looked up per message: an OPEN earlier in the same read sets how the
        // following ones decode.
        let Some(c) = self.conns.iter().find(|c| c.id == id) else {
            return;
        };
        let decoding = c.decoding;
        match wire::decode(bytes, decoding) {
            Err(n) => {
                tracing::warn!(peer = %self.config.dial.remote, error = %n, "bad BGP message: NOTIFICATION sent");
                self.feed(id, fsm::Event::BadMessage(n)).await
            }
            Ok(Message::Keepalive) => self.feed(id, fsm::Event::Keepalive).await,
            Ok(Message::Notification(n)) => {
                tracing::warn!(
                    peer = %self.config.dial.remote,
                    error = %n,
                    "NOTIFICATION from the peer"
                );
                self.feed(id, fsm::Event::Notification(n)).await
            }
            Ok(Message::Open(o)) => self.open(id, o).await,
            Ok(Message::Update(u)) => {
                if !u.problems.is_empty() {
                    tracing::warn!(peer = %self.config.dial.remote, problems = %u.problems.join("; "), "UPDATE errors handled (RFC 7606)");
                }
                let update = Event::Update {
                    peer: self.config.peer,
                    update: u,
                };
                self.deliver(id, fsm::Event::Update, update).await;
            }
            Ok(Message::RouteRefresh(family)) => {
                let refresh = Event::Refresh {
                    peer: self.config.peer,
                    family,
                };
                self.deliver(id, fsm::Event::RouteRefresh, refresh).await;
            }
        }
    }

    /// Checks the peer's OPEN (RFC 4271 6.2) and resolves collisions (6.8).
    async fn open(&mut self, id: u64, o: Open) {
        let ours = self.config.ours.clone();
        let bad = if o.asn != self.config.remote_asn {
            Some(Notification {
                code: frame::code::OPEN_MESSAGE,
                subcode: 2,
                data: Vec::new(),
            })
        } else if o.router_id == ours.router_id && o.asn == ours.asn || o.router_id.is_unspecified()
        {
            Some(Notification {
                code: frame::code::OPEN_MESSAGE,
                subcode: 3,
                data: Vec::new(),
            })
        } else if o.hold_time == 1 || o.hold_time == 2 {
            Some(Notification {
                code: frame::code::OPEN_MESSAGE,
                subcode: 6,
                data: Vec::new(),
            })
        } else {
            None
        };
        if let Some(n) = bad {
            tracing::warn!(peer = %self.config.dial.remote, asn = o.asn, id = %o.router_id, error = %n, "OPEN refused");
            self.feed(id, fsm::Event::BadMessage(n)).await;
            return;
        }
        // Another connection that has seen the peer's OPEN collides with this one.
        let other = self
            .conns
            .iter()
            .find(|c| c.id != id && !c.dropped && c.fsm.state() == State::OpenConfirm)
            .map(|c| (c.id, c.ours));
        if let Some((other_id, other_ours)) = other {
            let this_ours = self.conns.iter().any(|c| c.id == id && c.ours);
            // The connection opened by the side with the higher identifier survives.
            let keep_ours = u32::from(ours.router_id) > u32::from(o.router_id);
            let loser = if this_ours == keep_ours && other_ours != keep_ours {
                other_id
            } else if other_ours == keep_ours && this_ours != keep_ours {
                id
            } else {
                other_id
            };
            tracing::info!(peer = %self.config.dial.remote, "connection collision: closing one");
            self.feed(loser, fsm::Event::BadMessage(cease(7))).await;
            if loser == id {
                return;
            }
        }
        let asn4 = ours.asn4 && o.asn4;
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.decoding = Decoding { asn4 };
            c.theirs = Some(o.clone());
        }
        self.feed(
            id,
            fsm::Event::Open(PeerOpen {
                hold_time: o.hold_time,
            }),
        )
        .await;
    }

    /// Runs `received` through connection `id`'s machine, then hands `event` to the
    /// speaker if that connection was the established one.
    async fn deliver(&mut self, id: u64, received: fsm::Event, event: Event) {
        let established = self.established == Some(id);
        self.feed(id, received).await;
        if established {
            let _ = self.events.send(event).await;
        }
    }

    /// Runs an event through connection `id`'s machine and carries out its actions.
    async fn feed(&mut self, id: u64, event: fsm::Event) {
        let notification_event = matches!(
            event,
            fsm::Event::Notification(_) | fsm::Event::BadMessage(_) | fsm::Event::Stop
        );
        // Said when the event takes the session down (rare): no formatting per UPDATE.
        let why: std::borrow::Cow<'static, str> = match &event {
            fsm::Event::Update => "Update".into(),
            fsm::Event::Keepalive => "Keepalive".into(),
            e => e.to_string().into(),
        };
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        if c.dropped {
            return;
        }
        let actions = c.fsm.handle(event);
        for a in actions {
            match a {
                Action::SendOpen => {
                    let b = wire::encode_open(&self.config.ours);
                    if self.write(id, &b).await.is_err() {
                        self.mark_dropped(id);
                    }
                }
                Action::SendKeepalive => {
                    if self.write(id, &wire::encode_keepalive()).await.is_err() {
                        self.mark_dropped(id);
                    }
                }
                Action::SendNotification(n) => {
                    let _ = self.write(id, &n.encode()).await;
                }
                Action::Arm(timer, d) => {
                    if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                        let at = Some(Instant::now() + d);
                        match timer {
                            Timer::Hold => c.hold_at = at,
                            Timer::Keepalive => c.keepalive_at = at,
                            Timer::ConnectRetry => {}
                        }
                    }
                }
                Action::Stop(timer) => {
                    if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
                        match timer {
                            Timer::Hold => c.hold_at = None,
                            Timer::Keepalive => c.keepalive_at = None,
                            Timer::ConnectRetry => {}
                        }
                    }
                }
                Action::Drop => self.mark_dropped(id),
                Action::Up => {
                    self.established = Some(id);
                    // The other connection, if any, loses (RFC 4271 6.8).
                    let others: Vec<u64> = self
                        .conns
                        .iter()
                        .filter(|c| c.id != id && !c.dropped)
                        .map(|c| c.id)
                        .collect();
                    for o in others {
                        let _ = self.write(o, &cease(7).encode()).await;
                        self.mark_dropped(o);
                    }
                    let Some(c) = self.conns.iter().find(|c| c.id == id) else {
                        continue;
                    };
                    let theirs = c.theirs.clone().unwrap_or_else(|| self.config.ours.clone());
                    let local = c.local;
                    tracing::info!(peer = %self.config.dial.remote, asn = theirs.asn, id = %theirs.router_id, "BGP session established");
                    let _ = self
                        .events
                        .send(Event::Up {
                            peer: self.config.peer,
                            ours: self.config.ours.clone(),
                            theirs,
                            local,
                        })
                        .await;
                }
                Action::Down => {
                    let graceful = !notification_event
                        && self
                            .conns
                            .iter()
                            .find(|c| c.id == id)
                            .is_some_and(|c| self.gr_negotiated(c));
                    if self.established == Some(id) {
                        self.established = None;
                    }
                    tracing::info!(peer = %self.config.dial.remote, reason = &*why, graceful, "BGP session down");
                    let _ = self
                        .events
                        .send(Event::Down {
                            peer: self.config.peer,
                            reason: why.to_string(),
                            graceful,
                        })
                        .await;
                }
                Action::ProcessUpdate | Action::ProcessRouteRefresh => {}
                Action::Connect | Action::Listen => {}
            }
        }
    }

    fn mark_dropped(&mut self, id: u64) {
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.dropped = true;
            c.hold_at = None;
            c.keepalive_at = None;
        }
    }

    /// Removes dropped connections; with none left, schedules the next attempt.
    async fn sweep(&mut self) {
        let before = self.conns.len();
        let mut gone = Vec::new();
        self.conns.retain_mut(|c| {
            if c.dropped {
                gone.push(c.id);
            }
            !c.dropped
        });
        for id in gone {
            if self.established == Some(id) {
                // Dropped without passing through Down (a write failed mid-action).
                self.established = None;
                let _ = self
                    .events
                    .send(Event::Down {
                        peer: self.config.peer,
                        reason: "write failed".into(),
                        graceful: false,
                    })
                    .await;
            }
        }
        if before != self.conns.len()
            && self.conns.is_empty()
            && !self.config.passive
            && self.retry_at.is_none()
            && !self.connecting
        {
            self.retry_at = Some(Instant::now() + self.config.timers.connect_retry);
        }
        self.report_state().await;
    }
}

fn cease(subcode: u8) -> Notification {
    Notification {
        code: frame::code::CEASE,
        subcode,
        data: Vec::new(),
    }
}

fn rank(s: State) -> u8 {
    match s {
        State::Idle => 0,
        State::Connect => 1,
        State::Active => 2,
        State::OpenSent => 3,
        State::OpenConfirm => 4,
        State::Established => 5,
    }
}

#[cfg(test)]
mod replay;
