"""Python stubs of the kubelet pod-resources API v1 (generated from api.proto; see its header)."""
