curl -s 127.0.0.1:19990/metrics | grep -E "^ringmq_append_(batches|records|messages)_total|^ringmq_produce_requests_total|^ringmq_requests_total" | head
