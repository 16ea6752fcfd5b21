//! The `[rocketmq]` config section: the RocketMQ 4.x front (`--rocketmq` turns it on).

use serde::{Deserialize, Serialize};

/// RocketMQ's default name server port.
pub const DEFAULT_NAMESRV_PORT: u16 = 9876;
/// RocketMQ's default broker port.
pub const DEFAULT_BROKER_PORT: u16 = 10911;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RocketMqConfig {
    /// Serve the front (a name server and a broker port). Default false; `--rocketmq` sets it.
    pub enabled: bool,
    /// The RocketMQ broker port every shard accepts on (SO_REUSEPORT). 0 picks a free port
    /// (tests). Default 10911; the native `broker.port` must then be another one.
    pub broker_port: u16,
    /// The in-process name server's port; 0 picks a free one. Default 9876.
    pub namesrv_port: u16,
    /// Run the name server in this process. Default true (`ringmq namesrv` runs one alone).
    pub namesrv: bool,
    /// The address clients are told to connect to (route data, message store host). Empty:
    /// `broker.listen_address`, or 127.0.0.1 when that is 0.0.0.0. Must be IPv4: RocketMQ's
    /// message encoding holds IPv4 store hosts.
    pub advertise_address: String,
    /// The broker name and cluster name in routes.
    pub broker_name: String,
    pub cluster_name: String,
    /// A topic a client names (route query or send) is created on first use, as RocketMQ
    /// does with `autoCreateTopicEnable`. Default true.
    pub auto_create_topics: bool,
    /// Queues of an automatically created topic. Default 8 (`%RETRY%` and `%DLQ%` topics get 1,
    /// as in RocketMQ).
    pub auto_create_queue_count: u32,
    /// Requests one front connection may have in flight (long-polling pulls included). Default
    /// 256.
    pub max_in_flight_per_connection: usize,
    /// Longest pull suspension honoured. Default 30000 (also capped by
    /// `broker.max_long_poll_wait_ms`).
    pub max_suspend_ms: u64,
    /// Most bytes of stored messages one pull reads. Default 4 MiB; at most half of
    /// `broker.max_frame_bytes`.
    pub max_pull_bytes: usize,
}

impl Default for RocketMqConfig {
    fn default() -> Self {
        RocketMqConfig {
            enabled: false,
            broker_port: DEFAULT_BROKER_PORT,
            namesrv_port: DEFAULT_NAMESRV_PORT,
            namesrv: true,
            advertise_address: String::new(),
            broker_name: "ringmq".into(),
            cluster_name: "DefaultCluster".into(),
            auto_create_topics: true,
            auto_create_queue_count: 8,
            max_in_flight_per_connection: 256,
            max_suspend_ms: 30_000,
            max_pull_bytes: 4 << 20,
        }
    }
}

impl RocketMqConfig {
    /// The IPv4 address clients are told to connect to.
    pub fn advertised_ip(&self, listen_address: &str) -> Result<std::net::Ipv4Addr, String> {
        let text = if !self.advertise_address.is_empty() {
            self.advertise_address.as_str()
        } else if listen_address == "0.0.0.0" || listen_address == "::" {
            "127.0.0.1"
        } else {
            listen_address
        };
        text.parse().map_err(|_| {
            format!(
                "rocketmq.advertise_address: {text:?} is not an IPv4 address (RocketMQ clients \
                 need one; set rocketmq.advertise_address)"
            )
        })
    }

    /// Checks the section against `broker.port`.
    pub fn validate(
        &self,
        native_port: u16,
        listen_address: &str,
        max_frame_bytes: usize,
    ) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        self.advertised_ip(listen_address)?;
        if self.broker_port != 0 && self.broker_port == native_port {
            return Err(format!(
                "rocketmq.broker_port and broker.port are both {native_port}: the RocketMQ front \
                 and the native protocol need their own ports (move the native one, e.g. \
                 --port 10811)"
            ));
        }
        if self.auto_create_queue_count == 0
            || self.max_in_flight_per_connection == 0
            || self.max_pull_bytes < 64 * 1024
        {
            return Err("rocketmq.auto_create_queue_count and max_in_flight_per_connection must \
                        be positive and rocketmq.max_pull_bytes at least 65536"
                .into());
        }
        // Encoded messages take a little more than their stored records: keep a pull answer
        // well inside a frame, or a client would be refused the same answer forever.
        if self.max_pull_bytes > max_frame_bytes / 2 {
            return Err(format!(
                "rocketmq.max_pull_bytes = {} must be at most half of broker.max_frame_bytes = \
                 {max_frame_bytes}",
                self.max_pull_bytes
            ));
        }
        if self.broker_name.is_empty() || self.cluster_name.is_empty() {
            return Err("rocketmq.broker_name and rocketmq.cluster_name must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_checked_against_the_native_port_and_the_frame_size() {
        let on = RocketMqConfig { enabled: true, ..Default::default() };
        assert!(on.validate(10811, "0.0.0.0", 8 << 20).is_ok());
        let e = on.validate(10911, "0.0.0.0", 8 << 20).unwrap_err();
        assert!(e.contains("rocketmq.broker_port") && e.contains("broker.port"), "{e}");
        assert!(RocketMqConfig::default().validate(10911, "0.0.0.0", 8 << 20).is_ok(), "off");
        let e = on.validate(10811, "0.0.0.0", 4 << 20).unwrap_err();
        assert!(e.contains("max_pull_bytes"), "{e}");
        let e = on.validate(10811, "::", 8 << 20).map(|_| ()).and_then(|_| {
            RocketMqConfig { advertise_address: "::1".into(), ..on.clone() }.validate(
                10811,
                "::",
                8 << 20,
            )
        });
        assert!(e.unwrap_err().contains("IPv4"));
        assert_eq!(on.advertised_ip("10.1.2.3").unwrap().to_string(), "10.1.2.3");
        assert_eq!(on.advertised_ip("0.0.0.0").unwrap().to_string(), "127.0.0.1");
    }
}
