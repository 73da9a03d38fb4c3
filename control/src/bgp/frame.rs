//! BGP message framing (RFC 4271 4.1, 6.1): finds where the next message ends in a
//! TCP stream, checking the header before anything waits for or parses the body, so
//! that a peer announcing a huge length or sending garbage gets the right
//! NOTIFICATION at once instead of a stalled session.

/// The 16-byte marker, all ones.
pub const MARKER: [u8; 16] = [0xff; 16];
/// Marker, length and type.
pub const HEADER_LEN: usize = 19;
/// The largest message without the Extended Message capability (RFC 8654).
pub const MAX_LEN: usize = 4096;
/// The largest with it.
pub const MAX_EXTENDED_LEN: usize = 65535;

/// Message types (RFC 4271 4.1, RFC 2918).
pub mod kind {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// A NOTIFICATION to send before closing the session (RFC 4271 4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// Error codes and the Message Header Error subcodes (RFC 4271 4.5, 6.1).
pub mod code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH: u8 = 7;

    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// The RFC names of an error code and subcode (RFC 4271 4.5 and 6, RFC 4486 for Cease,
/// RFC 7313 for ROUTE-REFRESH, RFC 8203's shutdown communication left out).
pub fn error_names(code: u8, subcode: u8) -> (&'static str, &'static str) {
    let kind = match code {
        1 => "Message Header Error",
        2 => "OPEN Message Error",
        3 => "UPDATE Message Error",
        4 => "Hold Timer Expired",
        5 => "Finite State Machine Error",
        6 => "Cease",
        7 => "ROUTE-REFRESH Message Error",
        _ => "unknown error code",
    };
    let sub = match (code, subcode) {
        (_, 0) => "unspecific",
        (1, 1) => "Connection Not Synchronized",
        (1, 2) => "Bad Message Length",
        (1, 3) => "Bad Message Type",
        (2, 1) => "Unsupported Version Number",
        (2, 2) => "Bad Peer AS",
        (2, 3) => "Bad BGP Identifier",
        (2, 4) => "Unsupported Optional Parameter",
        (2, 6) => "Unacceptable Hold Time",
        (2, 7) => "Unsupported Capability",
        (3, 1) => "Malformed Attribute List",
        (3, 2) => "Unrecognized Well-known Attribute",
        (3, 3) => "Missing Well-known Attribute",
        (3, 4) => "Attribute Flags Error",
        (3, 5) => "Attribute Length Error",
        (3, 6) => "Invalid ORIGIN Attribute",
        (3, 8) => "Invalid NEXT_HOP Attribute",
        (3, 9) => "Optional Attribute Error",
        (3, 10) => "Invalid Network Field",
        (3, 11) => "Malformed AS_PATH",
        (5, 1) => "Unexpected Message in OpenSent State",
        (5, 2) => "Unexpected Message in OpenConfirm State",
        (5, 3) => "Unexpected Message in Established State",
        (6, 1) => "Maximum Number of Prefixes Reached",
        (6, 2) => "Administrative Shutdown",
        (6, 3) => "Peer De-configured",
        (6, 4) => "Administrative Reset",
        (6, 5) => "Connection Rejected",
        (6, 6) => "Other Configuration Change",
        (6, 7) => "Connection Collision Resolution",
        (6, 8) => "Out of Resources",
        (6, 9) => "Hard Reset",
        (7, 1) => "Invalid Message Length",
        _ => "unknown subcode",
    };
    (kind, sub)
}

impl std::fmt::Display for Notification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, sub) = error_names(self.code, self.subcode);
        write!(f, "{kind} / {sub} ({}/{})", self.code, self.subcode)
    }
}

impl Notification {
    fn header(subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code: code::MESSAGE_HEADER,
            subcode,
            data,
        }
    }

    /// The message's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let len = HEADER_LEN + 2 + self.data.len();
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&MARKER);
        v.extend_from_slice(&(len.min(usize::from(u16::MAX)) as u16).to_be_bytes());
        v.push(kind::NOTIFICATION);
        v.push(self.code);
        v.push(self.subcode);
        v.extend_from_slice(&self.data);
        v
    }
}

/// The smallest valid length of each message type (RFC 4271 6.1).
fn min_len(kind: u8) -> Option<usize> {
    match kind {
        kind::OPEN => Some(29),
        kind::UPDATE => Some(23),
        kind::NOTIFICATION => Some(21),
        kind::KEEPALIVE => Some(HEADER_LEN),
        kind::ROUTE_REFRESH => Some(23),
        _ => None,
    }
}

/// Looks at the start of `buf`: `Ok(Some(n))` when a whole message of `n` bytes is
/// there, `Ok(None)` when more bytes are needed, or the NOTIFICATION the header
/// deserves. `max_len` is [`MAX_LEN`], or [`MAX_EXTENDED_LEN`] once both sides
/// announced extended messages (which never applies to OPEN and KEEPALIVE).
pub fn next_message(buf: &[u8], max_len: usize) -> Result<Option<usize>, Notification> {
    let marker_seen = buf.len().min(MARKER.len());
    if buf[..marker_seen] != MARKER[..marker_seen] {
        return Err(Notification::header(
            code::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
        ));
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length_field = [buf[16], buf[17]];
    let len = usize::from(u16::from_be_bytes(length_field));
    let kind = buf[18];
    let Some(min) = min_len(kind) else {
        return Err(Notification::header(code::BAD_MESSAGE_TYPE, vec![kind]));
    };
    let max = match kind {
        kind::OPEN | kind::KEEPALIVE => MAX_LEN,
        _ => max_len,
    };
    let exact_keepalive = kind != kind::KEEPALIVE || len == HEADER_LEN;
    if len < min || len > max || !exact_keepalive {
        return Err(Notification::header(
            code::BAD_MESSAGE_LENGTH,
            length_field.to_vec(),
        ));
    }
    Ok((buf.len() >= len).then_some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = MARKER.to_vec();
        v.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        v.push(kind);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn notifications_read_with_the_rfc_names() {
        let n = |code, subcode| Notification {
            code,
            subcode,
            data: vec![],
        };
        assert_eq!(
            n(3, 1).to_string(),
            "UPDATE Message Error / Malformed Attribute List (3/1)"
        );
        assert_eq!(n(6, 2).to_string(), "Cease / Administrative Shutdown (6/2)");
        assert_eq!(n(4, 0).to_string(), "Hold Timer Expired / unspecific (4/0)");
        assert_eq!(
            n(9, 9).to_string(),
            "unknown error code / unknown subcode (9/9)"
        );
    }

    #[test]
    fn whole_messages_are_found_and_partial_ones_wait() {
        let k = msg(kind::KEEPALIVE, &[]);
        assert_eq!(next_message(&k, MAX_LEN), Ok(Some(19)));
        let u = msg(kind::UPDATE, &[0, 0, 0, 0]);
        let mut stream = u.clone();
        stream.extend_from_slice(&k);
        assert_eq!(next_message(&stream, MAX_LEN), Ok(Some(23)));
        for cut in 0..u.len() {
            assert_eq!(next_message(&u[..cut], MAX_LEN), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn bad_headers_get_their_notification() {
        let mut bad_marker = msg(kind::KEEPALIVE, &[]);
        bad_marker[3] = 0;
        assert_eq!(
            next_message(&bad_marker[..5], MAX_LEN).unwrap_err().subcode,
            code::CONNECTION_NOT_SYNCHRONIZED,
            "garbage is refused before a whole header arrives"
        );
        let unknown = msg(9, &[0; 4]);
        assert_eq!(
            next_message(&unknown, MAX_LEN),
            Err(Notification {
                code: 1,
                subcode: 3,
                data: vec![9]
            })
        );
        let mut huge = msg(kind::UPDATE, &[0; 4]);
        huge[16..18].copy_from_slice(&60000u16.to_be_bytes());
        let n = next_message(&huge, MAX_LEN).unwrap_err();
        assert_eq!(
            (n.subcode, n.data.as_slice()),
            (2, &60000u16.to_be_bytes()[..])
        );
        assert_eq!(
            next_message(&huge, MAX_EXTENDED_LEN),
            Ok(None),
            "waits: allowed when extended"
        );
        let long_keepalive = msg(kind::KEEPALIVE, &[0]);
        assert_eq!(
            next_message(&long_keepalive, MAX_LEN).unwrap_err().subcode,
            2
        );
        let short_open = msg(kind::OPEN, &[4, 0]);
        assert_eq!(next_message(&short_open, MAX_LEN).unwrap_err().subcode, 2);
    }

    #[test]
    fn a_notification_encodes_as_rfc_4271_says() {
        let n = Notification {
            code: code::CEASE,
            subcode: 2,
            data: vec![],
        };
        let b = n.encode();
        assert_eq!(b.len(), 21);
        assert_eq!(next_message(&b, MAX_LEN), Ok(Some(21)));
        assert_eq!(&b[18..], &[3, 6, 2]);
    }
}
