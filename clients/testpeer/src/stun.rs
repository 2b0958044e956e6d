//! Raw STUN for tests that speak to the gateway below ICE (a stray or hostile sender, a demux
//! that routes by USERNAME). Builds messages only; a [`crate::PeerCore`] does real ICE with str0m.

/// The STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute type.
const ATTR_USERNAME: u16 = 0x0006;
/// The Binding request message type.
const BINDING_REQUEST: u16 = 0x0001;

/// A STUN Binding request whose only attribute is USERNAME `username` (e.g. `b"local:remote"`),
/// with a fixed transaction id and no MESSAGE-INTEGRITY: an ICE agent may route it by the
/// username but never accepts it.
pub fn stun_binding_request(username: &[u8]) -> Vec<u8> {
    let mut attr = ATTR_USERNAME.to_be_bytes().to_vec();
    attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attr.extend_from_slice(username);
    while !attr.len().is_multiple_of(4) {
        attr.push(0);
    }
    let mut m = BINDING_REQUEST.to_be_bytes().to_vec();
    m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    m.extend_from_slice(&MAGIC_COOKIE);
    m.extend_from_slice(&[7; 12]);
    m.extend_from_slice(&attr);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_request_with_a_padded_username() {
        let m = stun_binding_request(b"abc");
        // Header: type, length 8 (4 attribute header + 3 bytes + 1 padding), cookie, id.
        assert_eq!(&m[..4], &[0x00, 0x01, 0x00, 0x08]);
        assert_eq!(&m[4..8], &MAGIC_COOKIE);
        assert_eq!(&m[20..], &[0x00, 0x06, 0x00, 0x03, b'a', b'b', b'c', 0]);
    }
}
