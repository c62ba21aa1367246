//! ZMQ_MULTICAST_MAXTPDU, the largest PGM packet ZeroMQ sends and receives.
//!
//! The `zmq` crate wraps every socket option memcast sets except this one,
//! so it is set here with libzmq's own `zmq_setsockopt`: the bus's only
//! foreign call, kept to this module.

use std::ffi::{c_int, c_void};

use crate::BusError;

/// ZeroMQ's default: one Ethernet MTU.
pub const DEFAULT_MAX_TPDU: i32 = 1500;
/// IPv4's minimum reassembly size; nothing smaller is worth a packet.
pub const MIN_MAX_TPDU: i32 = 576;
/// A PGM packet's length is 16 bits (OpenPGM refuses more).
pub const MAX_MAX_TPDU: i32 = 65_535;

/// Sets ZMQ_MULTICAST_MAXTPDU; takes effect at the next connect or bind.
pub(crate) fn set_max_tpdu(socket: &mut zmq::Socket, bytes: i32) -> Result<(), BusError> {
    if !(MIN_MAX_TPDU..=MAX_MAX_TPDU).contains(&bytes) {
        return Err(BusError::Zmq {
            what: "ZMQ_MULTICAST_MAXTPDU",
            source: zmq::Error::EINVAL,
        });
    }
    if bytes == DEFAULT_MAX_TPDU {
        return Ok(());
    }
    let value: c_int = bytes;
    // SAFETY: `as_mut_ptr` is the live socket owned by `socket`, borrowed
    // mutably for the call (ZeroMQ sockets are not thread-safe; no one else
    // uses it meanwhile). The option value is a C int read by libzmq during
    // the call only, from a pointer and length that describe it exactly.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            zmq_sys::ZMQ_MULTICAST_MAXTPDU as c_int,
            (&value as *const c_int).cast::<c_void>(),
            std::mem::size_of::<c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(BusError::Zmq {
            what: "ZMQ_MULTICAST_MAXTPDU",
            // SAFETY: zmq_errno only reads this thread's last error.
            source: zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_taken_within_its_range_and_refused_outside() {
        let context = zmq::Context::new();
        let mut socket = context.socket(zmq::PUB).expect("socket");
        set_max_tpdu(&mut socket, 9000).expect("9000 is taken");
        set_max_tpdu(&mut socket, DEFAULT_MAX_TPDU).expect("the default");
        assert!(set_max_tpdu(&mut socket, 100).is_err());
        assert!(set_max_tpdu(&mut socket, 70_000).is_err());
    }
}
