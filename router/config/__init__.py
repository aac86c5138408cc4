"""The topology: topology.yaml read into validated dataclasses, from a file or an etcd key
(origin.py, etcd.py, etcd_origin.py), and watched for changes."""
