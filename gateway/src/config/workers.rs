//! What the Workers are built from: the core's [`SfuConfig`], the ICE-TCP limits and each
//! Worker's bind addresses, derived from a validated [`Config`].
//!
//! Pure mapping (units, percentages, dBov), no IO; [`crate::Gateway::start`] only calls it. The
//! candidate addresses of an `SfuConfig` are left empty: the driver fills them in once the
//! sockets are bound.

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_core::{BweConfig, SfuConfig};

use super::Config;
use crate::driver::TcpLimits;

impl Config {
    /// The core's settings (Worker 0, no candidate addresses yet).
    pub fn sfu_config(&self) -> SfuConfig {
        let (rooms, sessions, data, bwe) = (&self.rooms, &self.sessions, &self.data, &self.bwe);
        SfuConfig {
            worker: 0,
            candidate_addrs: Vec::new(),
            tcp_candidate_addrs: Vec::new(),
            default_max_sessions: rooms.default_max_sessions,
            max_sessions_limit: rooms.max_sessions_limit,
            default_empty_timeout: Duration::from_secs(rooms.empty_timeout_secs),
            max_rooms: rooms.max_rooms_per_worker,
            connect_timeout: Duration::from_secs(sessions.connect_timeout_secs),
            disconnect_grace: Duration::from_secs(sessions.disconnect_grace_secs),
            keyframe_min_interval: Duration::from_millis(sessions.keyframe_min_interval_ms),
            rtx_cache_packets: sessions.rtx_cache_packets,
            rtx_cache_max_age: Duration::from_millis(sessions.rtx_cache_max_age_ms),
            rtx_ratio: Some(sessions.rtx_ratio_percent as f32 / 100.0),
            stats_interval: (sessions.stats_interval_ms > 0)
                .then(|| Duration::from_millis(sessions.stats_interval_ms)),
            data_max_message_bytes: data.max_message_bytes,
            data_send_buffer_bytes: data.send_buffer_bytes,
            data_backend_max_bytes: data.backend_max_bytes,
            speaker_interval: Duration::from_millis(rooms.active_speaker_interval_ms),
            speaker_smoothing: rooms.active_speaker_smoothing,
            speaker_min_loudness: loudness_of_dbov(rooms.active_speaker_threshold_dbov),
            bwe: BweConfig {
                enabled: bwe.enabled,
                initial_bitrate_bps: bwe.initial_bitrate_kbps * 1000,
                max_initial_bitrate_bps: bwe.max_initial_bitrate_kbps * 1000,
                down_hold: Duration::from_millis(bwe.down_hold_ms),
                up_hold: Duration::from_millis(bwe.up_hold_ms),
                up_headroom: bwe.up_headroom_percent as f32 / 100.0,
                min_switch_interval: Duration::from_millis(bwe.min_switch_interval_ms),
            },
            signaling: self.signaling.limits(),
        }
    }

    /// The limits of every Worker's ICE-TCP side (`[media] tcp_*`).
    pub(crate) fn tcp_limits(&self) -> TcpLimits {
        let m = &self.media;
        TcpLimits {
            max_connections: m.tcp_max_connections,
            max_connections_per_ip: m.tcp_max_connections_per_ip,
            first_check_timeout: Duration::from_secs(m.tcp_first_check_timeout_secs),
            idle_timeout: Duration::from_secs(m.tcp_idle_timeout_secs),
            max_frame_bytes: m.tcp_max_frame_bytes,
            send_queue_frames: m.tcp_send_queue_frames,
        }
    }

    /// Where Worker `i` binds its UDP socket: `port_base + i`, or a free port when it is 0.
    pub(crate) fn worker_udp_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.media.bind_ip, port_of(self.media.port_base, i))
    }

    /// Where Worker `i` listens for ICE-TCP, when `tcp_enabled`.
    pub(crate) fn worker_tcp_addr(&self, i: usize) -> Option<SocketAddr> {
        self.media
            .tcp_enabled
            .then(|| SocketAddr::new(self.media.bind_ip, port_of(self.media.tcp_port_base, i)))
    }
}

/// `base + i`, or 0 (the OS picks) when `base` is 0. Validation keeps `base + workers` in range;
/// past it the port saturates rather than wraps.
fn port_of(base: u16, i: usize) -> u16 {
    if base == 0 {
        0
    } else {
        u16::try_from(usize::from(base) + i).unwrap_or(u16::MAX)
    }
}

/// The core's loudness scale (0–127, 127 = 0 dBov) for a threshold in dBov (-127 to 0).
fn loudness_of_dbov(dbov: i8) -> u8 {
    (127 + i16::from(dbov.clamp(-127, 0))) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_converted_and_every_key_reaches_the_core() {
        let c: Config = toml::from_str(
            r#"
            [rooms]
            default_max_sessions = 7
            max_sessions_limit = 70
            empty_timeout_secs = 9
            max_rooms_per_worker = 11
            active_speaker_interval_ms = 250
            active_speaker_smoothing = 0.5
            active_speaker_threshold_dbov = -70
            [sessions]
            connect_timeout_secs = 12
            disconnect_grace_secs = 13
            keyframe_min_interval_ms = 140
            rtx_cache_packets = 15
            [data]
            max_message_bytes = 1600
            send_buffer_bytes = 1700
            backend_max_bytes = 180
            [bwe]
            enabled = false
            initial_bitrate_kbps = 190
            down_hold_ms = 200
            up_hold_ms = 210
            up_headroom_percent = 25
            min_switch_interval_ms = 230
            "#,
        )
        .unwrap();
        let s = c.sfu_config();
        assert_eq!(
            (s.default_max_sessions, s.max_sessions_limit, s.max_rooms),
            (7, 70, 11)
        );
        assert_eq!(s.default_empty_timeout, Duration::from_secs(9));
        assert_eq!(s.speaker_interval, Duration::from_millis(250));
        assert_eq!(s.speaker_smoothing, 0.5);
        assert_eq!(s.speaker_min_loudness, 57);
        assert_eq!(s.connect_timeout, Duration::from_secs(12));
        assert_eq!(s.disconnect_grace, Duration::from_secs(13));
        assert_eq!(s.keyframe_min_interval, Duration::from_millis(140));
        assert_eq!(s.rtx_cache_packets, 15);
        assert_eq!(
            (
                s.data_max_message_bytes,
                s.data_send_buffer_bytes,
                s.data_backend_max_bytes
            ),
            (1600, 1700, 180)
        );
        assert!(!s.bwe.enabled);
        assert_eq!(s.bwe.initial_bitrate_bps, 190_000);
        assert_eq!(s.bwe.down_hold, Duration::from_millis(200));
        assert_eq!(s.bwe.up_hold, Duration::from_millis(210));
        assert_eq!(s.bwe.up_headroom, 0.25);
        assert_eq!(s.bwe.min_switch_interval, Duration::from_millis(230));
        assert!(s.candidate_addrs.is_empty() && s.tcp_candidate_addrs.is_empty());
    }

    #[test]
    fn loudness_spans_the_dbov_range() {
        assert_eq!(loudness_of_dbov(0), 127);
        assert_eq!(loudness_of_dbov(-127), 0);
        assert_eq!(loudness_of_dbov(-128), 0);
        assert_eq!(loudness_of_dbov(5), 127);
    }

    #[test]
    fn worker_ports_follow_the_bases() {
        let mut c = Config::default();
        c.media.port_base = 40000;
        c.media.tcp_port_base = 0;
        assert_eq!(c.worker_udp_addr(3).port(), 40003);
        assert_eq!(c.worker_tcp_addr(3).map(|a| a.port()), Some(0));
        c.media.tcp_enabled = false;
        assert_eq!(c.worker_tcp_addr(0), None);
        c.media.port_base = 0;
        assert_eq!(c.worker_udp_addr(5).port(), 0);
        assert_eq!(port_of(65535, 3), 65535);
        c.media.tcp_max_connections_per_ip = 3;
        c.media.tcp_first_check_timeout_secs = 4;
        let t = c.tcp_limits();
        assert_eq!(t.max_connections, c.media.tcp_max_connections);
        assert_eq!(t.max_connections_per_ip, 3);
        assert_eq!(t.first_check_timeout, Duration::from_secs(4));
        assert_eq!(
            t.idle_timeout,
            Duration::from_secs(c.media.tcp_idle_timeout_secs)
        );
    }
}
