"""The topology: topology.yaml read into validated dataclasses, and watched for changes."""
