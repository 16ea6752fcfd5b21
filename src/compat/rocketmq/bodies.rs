//! JSON bodies of the name server's answers and of HEART_BEAT / GET_CONSUMER_LIST_BY_GROUP,
//! as RocketMQ's `TopicRouteData`, `ClusterInfo`, `TopicList`, `HeartbeatData` and
//! `GetConsumerListByGroupResponseBody` serialize them. Pure: no I/O.

use serde::Deserialize;
use serde_json::{json, Value};

use super::codes::PERM_READ_WRITE;

/// One ringmq broker as the name server announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEntry {
    pub cluster: String,
    pub name: String,
    /// host:port of its RocketMQ front (what clients connect to).
    pub address: String,
}

/// GET_ROUTEINFO_BY_TOPIC's body: one queue entry and one broker entry (master, id 0) per
/// broker holding the topic; every queue readable and writable.
pub fn topic_route(brokers: &[(BrokerEntry, u32)]) -> Vec<u8> {
    let queue_datas: Vec<Value> = brokers
        .iter()
        .map(|(b, queues)| {
            json!({
                "brokerName": b.name,
                "readQueueNums": queues,
                "writeQueueNums": queues,
                "perm": PERM_READ_WRITE,
                "topicSynFlag": 0,
            })
        })
        .collect();
    let broker_datas: Vec<Value> = brokers.iter().map(|(b, _)| broker_data(b)).collect();
    let body = json!({
        "queueDatas": queue_datas,
        "brokerDatas": broker_datas,
        "filterServerTable": {},
    });
    serde_json::to_vec(&body).expect("JSON values serialize")
}

fn broker_data(b: &BrokerEntry) -> Value {
    json!({ "cluster": b.cluster, "brokerName": b.name, "brokerAddrs": { "0": b.address } })
}

/// GET_BROKER_CLUSTER_INFO's body.
pub fn cluster_info(brokers: &[BrokerEntry]) -> Vec<u8> {
    let mut addr_table = serde_json::Map::new();
    let mut clusters: serde_json::Map<String, Value> = serde_json::Map::new();
    for b in brokers {
        addr_table.insert(b.name.clone(), broker_data(b));
        let names = clusters.entry(b.cluster.clone()).or_insert_with(|| json!([]));
        if let Value::Array(list) = names {
            list.push(Value::String(b.name.clone()));
        }
    }
    serde_json::to_vec(&json!({ "brokerAddrTable": addr_table, "clusterAddrTable": clusters }))
        .expect("JSON values serialize")
}

/// GET_ALL_TOPIC_LIST_FROM_NAMESERVER's body.
pub fn topic_list(topics: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "topicList": topics })).expect("JSON values serialize")
}

/// GET_CONSUMER_LIST_BY_GROUP's body.
pub fn consumer_list(client_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "consumerIdList": client_ids })).expect("JSON values serialize")
}

/// What the front needs from a HEART_BEAT body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Heartbeat {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "consumerDataSet", default)]
    pub consumers: Vec<ConsumerData>,
    #[serde(rename = "producerDataSet", default)]
    pub producers: Vec<ProducerData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProducerData {
    #[serde(rename = "groupName")]
    pub group: String,
}

/// The producer group every RocketMQ client names in its heartbeats for its own internal
/// sends; it never sends transactional messages.
pub const CLIENT_INNER_PRODUCER: &str = "CLIENT_INNER_PRODUCER";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ConsumerData {
    #[serde(rename = "groupName")]
    pub group: String,
    #[serde(rename = "messageModel", default)]
    pub message_model: Value,
    #[serde(rename = "subscriptionDataSet", default)]
    pub subscriptions: Vec<SubscriptionData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionData {
    pub topic: String,
    #[serde(rename = "subString", default)]
    pub expression: String,
}

/// Most consumer groups, producer groups and subscriptions one heartbeat may carry.
pub const MAX_HEARTBEAT_ENTRIES: usize = 1024;

/// Reads a HEART_BEAT body.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, String> {
    let h: Heartbeat = serde_json::from_slice(body)
        .map_err(|e| format!("heartbeat body is not RocketMQ HeartbeatData JSON: {e}"))?;
    let subscriptions: usize = h.consumers.iter().map(|c| c.subscriptions.len()).sum();
    if h.consumers.len() + h.producers.len() + subscriptions > MAX_HEARTBEAT_ENTRIES {
        return Err(format!("heartbeat carries more than {MAX_HEARTBEAT_ENTRIES} entries"));
    }
    Ok(h)
}

impl ConsumerData {
    /// Broadcasting consumers keep their offsets themselves and are no group members.
    pub fn is_broadcasting(&self) -> bool {
        matches!(&self.message_model, Value::String(s) if s == "BROADCASTING")
            || self.message_model == json!(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> BrokerEntry {
        BrokerEntry {
            cluster: "DefaultCluster".into(),
            name: "ringmq".into(),
            address: "127.0.0.1:10911".into(),
        }
    }

    #[test]
    fn a_route_is_what_clients_decode() {
        let body: Value = serde_json::from_slice(&topic_route(&[(broker(), 8)])).unwrap();
        assert_eq!(
            body,
            json!({
                "queueDatas": [{"brokerName": "ringmq", "readQueueNums": 8, "writeQueueNums": 8,
                                "perm": 6, "topicSynFlag": 0}],
                "brokerDatas": [{"cluster": "DefaultCluster", "brokerName": "ringmq",
                                 "brokerAddrs": {"0": "127.0.0.1:10911"}}],
                "filterServerTable": {}
            })
        );
    }

    #[test]
    fn cluster_info_and_lists() {
        let body: Value = serde_json::from_slice(&cluster_info(&[broker()])).unwrap();
        assert_eq!(body["clusterAddrTable"], json!({"DefaultCluster": ["ringmq"]}));
        assert_eq!(body["brokerAddrTable"]["ringmq"]["brokerAddrs"]["0"], "127.0.0.1:10911");
        let body: Value = serde_json::from_slice(&topic_list(&["a".into()])).unwrap();
        assert_eq!(body, json!({"topicList": ["a"]}));
        let body: Value = serde_json::from_slice(&consumer_list(&["c1".into()])).unwrap();
        assert_eq!(body, json!({"consumerIdList": ["c1"]}));
    }

    #[test]
    fn heartbeats_from_the_cpp_client_parse() {
        // As rocketmq-client-cpp's HeartbeatData::Encode writes it (numbers for enums).
        let text = r#"{"clientID":"127.0.0.1@123","consumerDataSet":[{"consumeFromWhere":1,
            "consumeType":1,"groupName":"g","messageModel":1,"subscriptionDataSet":[
            {"classFilterMode":false,"codeSet":[65,66],"subString":"A || B","subVersion":1,
             "tagsSet":["A","B"],"topic":"T"}],"unitMode":false}],
            "producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#;
        let h = parse_heartbeat(text.as_bytes()).unwrap();
        assert_eq!(h.client_id, "127.0.0.1@123");
        assert_eq!(h.consumers[0].group, "g");
        assert!(!h.consumers[0].is_broadcasting());
        assert_eq!(h.consumers[0].subscriptions[0].expression, "A || B");
        assert_eq!(h.producers[0].group, CLIENT_INNER_PRODUCER);
        let java = r#"{"clientID":"c","consumerDataSet":[{"groupName":"g",
            "messageModel":"BROADCASTING","subscriptionDataSet":[]}]}"#;
        assert!(parse_heartbeat(java.as_bytes()).unwrap().consumers[0].is_broadcasting());
        assert!(parse_heartbeat(b"{").is_err());
        assert!(parse_heartbeat(b"{\"consumerDataSet\":[]}").is_err(), "no client id");
    }
}
