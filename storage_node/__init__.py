"""The storage node: eviction cores behind a framed protobuf server. Knows no ring."""
