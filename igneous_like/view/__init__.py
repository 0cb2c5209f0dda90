"""`view`: serve layers and a Neuroglancer client on 127.0.0.1."""
